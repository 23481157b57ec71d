"""`leakprobe serve image-text`: /v1/embed_images and /v1/embed_texts equal the local model,
text limits and key budgets refuse before the model runs, and the help lists the forms."""

from __future__ import annotations

import re

import httpx
import pytest
import torch
from serve_helpers import running
from torch import nn

from cli_runner import run_cli
from leakprobe.cli.options import model_forms
from leakprobe.errors import BudgetExceededError, LeakprobeError
from leakprobe.serving.client import HTTPImageText
from leakprobe.serving.keys import Clients
from leakprobe.serving.server import ImageTextService, ServeConfig, create_app
from leakprobe.serving.wire import encode_uint8
from leakprobe.targets.families import load_target
from leakprobe.targets.image_text import ImageTextModel, ModuleImageText

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ALICE = "alice-key-0123456789abcdef"


class Toy(nn.Module):
    """Both towers at any scale; counts the images and texts it embedded."""

    input_size = 16

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.image = nn.Linear(3 * 16 * 16, 8)
        self.text = nn.EmbeddingBag(128, 8)
        self.seen = 0

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        self.seen += images.shape[0]
        return 4 * self.image(images.flatten(1))

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        self.seen += len(texts)
        ids = [torch.tensor([min(ord(c), 127) for c in t] or [0]) for t in texts]
        return self.text(torch.cat(ids), torch.tensor([0, *map(len, ids)][:-1]).cumsum(0))


def local(**kw) -> ModuleImageText:
    return ModuleImageText(Toy(), batch_size=64, **kw)


TEXTS = [f"a photo of {n} red circles" for n in range(7)] + ["", "ünïcödé — text"]


def test_http_embeddings_equal_local_embeddings():
    target = local()
    service = ImageTextService(target, ServeConfig(max_batch=4, max_texts=3,
                                                   max_text_chars=200))
    x = torch.rand(10, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with running(create_app(service)) as url:
        info = httpx.get(url + "/v1/info").json()
        assert info["kind"] == "image-text" and info["embed_dim"] == 8
        assert (info["max_texts"], info["max_text_chars"], info["input_size"]) == (3, 200, 16)
        client = load_target(url, family="image-text", budget=100)
        assert isinstance(client, HTTPImageText) and isinstance(client, ImageTextModel)
        assert client.input_size == 16
        images = client.embed_images(x)
        texts = client.embed_texts(TEXTS)
        assert client.requests == 3 + 3  # 10 images by 4, 9 texts by 3
        assert client.queries == 19 and client.server_queries_used == 19
        answer = httpx.post(url + "/v1/embed_texts", json={"texts": TEXTS[:2]}).json()
    assert torch.equal(images, target.embed_images(x))
    assert torch.equal(texts, target.embed_texts(TEXTS))
    assert torch.allclose(torch.tensor(answer["embeddings"]), texts[:2], atol=1e-7)
    assert service.queries_used == 21


def test_text_limits_and_bad_requests_never_run_the_model():
    target = local()
    service = ImageTextService(target, ServeConfig(max_texts=2, max_text_chars=10))
    before = target.model.seen
    with running(create_app(service)) as url:
        for payload, status, message in (
                ({"texts": ["a", "b", "c"]}, 413, "--max-texts"),
                ({"texts": ["abcdef", "ghijkl"]}, 413, "--max-text-chars"),
                ({"texts": "abc"}, 400, "a list of strings"),
                ({"texts": ["a", 3]}, 400, "strings only, got int"),
                ({"texts": []}, 400, "at least one string")):
            resp = httpx.post(url + "/v1/embed_texts", json=payload)
            assert resp.status_code == status and message in resp.json()["error"], payload
        assert target.model.seen == before and service.queries_used == 0
        client = HTTPImageText(url)
        with pytest.raises(LeakprobeError, match="over the server's max_text_chars 10"):
            client.embed_texts(["x" * 11])
        assert client.embed_texts(["abc", "de", "fghij", "k"]).shape == (4, 8)
        assert client.requests == 2  # split by count and by characters
    assert target.model.seen == before + 4


def test_keys_401_and_429_before_the_model_runs(tmp_path, monkeypatch):
    keys = tmp_path / "keys.txt"
    keys.write_text(f"alice:{ALICE}:5\n")
    target = local()
    service = ImageTextService(target, ServeConfig(), clients=Clients.from_files(api_keys=keys))
    before = target.model.seen
    with running(create_app(service)) as url:
        assert httpx.post(url + "/v1/embed_texts", json={"texts": ["a"]}).status_code == 401
        monkeypatch.delenv("LEAKPROBE_API_KEY", raising=False)
        with pytest.raises(LeakprobeError, match="needs an API key: set LEAKPROBE_API_KEY"):
            HTTPImageText(url)
        monkeypatch.setenv("LEAKPROBE_API_KEY", ALICE)
        client = HTTPImageText(url)
        client.embed_texts(["a", "b", "c"])  # 3 of 5
        with pytest.raises(BudgetExceededError, match="allows 2 more queries"):
            client.embed_texts(["d", "e", "f"])
        headers = {"Authorization": f"Bearer {ALICE}"}
        x = torch.rand(3, 3, 16, 16)
        resp = httpx.post(url + "/v1/embed_images", json={"array": encode_uint8(x)},
                          headers=headers)
        assert resp.status_code == 429 and resp.json()["remaining"] == 2
        usage = httpx.get(url + "/v1/usage", headers=headers).json()
        assert usage["queries"] == 3
    assert target.model.seen == before + 3  # the refused requests never ran it


def test_serve_image_text_help_lists_the_model_forms(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    code, out, err = run_cli("serve", "image-text", "--help")
    assert code == 0, err
    text = re.sub(r"\s+", " ", re.sub(r"\x1b\[[0-9;]*m|[│╭╮╰╯─]", " ", out))
    for form in model_forms("image-text", url=False):
        assert form.example in text, form.example
    assert "--max-texts" in text and "--max-text-chars" in text and "--api-keys" in text
    assert "http://127.0.0.1:8080 " not in text  # serve needs a local model


def test_a_whole_audit_over_http_equals_the_local_audit():
    """Every attack of the family (views, perturbed captions, ranks, the blind floor) gives
    the same AUCs and p-values through `serve image-text` as on the local model, and the
    queries counted on both sides agree."""
    from leakprobe.data.captions import make_synthetic_captioned
    from leakprobe.data.splits import make_split
    from leakprobe.workflows.image_text_audit import audit_image_text

    split = make_split(make_synthetic_captioned(48, 16, seed=0), 24, seed=0)
    options = dict(attacks="all", permutations=19, seed=0, n_views=2)
    on_local = local()
    local_report = audit_image_text(on_local, split.members, split.nonmembers, **options)
    service = ImageTextService(local(), ServeConfig(max_batch=16, max_texts=40))
    with running(create_app(service)) as url:
        client = load_target(url, family="image-text")
        http_report = audit_image_text(client, split.members, split.nonmembers, **options)
    rows = {r["attack"]: r["metrics"] for r in local_report["results"]}
    over_http = {r["attack"]: r["metrics"] for r in http_report["results"]}
    assert list(rows) == list(over_http) == [
        "clip-cosine", "clip-rank", "clip-augment", "clip-augment-mean", "blind"]
    for name, metrics in rows.items():
        assert over_http[name]["auc"] == pytest.approx(metrics["auc"], abs=1e-9), name
        assert over_http[name]["p_value"] == pytest.approx(metrics["p_value"], abs=1e-9), name
    assert http_report["summary"] == local_report["summary"]
    assert client.queries == on_local.queries == service.queries_used
    assert local_report["context"]["total_queries"] == on_local.queries
