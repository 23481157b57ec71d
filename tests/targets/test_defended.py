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
        "serve encoder --noise/--top-k/--round-decimals); --target-defence applies to local "
        "targets only")

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
