"""DefendedEncoder: a local target whose answers go through an answer defence."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from leakprobe.defences.answers import AnswerDefence, parse_answer_defence
from leakprobe.errors import BudgetExceededError, LeakprobeError
from leakprobe.serving.client import HTTPEncoder
from leakprobe.targets.defended import (
    HTTP_TARGET_REFUSAL,
    DefendedEncoder,
    check_defendable,
    refuse_remote_defence,
)
from leakprobe.targets.encoder import Encoder, ModuleEncoder, embed_images

NOISE = parse_answer_defence("noise:0.05")


class Tiny(nn.Module):
    """A 12-dim encoder with tokens (its feature map)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 3, padding=1)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))

    def tokens(self, x):
        return self.conv(x).flatten(2).transpose(1, 2)


def local(budget: int | None = None) -> ModuleEncoder:
    torch.manual_seed(0)
    return ModuleEncoder(Tiny(), input_size=16, device="cpu", budget=budget, name="tiny",
                         batch_size=4)


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


class Stub:
    """Any encoder-shaped object, with attributes a wrapper must pass through."""

    input_size = 24
    embed_dim = 3
    name = "stub"
    queries = 11
    max_queries = 99
    device = torch.device("cpu")
    custom = "kept"

    def embed(self, x):
        return torch.ones(x.shape[0], 3)

    def tokens(self, x):
        return torch.ones(x.shape[0], 2, 3)


def test_attributes_are_forwarded_and_the_name_shows_the_defence():
    d = DefendedEncoder(Stub(), defence=NOISE, seed=1)
    assert (d.input_size, d.embed_dim, d.queries, d.max_queries) == (24, 3, 11, 99)
    assert d.device == torch.device("cpu") and d.custom == "kept"
    assert d.name == "stub [defence: noise:0.05]"
    with pytest.raises(AttributeError):
        _ = d.not_an_attribute
    t = local()
    dt = DefendedEncoder(t, defence=parse_answer_defence("noise:0.05+round:2"))
    assert dt.name == "tiny [defence: noise:0.05+round:2]"
    assert (dt.embed_dim, dt.batch_size, dt.input_size) == (12, 4, 16)
    assert dt.tokens_in_embedding_space is None
    assert isinstance(dt, Encoder)


def test_a_target_without_a_name_is_named_by_its_type():
    class Anonymous:
        input_size = 8
        queries = 0

        def embed(self, x):
            return torch.zeros(x.shape[0], 2)

    d = DefendedEncoder(Anonymous(), defence=AnswerDefence())
    assert d.name == "Anonymous [defence: none]"


def test_embed_is_the_wrapped_answer_through_the_defence():
    t = local()
    x = images(6)
    clean = t.embed(x)
    d = DefendedEncoder(local(), defence=NOISE, seed=3)
    out = d.embed(x)
    g = torch.Generator().manual_seed(3)
    assert torch.equal(out, NOISE.apply(clean, generator=g))
    assert not torch.equal(out, clean)
    assert (out - clean).abs().max() < 0.5
    assert torch.equal(d.embed(x), NOISE.apply(clean, generator=g))  # the stream advances


def test_same_seed_same_answers_other_seed_other_answers():
    x = images(5, seed=1)
    defence = parse_answer_defence("noise:0.1+topk:4")
    a = DefendedEncoder(local(), defence=defence, seed=9).embed(x)
    b = DefendedEncoder(local(), defence=defence, seed=9).embed(x)
    c = DefendedEncoder(local(), defence=defence, seed=10).embed(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert ((a != 0).sum(dim=1) == 4).all()


def test_identity_answers_what_the_target_answers():
    x = images(4, seed=2)
    assert torch.equal(DefendedEncoder(local(), defence=AnswerDefence()).embed(x),
                       local().embed(x))


def test_queries_are_counted_once_per_image_by_the_wrapped_target():
    t = local(budget=10)
    d = DefendedEncoder(t, defence=NOISE)
    d.embed(images(3))
    assert d.queries == t.queries == 3
    embed_images(d, images(6))  # batched by the wrapped target's batch_size (4)
    assert d.queries == t.queries == 9
    with pytest.raises(BudgetExceededError):
        d.embed(images(2))
    assert t.queries == 9


def test_http_targets_are_refused_with_one_line():
    stub = object.__new__(HTTPEncoder)  # no network: the class is what is refused
    with pytest.raises(LeakprobeError) as info:
        DefendedEncoder(stub, defence=NOISE)
    assert str(info.value) == HTTP_TARGET_REFUSAL
    assert str(info.value) == (
        "the target is served over HTTP: its server applies its own defences (leakprobe "
        "serve encoder --defence/--noise/--top-k/--round-decimals); --target-defence applies "
        "to local targets only")

    class LooksServed(Stub):
        url = "http://127.0.0.1:8080"

    with pytest.raises(LeakprobeError, match="served over HTTP"):
        DefendedEncoder(LooksServed(), defence=AnswerDefence())


def test_check_defendable_and_refuse_remote_defence():
    check_defendable(local())
    check_defendable(Stub())
    with pytest.raises(LeakprobeError) as info:
        check_defendable(object.__new__(HTTPEncoder))
    assert str(info.value) == HTTP_TARGET_REFUSAL
    refuse_remote_defence("model.safetensors")
    refuse_remote_defence("hf:facebook/dino-vits16")
    for url in ("http://127.0.0.1:8080", "HTTPS://example.org/enc"):
        with pytest.raises(LeakprobeError) as info:
            refuse_remote_defence(url)
        assert str(info.value) == HTTP_TARGET_REFUSAL


def test_input_size_set_on_the_wrapper_reaches_the_target():
    stub = Stub()
    d = DefendedEncoder(stub, defence=NOISE)
    d.input_size = 32
    assert stub.input_size == 32 and d.input_size == 32


def test_tokens_are_refused_unless_the_defence_is_the_identity():
    x = images(2)
    d = DefendedEncoder(local(), defence=NOISE)
    assert d.has_tokens is False
    with pytest.raises(LeakprobeError, match=r"^tokens of a defended target are not "
                                             r"supported \(answer defence noise:0\.05"):
        d.tokens(x)
    plain = DefendedEncoder(local(), defence=AnswerDefence())
    assert plain.has_tokens is True
    assert torch.equal(plain.tokens(x), local().tokens(x))


def test_the_constructor_is_keyword_only():
    with pytest.raises(TypeError):
        DefendedEncoder(Stub(), NOISE)  # type: ignore[misc]


# -- B4B locally: one client, coverage in query order, resumable ------------------------------

B4B_LOUD = parse_answer_defence("b4b:lambda=0.01,beta=0.2")  # sigma large after a few buckets


def test_b4b_is_one_client_whose_coverage_grows_with_every_answer():
    d = DefendedEncoder(local(), defence=parse_answer_defence("b4b"), seed=0)
    assert d.client is None and d.name == "tiny [defence: b4b]" and not d.has_tokens
    d.embed(images(8))
    first = d.client.coverage
    d.embed(images(8, seed=1))
    assert 0 < first < d.client.coverage and d.client.tracker.answered == 16
    assert d.answered == 16 and d.queries == 16


def test_one_embed_call_is_answered_as_requests_of_request_size():
    x = images(10, seed=3)
    whole = DefendedEncoder(local(), defence=B4B_LOUD, seed=2, request_size=4).embed(x)
    parts = DefendedEncoder(local(), defence=B4B_LOUD, seed=2, request_size=4)
    pieces = torch.cat([parts.embed(x[:4]), parts.embed(x[4:8]), parts.embed(x[8:])])
    assert torch.equal(whole, pieces)
    one_request = DefendedEncoder(local(), defence=B4B_LOUD, seed=2, request_size=10).embed(x)
    assert torch.equal(one_request, local().embed(x))  # coverage 0 before it: no noise
    assert not torch.allclose(whole, one_request, atol=1e-3)
    with pytest.raises(LeakprobeError, match="request_size must be >= 1"):
        DefendedEncoder(local(), defence=B4B_LOUD, request_size=0)


def test_a_served_b4b_encoder_answers_what_the_local_wrapper_answers():
    from leakprobe.serving.server import EncoderService, ServeConfig
    from leakprobe.serving.wire import encode_npy

    service = EncoderService(local(), ServeConfig(defence=B4B_LOUD.spec, seed=4))
    wrapper = DefendedEncoder(local(), defence=B4B_LOUD, seed=4)
    for n, seed in ((5, 0), (3, 1), (6, 2)):  # one request each
        x = images(n, seed=seed)
        served = torch.tensor(service.embed({"array": encode_npy(x)})["embeddings"])
        assert torch.equal(served, wrapper.embed(x))
    assert service.clients.anonymous.b4b.coverage == wrapper.client.coverage > 0


def test_the_answer_state_continues_exactly_where_it_stopped():
    import json

    defence = parse_answer_defence("b4b:lambda=0.01,beta=0.2,transform=affine+noise:0.01")
    xs = [images(6, seed=s) for s in range(3)]
    straight = DefendedEncoder(local(), defence=defence, seed=5)
    expected = [straight.embed(x) for x in xs]
    before = DefendedEncoder(local(), defence=defence, seed=5)
    before.embed(xs[0])
    before.embed(xs[1])
    state = json.loads(json.dumps(before.answer_state()))
    after = DefendedEncoder(local(), defence=defence, seed=5)
    after.load_answer_state(state)
    assert torch.equal(after.embed(xs[2]), expected[2])
    assert after.client.coverage == straight.client.coverage and after.answered == 18
    fresh = DefendedEncoder(local(), defence=defence, seed=5)
    fresh.embed(xs[0])
    assert not torch.equal(fresh.embed(xs[2]), expected[2])  # the state matters
    other = DefendedEncoder(local(), defence=defence, seed=6)
    with pytest.raises(LeakprobeError, match="seed 5.*this run uses .* seed 6"):
        other.load_answer_state(state)


@pytest.mark.parametrize("spec", ["b4b:lambda=0.01,beta=0.2", "noise:0.05"])
def test_a_resumed_query_stream_gets_the_answers_of_an_uninterrupted_one(tmp_path, spec):
    from leakprobe.workflows.steal import plan_query_streams, resolve_methods

    defence = parse_answer_defence(spec)
    methods = resolve_methods("mse")
    query = images(40, seed=7)

    def stream(out, n_images):
        [(_, attacked, _, caches)] = plan_query_streams(methods, [defence], local(), query,
                                                        0, out)
        cache = next(iter(caches.values()))
        cache.fill(attacked, n_images, chunk=8)
        return cache

    whole = stream(tmp_path / "a", 40)
    stream(tmp_path / "b", 16)  # interrupted after two chunks
    resumed = stream(tmp_path / "b", 40)
    assert resumed.n_done == 40 and resumed.target_state["answered"] == 40
    assert torch.equal(resumed.embeddings, whole.embeddings)


def test_a_b4b_stream_paid_without_its_state_refuses_to_resume(tmp_path):
    from leakprobe.workflows.steal import plan_query_streams, resolve_methods

    methods = resolve_methods("mse")
    query = images(24, seed=7)
    [(_, attacked, _, caches)] = plan_query_streams(methods, [B4B_LOUD], local(), query, 0,
                                                    tmp_path)
    cache = next(iter(caches.values()))
    cache.fill(attacked, 8, chunk=8)
    cache.target_state = None  # as an older leakprobe wrote it
    cache._save()
    with pytest.raises(LeakprobeError, match=r"8 answers paid under b4b:lambda=0\.01,beta=0\.2 "
                                             r"without the client's coverage state"):
        plan_query_streams(methods, [B4B_LOUD], local(), query, 0, tmp_path)


def test_the_legitimate_users_cost_under_b4b_is_a_fresh_client():
    from types import SimpleNamespace

    from leakprobe.workflows.steal import legitimate_cost

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(40) % 2
    centres = torch.randn(2, 12, generator=g)
    emb = centres[labels] + 0.1 * torch.randn(40, 12, generator=g)
    probes = {"target_train": emb[:30], "target_test": emb[30:], "target_accuracy": 1.0,
              "train": SimpleNamespace(labels=labels[:30]),
              "test": SimpleNamespace(labels=labels[30:])}
    cost = legitimate_cost(parse_answer_defence("b4b"), probes, seed=0)
    assert cost["defence"] == "b4b" and cost["target_probe_accuracy"] == 1.0


def test_steal_encoder_through_b4b_continues_the_clients_coverage_on_a_rerun(tmp_path):
    """A budget sweep extended later is the same client asking again: its second run's
    answers continue from the coverage its first left (one request per query chunk)."""
    from safetensors.torch import load_file

    from leakprobe.data.images import ImageSet
    from leakprobe.serving.wire import dequantise
    from leakprobe.workflows.steal import steal_encoder

    data = ImageSet(images(40, seed=8), [f"i{i}" for i in range(40)], None, source="q")
    common = dict(methods="mse", target_defences="none,b4b:lambda=0.01,beta=0.2", epochs=1,
                  device="cpu", surrogate_arch="resnet-tiny", surrogate_kwargs={"width": 8},
                  out_dir=tmp_path)
    steal_encoder(local(), data, budgets=[16], **common)
    report = steal_encoder(local(), data, budgets=[16, 40], **common)
    assert {r["defence"] for r in report["results"]} == {"none", "b4b:lambda=0.01,beta=0.2"}
    paid = load_file(str(tmp_path / "defence-b4b_lambda_0.01_beta_0.2" /
                         "queries_v1.safetensors"))
    views = dequantise(paid["views_u8"][:, 0])
    client = DefendedEncoder(local(), defence=B4B_LOUD, seed=0)
    expected = torch.cat([client.embed(views[:16]), client.embed(views[16:])])
    assert torch.equal(paid["embeddings"][:, 0], expected)
    clean = load_file(str(tmp_path / "queries_v1.safetensors"))["embeddings"]
    assert not torch.allclose(paid["embeddings"], clean, atol=1e-3)  # the noise arrived
