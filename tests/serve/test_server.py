"""The HTTP service: protocol, limits, errors (and that it keeps serving after each)."""

from __future__ import annotations

import base64
import io
import json
import logging

import httpx
import numpy as np
import pytest
import torch
from serve_helpers import running

from leakprobe.models import create_model
from leakprobe.serving.server import EncoderService, ServeConfig, create_app
from leakprobe.serving.wire import (
    QUANTISATION_ERROR,
    dequantise,
    encode_npy,
    encode_png,
    encode_uint8,
    on_grid,
    quantise,
)
from leakprobe.targets.encoder import ModuleEncoder


def make_service(**config) -> EncoderService:
    torch.manual_seed(0)
    encoder = ModuleEncoder(create_model("resnet-tiny"), device="cpu")
    return EncoderService(encoder, ServeConfig(**config))


@pytest.fixture(scope="module")
def server():
    service = make_service(max_batch=8, max_queries=200, max_body_bytes=400_000,
                           max_image_side=64)
    with running(create_app(service)) as url:
        yield url, service


def post(url, payload=None, content=None):
    return httpx.post(url + "/v1/embed", json=payload, content=content, timeout=30)


def test_info_describes_the_model(server):
    url, _ = server
    info = httpx.get(url + "/v1/info").json()
    assert info["kind"] == "encoder" and info["input_size"] == 32
    assert info["embed_dim"] == 128 and info["tokens"] is True and info["max_batch"] == 8


def test_npy_and_png_requests_embed_and_count(server):
    url, service = server
    x = torch.rand(3, 3, 32, 32)
    before = service.queries_used
    answer = post(url, {"array": encode_npy(x), "tokens": True}).json()
    assert np.asarray(answer["embeddings"]).shape == (3, 128)
    assert np.asarray(answer["tokens"]).shape == (3, 16, 128)
    assert answer["queries_used"] == before + 3
    png = post(url, {"images": [encode_png(img) for img in x]}).json()
    assert np.asarray(png["embeddings"]).shape == (3, 128)


def test_npy_round_trip_is_exact(server):
    url, service = server
    x = torch.rand(2, 3, 32, 32)
    remote = torch.tensor(post(url, {"array": encode_npy(x)}).json()["embeddings"])
    local = service.encoder.embed(x)
    assert torch.equal(remote, local)


@pytest.mark.parametrize(
    ("payload", "content", "status", "message"),
    [
        (None, b"{not json", 400, "malformed JSON"),
        ([1, 2], None, 400, "JSON object"),
        ({"images": ["aGVsbG8="]}, None, 400, "image"),
        ({"array": "!!!"}, None, 400, "base64"),
        ({"nothing": 1}, None, 400, "images"),
        ({"array": None}, None, 400, "base64"),
        ({"images": []}, None, 400, "B >= 1"),
        ("BATCH", None, 413, "max_batch"),
        ("SIDE", None, 413, "side"),
        ("NAN", None, 400, "finite"),
        ("BODY", None, 413, "exceeds"),
        ("GRAY", None, 400, "(B,3,H,W)"),
    ],
)
def test_bad_requests_get_json_errors_and_the_server_keeps_serving(server, payload, content,
                                                                   status, message):
    url, _ = server
    special = {
        "BATCH": lambda: {"array": encode_npy(torch.rand(9, 3, 8, 8))},
        "SIDE": lambda: {"array": encode_npy(torch.rand(1, 3, 65, 65))},
        "NAN": lambda: {"array": encode_npy(torch.full((1, 3, 8, 8), float("nan")))},
        "BODY": lambda: {"array": base64.b64encode(b"0" * 500_000).decode()},
        "GRAY": lambda: {"array": encode_npy(torch.rand(1, 1, 8, 8))},
    }
    if isinstance(payload, str):
        payload = special[payload]()
    resp = post(url, payload, content)
    assert resp.status_code == status, resp.text
    assert message.lower() in resp.json()["error"].lower()
    ok = post(url, {"array": encode_npy(torch.rand(1, 3, 32, 32))})
    assert ok.status_code == 200


def test_budget_exhaustion_is_403_and_final():
    service = make_service(max_queries=5)
    with running(create_app(service)) as url:
        assert post(url, {"array": encode_npy(torch.rand(4, 3, 32, 32))}).status_code == 200
        resp = post(url, {"array": encode_npy(torch.rand(2, 3, 32, 32))})
        assert resp.status_code == 403 and "budget" in resp.json()["error"]
        assert service.queries_used == 4


def test_rate_limit_answers_429_with_retry_after():
    service = make_service(rate=1.0)
    with running(create_app(service)) as url:
        codes = [post(url, {"array": encode_npy(torch.rand(1, 3, 8, 8))}) for _ in range(4)]
        limited = [r for r in codes if r.status_code == 429]
        assert limited and float(limited[0].headers["retry-after"]) > 0


def test_output_perturbation_defences():
    x = torch.rand(4, 3, 32, 32)
    clean = make_service().embed({"array": encode_npy(x)})["embeddings"]
    noisy = make_service(noise=0.5).embed({"array": encode_npy(x)})["embeddings"]
    topk = make_service(top_k=5).embed({"array": encode_npy(x)})["embeddings"]
    rounded = make_service(round_decimals=1).embed({"array": encode_npy(x)})["embeddings"]
    assert not np.allclose(clean, noisy)
    assert (np.count_nonzero(np.asarray(topk), axis=1) <= 5).all()
    assert np.allclose(np.asarray(rounded), np.round(np.asarray(rounded), 1))


def test_concurrent_clients_are_all_served(server):
    url, _ = server
    from concurrent.futures import ThreadPoolExecutor

    x = encode_npy(torch.rand(2, 3, 32, 32))
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: post(url, {"array": x}).status_code, range(16)))
    assert set(codes) <= {200, 403}


# -- limits announced, compact uint8 arrays, 413s naming their option, the request log -------


def test_info_announces_the_limits_clients_size_requests_by(server):
    url, _ = server
    info = httpx.get(url + "/v1/info").json()
    assert info["max_body_bytes"] == 400_000 and info["max_image_side"] == 64
    assert set(info["encodings"]) == {"npy-uint8", "npy-float32", "png"}
    assert make_service().info()["max_body_bytes"] == 64 * 2**20  # the default


def test_uint8_arrays_embed_exactly_like_their_floats(server):
    url, service = server
    levels = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    x = dequantise(levels)
    compact = {"array": encode_uint8(x)}
    assert len(compact["array"]) * 4 < len(encode_npy(x)) + 1000  # a quarter of float32
    remote = torch.tensor(post(url, compact).json()["embeddings"])
    assert torch.equal(remote, service.encoder.embed(x))
    # off the grid, uint8 moves each pixel by at most 1/510
    y = torch.rand(2, 3, 8, 8)
    assert (dequantise(quantise(y)) - y).abs().max() <= QUANTISATION_ERROR + 1e-7
    assert on_grid(x) and not on_grid(y)


def npy_header_only(shape, dtype=np.uint8) -> str:
    """A .npy header announcing ``shape`` with almost no data behind it."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).str,
                                               "fortran_order": False, "shape": shape})
    return base64.b64encode(buf.getvalue() + b"\0" * 16).decode()


@pytest.mark.parametrize(("payload", "option"), [
    ({"array": npy_header_only((9, 3, 8, 8))}, "--max-batch"),
    ({"array": npy_header_only((1, 3, 65, 65))}, "--max-image-side"),
    ({"images": [encode_png(torch.rand(3, 65, 65))]}, "--max-image-side"),
    ({"array": base64.b64encode(b"0" * 500_000).decode()}, "--max-body-mb"),
])
def test_a_413_names_the_option_and_comes_before_any_decoding_or_model(server, payload,
                                                                       option):
    url, service = server
    before = service.queries_used
    resp = post(url, payload)
    assert resp.status_code == 413, resp.text
    assert option in resp.json()["error"]
    assert service.queries_used == before


def test_a_body_over_the_limit_is_refused_unread_and_names_max_body_mb(server):
    url, service = server
    before = service.queries_used
    resp = post(url, content=b"x" * 400_001)  # not even JSON: the size is refused first
    assert resp.status_code == 413
    message = resp.json()["error"]
    assert "400001 bytes exceeds 400000" in message and "--max-body-mb" in message
    assert service.queries_used == before


def test_a_header_announcing_more_data_than_sent_is_a_400(server):
    url, _ = server
    resp = post(url, {"array": npy_header_only((1, 3, 8, 8))})
    assert resp.status_code == 400 and "header announces" in resp.json()["error"]


def test_one_json_log_line_per_request_and_never_a_key(server, caplog):
    url, service = server
    caplog.set_level(logging.INFO, logger="leakprobe.serve")
    secret = "sk-do-not-log-0123456789"
    headers = {"Authorization": f"Bearer {secret}", "X-API-Key": secret}
    httpx.get(url + "/v1/info", headers=headers)
    ok = httpx.post(url + "/v1/embed", headers=headers, timeout=30,
                    json={"array": encode_uint8(torch.rand(2, 3, 32, 32))})
    refused = httpx.post(url + "/v1/embed", headers=headers, timeout=30,
                         json={"array": encode_npy(torch.rand(9, 3, 8, 8))})
    assert ok.status_code == 200 and refused.status_code == 413
    records = [r for r in caplog.records if r.name == "leakprobe.serve"]
    assert len(records) == 3
    assert all(secret not in r.getMessage() for r in caplog.records)
    lines = [json.loads(r.getMessage()) for r in records]
    assert [(e["method"], e["path"], e["status"]) for e in lines] == [
        ("GET", "/v1/info", 200), ("POST", "/v1/embed", 200), ("POST", "/v1/embed", 413)]
    assert lines[1]["client"] == "127.0.0.1" and lines[1]["images"] == 2
    assert lines[1]["body_bytes"] == int(ok.request.headers["content-length"])
    assert lines[1]["ms"] >= 0 and lines[1]["queries_used"] == service.queries_used
    assert lines[2]["images"] is None and "--max-batch" in lines[2]["error"]
