"""The HTTP target: retries, budgets, answer checks, and numbers identical to a local file."""

from __future__ import annotations

import asyncio
import json

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
from leakprobe.targets.encoder import ModuleEncoder
from leakprobe.workflows.audit import audit_encoder


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
