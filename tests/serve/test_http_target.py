"""The HTTP target: retries, budgets, answer checks, and numbers identical to a local file."""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np
import pytest
import torch
from serve_helpers import running
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from leakprobe.data.synthetic import make_synthetic
from leakprobe.errors import BudgetExceededError, LeakprobeError
from leakprobe.models import create_model
from leakprobe.serving.client import HTTPEncoder
from leakprobe.serving.server import EncoderService, ServeConfig, create_app
from leakprobe.serving.wire import decode_npy, dequantise, quantise
from leakprobe.targets.encoder import ModuleEncoder
from leakprobe.workflows.audit import audit_encoder

# shares the session fixture of these files: built once, on one xdist worker
pytestmark = pytest.mark.xdist_group("digits-target")


def fake_app(embed_handler, dim: int = 4) -> Starlette:
    async def info(request):
        return JSONResponse({"kind": "encoder", "input_size": 8, "embed_dim": dim,
                             "tokens": False, "max_batch": 16})

    return Starlette(routes=[Route("/v1/info", info), Route("/v1/embed", embed_handler,
                                                            methods=["POST"])])


def test_connection_refused_is_a_clear_error():
    with pytest.raises(LeakprobeError, match="failed after 2 attempts"):
        HTTPEncoder("http://127.0.0.1:9", retries=1, backoff=0.01)


def test_transient_failures_are_retried():
    calls = {"n": 0}

    async def flaky(request):
        calls["n"] += 1
        if calls["n"] < 3:
            status = 503 if calls["n"] == 1 else 429
            return JSONResponse({"error": "busy"}, status_code=status,
                                headers={"Retry-After": "0.01"})
        body = await request.json()
        n = 2 if "array" in body else 0
        return JSONResponse({"embeddings": [[1.0, 2.0, 3.0, 4.0]] * n, "queries_used": n})

    with running(fake_app(flaky)) as url:
        enc = HTTPEncoder(url, retries=3, backoff=0.01)
        assert enc.embed(torch.rand(2, 3, 8, 8)).shape == (2, 4)
        assert calls["n"] == 3 and enc.queries == 2


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"embeddings": [[1.0, 2.0]] * 2}, "declared 4"),
        ({"embeddings": [[float("nan")] * 4] * 2}, "NaN"),
        ({"embeddings": [[1.0] * 4]}, "expected 2"),
        ({"embeddings": "oops"}, "not numbers"),
    ],
)
def test_bad_answers_are_refused(answer, message):
    async def handler(request):
        # json.dumps writes NaN as a bare token, as a careless server would
        return Response(json.dumps(answer), media_type="application/json")

    with running(fake_app(handler)) as url:
        enc = HTTPEncoder(url, retries=0)
        with pytest.raises(LeakprobeError, match=message):
            enc.embed(torch.rand(2, 3, 8, 8))


def test_timeouts_end_in_a_clear_error():
    async def slow(request):
        await asyncio.sleep(2)
        return JSONResponse({})

    with running(fake_app(slow)) as url:
        enc = HTTPEncoder(url, retries=1, backoff=0.01, timeout=0.2)
        with pytest.raises(LeakprobeError, match="failed after 2 attempts"):
            enc.embed(torch.rand(1, 3, 8, 8))


def test_server_budget_stops_the_client():
    torch.manual_seed(0)
    service = EncoderService(ModuleEncoder(create_model("resnet-tiny"), device="cpu"),
                             ServeConfig(max_queries=10))
    with running(create_app(service)) as url:
        enc = HTTPEncoder(url, batch_size=4)
        enc.embed(torch.rand(8, 3, 32, 32))
        with pytest.raises(BudgetExceededError):
            enc.embed(torch.rand(8, 3, 32, 32))


def test_audit_through_the_server_equals_the_local_audit():
    torch.manual_seed(0)
    model = create_model("resnet-tiny")
    data = make_synthetic(60, 32, seed=3)
    members, nonmembers = data.subset(range(30)), data.subset(range(30, 60))
    attacks = "partcrop,encodermi-threshold,lpla-p2"
    local = audit_encoder(ModuleEncoder(model, device="cpu"), members, nonmembers,
                          attacks=attacks, num_parts=8)
    service = EncoderService(ModuleEncoder(model, device="cpu"))
    with running(create_app(service)) as url:
        remote_target = HTTPEncoder(url)
        remote = audit_encoder(remote_target, members, nonmembers, attacks=attacks,
                               num_parts=8)
    for a, b in zip(local["results"], remote["results"], strict=True):
        assert a["attack"] == b["attack"]
        assert a["samples"]["score"] == b["samples"]["score"]
        assert a["metrics"] == b["metrics"]
        assert a["queries"] == b["queries"]
    assert service.queries_used == remote_target.queries


def test_steal_through_the_server_equals_the_local_steal(digits_target):
    from leakprobe.workflows.steal import steal_encoder

    t = digits_target
    kwargs = {"budgets": [120], "methods": "contsteal,mse", "epochs": 2, "seed": 0,
              "device": "cpu", "probe_train": t["probe_train"],
              "probe_test": t["probe_test"].subset(range(100))}
    query = t["query"].subset(range(150))
    local = steal_encoder(ModuleEncoder(t["model"], device="cpu"), query, **kwargs)
    service = EncoderService(ModuleEncoder(t["model"], device="cpu"))
    with running(create_app(service)) as url:
        remote = steal_encoder(HTTPEncoder(url), query, **kwargs)
    assert local["target_probe_accuracy"] == remote["target_probe_accuracy"]
    for a, b in zip(local["results"], remote["results"], strict=True):
        assert (a["method"], a["queries_used"]) == (b["method"], b["queries_used"])
        assert a["metrics"] == b["metrics"]


# -- requests sized by the server's announced limits, and the compact wire format ------------


def _served(max_body_bytes: int, **config):
    torch.manual_seed(0)
    local = ModuleEncoder(create_model("resnet-tiny"), device="cpu")
    return local, EncoderService(local, ServeConfig(max_body_bytes=max_body_bytes, **config))


def _post_lines(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records
            if r.name == "leakprobe.serve" and '"POST"' in r.getMessage()]


@pytest.mark.parametrize(("grid", "per_image"), [(True, 64 * 64 * 3), (False, 64 * 64 * 12)])
def test_the_client_splits_batches_by_the_announced_body_limit(caplog, grid, per_image):
    """Whatever batch_size asks, every request stays under max_body_bytes; images on the
    8-bit grid travel as uint8 (a quarter of float32's bytes), the others as float32; the
    embeddings equal the local ones exactly either way."""
    caplog.set_level(logging.INFO, logger="leakprobe.serve")
    limit = 150_000
    local, service = _served(limit)
    x = torch.rand(20, 3, 64, 64)
    if grid:
        x = dequantise(quantise(x))
    with running(create_app(service)) as url:
        enc = HTTPEncoder(url, batch_size=256)
        assert enc.max_body_bytes == limit
        remote = enc.embed(x)
    assert torch.equal(remote, local.embed(x))
    lines = _post_lines(caplog)
    assert len(lines) == enc.requests >= 20 * per_image * 4 / 3 / limit
    assert all(e["status"] == 200 and e["body_bytes"] <= limit for e in lines)
    assert sum(e["images"] for e in lines) == 20 == enc.queries == service.queries_used
    assert max(e["images"] for e in lines) == enc.images_per_request(
        (20, 3, 64, 64), "npy-uint8" if grid else "npy-float32")


def test_max_batch_caps_requests_and_uint8_encoding_quantises():
    local, service = _served(64 * 2**20, max_batch=4)
    x = torch.rand(10, 3, 32, 32)
    with running(create_app(service)) as url:
        enc = HTTPEncoder(url, batch_size=64, encoding="uint8")
        remote = enc.embed(x)
    assert enc.requests == 3  # 4 + 4 + 2
    assert torch.equal(remote, local.embed(dequantise(quantise(x))))


def test_an_image_too_large_for_the_limit_is_a_clear_error_before_any_query():
    _, service = _served(20_000)
    with running(create_app(service)) as url:
        enc = HTTPEncoder(url)
        with pytest.raises(LeakprobeError, match="--max-body-mb"):
            enc.embed(torch.rand(1, 3, 128, 128))
    assert enc.queries == 0 and service.queries_used == 0


def test_a_server_without_announced_limits_gets_float32_under_64_mib():
    """An older server: no encodings, no max_body_bytes in /v1/info."""
    seen = []

    async def embed(request):
        body = await request.json()
        arr = decode_npy(body["array"])
        seen.append(arr.dtype)
        return JSONResponse({"embeddings": [[1.0, 2.0, 3.0, 4.0]] * len(arr),
                             "queries_used": len(arr)})

    with running(fake_app(embed)) as url:
        enc = HTTPEncoder(url)
        assert enc.max_body_bytes == 64 * 2**20
        enc.embed(dequantise(quantise(torch.rand(3, 3, 8, 8))))
    assert seen == [np.float32]


def test_a_stricter_413_than_announced_halves_the_requests():
    """A proxy in front may refuse less than the server announced: the client halves."""
    sizes = []

    async def embed(request):
        body = await request.body()
        if len(body) > 30_000:
            return JSONResponse({"error": "body too large"}, status_code=413)
        n = len(decode_npy(json.loads(body)["array"]))
        sizes.append(n)
        return JSONResponse({"embeddings": [[1.0, 2.0, 3.0, 4.0]] * n, "queries_used": n})

    with running(fake_app(embed)) as url:
        enc = HTTPEncoder(url, batch_size=8)
        assert enc.embed(torch.rand(8, 3, 32, 32)).shape == (8, 4)
    assert sizes == [1] * 8 and enc.batch_size == 1 and enc.queries == 8
