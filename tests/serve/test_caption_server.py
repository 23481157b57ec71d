"""`/v1/caption`: protocol, limits and errors; the HTTP captioner equals the local one."""

from __future__ import annotations

import httpx
import pytest
import torch
from serve_helpers import running
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from leakprobe.data.captions import Tokenizer, make_synthetic_captioned
from leakprobe.errors import BudgetExceededError, LeakprobeError
from leakprobe.models import captioner as _captioner  # noqa: F401  (registers cnn-lstm)
from leakprobe.models import create_model
from leakprobe.serving.client import HTTPCaptioner
from leakprobe.serving.server import CaptionerService, ServeConfig, create_app
from leakprobe.serving.wire import encode_npy, encode_png
from leakprobe.targets.captioner import ModuleCaptioner, load_captioner
from leakprobe.workflows.audit import audit_captioner

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def local():
    """An untrained (seeded) CNN-LSTM and its tokenizer: captions are arbitrary but fixed."""
    data = make_synthetic_captioned(20, 32, seed=1)
    tok = Tokenizer.fit([c for cs in data.extras["captions"] for c in cs])
    torch.manual_seed(0)
    model = create_model("cnn-lstm", vocab_size=len(tok), embed_dim=32, hidden=64, width=8)
    return ModuleCaptioner(model, tok, device="cpu")


def post(url, payload):
    return httpx.post(url + "/v1/caption", json=payload, timeout=30)


def test_info_and_captions_over_npy_and_png(local):
    service = CaptionerService(local, ServeConfig(max_batch=8))
    x = torch.rand(3, 3, 32, 32)
    with running(create_app(service)) as url:
        info = httpx.get(url + "/v1/info").json()
        assert info["kind"] == "captioner" and info["input_size"] == 32
        assert info["max_batch"] == 8
        answer = post(url, {"array": encode_npy(x)}).json()
        assert answer["captions"] == local.caption(x) and answer["queries_used"] == 3
        png = post(url, {"images": [encode_png(img) for img in x]}).json()
        assert len(png["captions"]) == 3 and all(isinstance(c, str) for c in png["captions"])
        assert service.queries_used == 6


@pytest.mark.parametrize(("payload", "status", "message"), [
    ({"nothing": 1}, 400, "images"),
    ({"array": "!!!"}, 400, "base64"),
    ("BATCH", 413, "max_batch"),
    ("RANGE", 400, "[0, 1]"),
])
def test_bad_requests_get_json_errors_and_the_service_keeps_serving(local, payload, status,
                                                                    message):
    special = {"BATCH": {"array": encode_npy(torch.rand(9, 3, 8, 8))},
               "RANGE": {"array": encode_npy(torch.full((1, 3, 8, 8), 2.0))}}
    with running(create_app(CaptionerService(local, ServeConfig(max_batch=8)))) as url:
        resp = post(url, special.get(payload, payload) if isinstance(payload, str) else payload)
        assert resp.status_code == status and message in resp.json()["error"]
        assert post(url, {"array": encode_npy(torch.rand(1, 3, 32, 32))}).status_code == 200


def test_budget_is_enforced_by_the_service_and_the_client(local):
    service = CaptionerService(local, ServeConfig(max_queries=5))
    with running(create_app(service)) as url:
        client = HTTPCaptioner(url)
        assert len(client.caption(torch.rand(4, 3, 32, 32))) == 4
        with pytest.raises(BudgetExceededError, match="budget"):
            client.caption(torch.rand(2, 3, 32, 32))
        capped = load_captioner(url, budget=1)
        with pytest.raises(BudgetExceededError):
            capped.caption(torch.rand(2, 3, 32, 32))


@pytest.mark.parametrize(("answer", "message"), [
    ({"captions": ["one"]}, "expected 2 captions"),
    ({"captions": [1, 2]}, "expected 2 captions"),
    ({"nothing": True}, "expected 2 captions"),
])
def test_bad_answers_are_refused(answer, message):
    async def info(request):
        return JSONResponse({"kind": "captioner", "input_size": 8, "max_batch": 4})

    async def caption(request):
        return JSONResponse(answer)

    app = Starlette(routes=[Route("/v1/info", info),
                            Route("/v1/caption", caption, methods=["POST"])])
    with running(app) as url, pytest.raises(LeakprobeError, match=message):
        HTTPCaptioner(url).caption(torch.rand(2, 3, 8, 8))


def test_an_encoder_url_is_not_a_captioner():
    async def info(request):
        return JSONResponse({"kind": "encoder", "input_size": 8})

    app = Starlette(routes=[Route("/v1/info", info)])
    with running(app) as url, pytest.raises(LeakprobeError, match="not a captioner"):
        load_captioner(url)


def test_audit_through_the_server_equals_the_local_audit(local):
    data = make_synthetic_captioned(100, 32, seed=3)
    members, nonmembers, shadow = data.subset(range(20)), data.subset(range(20, 40)), \
        data.subset(range(40, 100))
    kwargs = {"seed": 0, "shadow_epochs": 2, "extractor_epochs": 1, "device": "cpu"}
    expected = audit_captioner(local, members, nonmembers, shadow_data=shadow, **kwargs)
    service = CaptionerService(local)
    with running(create_app(service)) as url:
        remote_target = load_captioner(url)
        remote = audit_captioner(remote_target, members, nonmembers, shadow_data=shadow,
                                 **kwargs)
    for a, b in zip(expected["results"], remote["results"], strict=True):
        assert a["attack"] == b["attack"]
        assert a["samples"]["score"] == b["samples"]["score"]
        assert a["metrics"] == b["metrics"]
        assert a["queries"] == b["queries"]
    assert service.queries_used == remote_target.queries == 2 * 40
