"""Answer defences: the spec grammar, what each perturbation does, and that the server
applies exactly the same code (same seed, same answers)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from leakprobe.defences.answers import (
    AnswerDefence,
    parse_answer_defence,
    parse_answer_defences,
)
from leakprobe.errors import LeakprobeError
from leakprobe.serving.server import EncoderService, ServeConfig
from leakprobe.serving.wire import encode_npy
from leakprobe.targets.encoder import ModuleEncoder

FORMS = ("use none, noise:STD, round:DECIMALS, topk:K, "
         "b4b[:lambda=L,alpha=A,beta=B,transform=T] (join with +)")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("none", AnswerDefence()),
    (" None ", AnswerDefence()),
    ("noise:0.05", AnswerDefence(noise=0.05)),
    ("topk:8", AnswerDefence(top_k=8)),
    ("round:0", AnswerDefence(round_decimals=0)),
    ("round:2+noise:0.05", AnswerDefence(noise=0.05, round_decimals=2)),
    ("noise:1e-3 + topk:4 + round:3", AnswerDefence(noise=0.001, top_k=4, round_decimals=3)),
    ("NOISE:2", AnswerDefence(noise=2.0)),
])
def test_valid_specs(text, expected):
    assert parse_answer_defence(text) == expected


@pytest.mark.parametrize("defence, spec", [
    (AnswerDefence(), "none"),
    (AnswerDefence(noise=0.05), "noise:0.05"),
    (AnswerDefence(noise=0.05, round_decimals=2), "noise:0.05+round:2"),
    (AnswerDefence(noise=1.0, top_k=16, round_decimals=0), "noise:1+topk:16+round:0"),
    (AnswerDefence(noise=1e-7), "noise:1e-07"),
    (AnswerDefence(noise=0.123456789012345), "noise:0.123456789012345"),
])
def test_canonical_spec_round_trips(defence, spec):
    assert defence.spec == spec
    assert parse_answer_defence(spec) == defence


def test_spec_is_canonical_whatever_the_order_written():
    assert parse_answer_defence("round:2+topk:3+noise:0.5").spec == "noise:0.5+topk:3+round:2"


@pytest.mark.parametrize("text, message", [
    ("nois:0.1", "unknown answer defence 'nois:0.1' (did you mean 'noise:0.1'?); " + FORMS),
    ("top_k:5", "unknown answer defence 'top_k:5' (did you mean 'topk:5'?); " + FORMS),
    ("rond", "unknown answer defence 'rond' (did you mean 'round:DECIMALS'?); " + FORMS),
    ("blur:3", "unknown answer defence 'blur:3'; " + FORMS),
    ("", "empty answer defence; " + FORMS),
    ("noise:0.1+", "empty part in answer defence 'noise:0.1+'; " + FORMS),
    ("noise", "answer defence 'noise' needs a value: noise:STD; " + FORMS),
    ("topk:", "answer defence 'topk:' needs a value: topk:K; " + FORMS),
    ("noise:0", "bad answer defence 'noise:0': noise:STD needs STD a number > 0, got '0'; "
     + FORMS),
    ("noise:-0.1", "bad answer defence 'noise:-0.1': noise:STD needs STD a number > 0, got "
     "'-0.1'; " + FORMS),
    ("noise:nan", "bad answer defence 'noise:nan': noise:STD needs STD a number > 0, got "
     "'nan'; " + FORMS),
    ("noise:inf", "bad answer defence 'noise:inf': noise:STD needs STD a number > 0, got "
     "'inf'; " + FORMS),
    ("noise:abc", "bad answer defence 'noise:abc': noise:STD needs STD a number > 0, got "
     "'abc'; " + FORMS),
    ("topk:0", "bad answer defence 'topk:0': topk:K needs K an integer >= 1, got '0'; "
     + FORMS),
    ("topk:2.5", "bad answer defence 'topk:2.5': topk:K needs K an integer >= 1, got '2.5'; "
     + FORMS),
    ("round:-1", "bad answer defence 'round:-1': round:DECIMALS needs DECIMALS an integer "
     ">= 0, got '-1'; " + FORMS),
    ("round:x", "bad answer defence 'round:x': round:DECIMALS needs DECIMALS an integer "
     ">= 0, got 'x'; " + FORMS),
    ("noise:0.1+noise:0.2", "answer defence 'noise' given twice in 'noise:0.1+noise:0.2'; "
     + FORMS),
    ("none+round:2", "answer defence 'none+round:2': none cannot be joined with other "
     "parts; " + FORMS),
])
def test_every_parse_error_is_one_line_naming_the_part(text, message):
    with pytest.raises(LeakprobeError) as info:
        parse_answer_defence(text)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_list_parsing_keeps_order_and_drops_duplicates():
    got = parse_answer_defences("none, noise:0.1, round:2+noise:0.1, noise:0.1+round:2, "
                                "noise:0.10, topk:4, none")
    assert [d.spec for d in got] == ["none", "noise:0.1", "noise:0.1+round:2", "topk:4"]


@pytest.mark.parametrize("text, message", [
    ("noise:0.1,,round:2", "empty item in the answer defence list 'noise:0.1,,round:2'"),
    ("noise:0.1,", "empty item in the answer defence list 'noise:0.1,'"),
    ("  ", "empty list of answer defences"),
    ("none,nois:1", "unknown answer defence 'nois:1'"),
])
def test_list_errors(text, message):
    with pytest.raises(LeakprobeError) as info:
        parse_answer_defences(text)
    assert str(info.value).startswith(message) and str(info.value).endswith("; " + FORMS)


@pytest.mark.parametrize("fields", [{"noise": -0.1}, {"noise": math.nan}, {"top_k": 0},
                                    {"round_decimals": -1}])
def test_the_dataclass_refuses_meaningless_values(fields):
    with pytest.raises(LeakprobeError, match="answer defence"):
        AnswerDefence(**fields)


def test_to_dict_has_the_server_keys_of_the_defences_set():
    assert AnswerDefence().to_dict() == {}
    assert AnswerDefence(noise=0.5, top_k=3, round_decimals=0).to_dict() == {
        "noise": 0.5, "top_k": 3, "round_decimals": 0}
    assert AnswerDefence(round_decimals=2).to_dict() == {"round_decimals": 2}


def test_is_identity():
    assert AnswerDefence().is_identity and parse_answer_defence("none").is_identity
    for spec in ("noise:0.1", "topk:1", "round:0"):
        assert not parse_answer_defence(spec).is_identity


# -- applying ------------------------------------------------------------------------------


def test_noise_has_the_std_asked_and_no_bias():
    emb = torch.randn(4000, 32, generator=gen(1))
    out = AnswerDefence(noise=0.3).apply(emb, generator=gen(2))
    delta = (out - emb).flatten()
    assert abs(delta.std().item() - 0.3) < 0.006  # 128k draws: std error ~0.0006
    assert abs(delta.mean().item()) < 0.006
    assert out.dtype == emb.dtype and out.shape == emb.shape


def test_top_k_keeps_exactly_the_k_largest_magnitudes():
    emb = torch.randn(50, 20, generator=gen(3))
    out = AnswerDefence(top_k=5).apply(emb, generator=gen(0))
    assert ((out != 0).sum(dim=1) == 5).all()
    for row, orig in zip(out, emb, strict=True):
        largest = orig.abs().topk(5).indices
        assert set(row.nonzero().flatten().tolist()) == set(largest.tolist())
        assert torch.equal(row[largest], orig[largest])


def test_top_k_larger_than_the_width_keeps_everything():
    emb = torch.randn(3, 4, generator=gen(3))
    assert torch.equal(AnswerDefence(top_k=10).apply(emb, generator=gen(0)), emb)


def test_rounding():
    emb = torch.tensor([[0.123456, -2.71828, 10.5551]])
    out = AnswerDefence(round_decimals=2).apply(emb, generator=gen(0))
    assert torch.allclose(out, torch.tensor([[0.12, -2.72, 10.56]]), atol=0, rtol=0)
    assert torch.equal(AnswerDefence(round_decimals=0).apply(emb, generator=gen(0)),
                       torch.tensor([[0.0, -3.0, 11.0]]))


def test_order_is_noise_then_top_k_then_rounding():
    emb = torch.randn(8, 16, generator=gen(4))
    noise = 0.7 * torch.randn(8, 16, generator=gen(5))
    noisy = emb + noise
    keep = noisy.abs().topk(3, dim=1).indices
    expected = torch.round(torch.zeros_like(noisy).scatter(1, keep, noisy.gather(1, keep)),
                           decimals=1)
    out = parse_answer_defence("round:1+topk:3+noise:0.7").apply(emb, generator=gen(5))
    assert torch.equal(out, expected)


def test_identity_returns_the_input_and_draws_nothing():
    emb = torch.randn(5, 7, generator=gen(6))
    g = gen(7)
    state = g.get_state()
    assert AnswerDefence().apply(emb, generator=g) is emb
    assert torch.equal(g.get_state(), state)


def test_same_seed_same_answers_and_the_generator_advances():
    emb = torch.randn(6, 10, generator=gen(8))
    defence = parse_answer_defence("noise:0.2+topk:4+round:3")
    g1, g2 = gen(11), gen(11)
    a1, b1 = defence.apply(emb, generator=g1), defence.apply(emb, generator=g1)
    a2, b2 = defence.apply(emb, generator=g2), defence.apply(emb, generator=g2)
    assert torch.equal(a1, a2) and torch.equal(b1, b2)
    assert not torch.equal(a1, b1)  # fresh noise for each query
    assert not torch.equal(a1, defence.apply(emb, generator=gen(12)))


def test_noise_is_drawn_in_float32_on_the_cpu_whatever_the_dtype():
    emb = torch.randn(4, 6, generator=gen(9))
    defence = AnswerDefence(noise=0.5)
    as_double = defence.apply(emb.double(), generator=gen(1))
    assert as_double.dtype == torch.float64
    draw = torch.randn(4, 6, generator=gen(1), dtype=torch.float32).double()
    assert torch.equal(as_double, emb.double() + 0.5 * draw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_answers_do_not_depend_on_the_device():
    emb = torch.randn(64, 128, generator=gen(10))
    defence = parse_answer_defence("noise:0.05+topk:16+round:3")
    on_cpu = defence.apply(emb, generator=gen(3))
    on_gpu = defence.apply(emb.cuda(), generator=gen(3))
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), on_cpu)


# -- the server applies the same code --------------------------------------------------------


class Tiny(nn.Module):
    """A 24-dim encoder small enough to serve in a unit test."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 24, 3, padding=1)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def tiny_encoder() -> ModuleEncoder:
    torch.manual_seed(0)
    return ModuleEncoder(Tiny(), input_size=16, device="cpu")


def legacy_perturb(config: ServeConfig, generator: torch.Generator, emb: torch.Tensor):
    """EncoderService._perturb as it was before AnswerDefence (the behaviour to keep)."""
    c = config
    if c.noise:
        emb = emb + c.noise * torch.randn(emb.shape, generator=generator)
    if c.top_k:
        keep = emb.abs().topk(min(c.top_k, emb.shape[1]), dim=1).indices
        emb = torch.zeros_like(emb).scatter(1, keep, emb.gather(1, keep))
    if c.round_decimals is not None:
        emb = torch.round(emb, decimals=c.round_decimals)
    return emb


@pytest.mark.parametrize("fields", [
    {"noise": 0.3}, {"top_k": 5}, {"round_decimals": 2},
    {"noise": 0.1, "top_k": 6, "round_decimals": 3, "seed": 7}, {},
])
def test_the_server_answers_what_answer_defence_apply_gives(fields):
    encoder = tiny_encoder()
    config = ServeConfig(**fields)
    service = EncoderService(encoder, config)
    defence = AnswerDefence(noise=config.noise, top_k=config.top_k,
                            round_decimals=config.round_decimals)
    assert service.defence == defence
    g_new, g_old = gen(config.seed), gen(config.seed)
    changed = False
    for n in (3, 1, 5):  # several requests: the noise stream must advance the same way
        x = torch.rand(n, 3, 16, 16, generator=gen(20 + n))
        served = np.asarray(service.embed({"array": encode_npy(x)})["embeddings"],
                            dtype=np.float32)
        clean = encoder.embed(x)
        assert np.array_equal(served, defence.apply(clean, generator=g_new).numpy())
        assert np.array_equal(served, legacy_perturb(config, g_old, clean).numpy())
        changed |= not np.array_equal(served, clean.numpy())
    assert changed == (not defence.is_identity)


@pytest.mark.parametrize("fields", [
    {}, {"noise": 0.5}, {"noise": 1}, {"top_k": 5}, {"top_k": 0}, {"round_decimals": 0},
    {"round_decimals": 2}, {"noise": 0.05, "top_k": 8, "round_decimals": 3},
])
def test_info_defence_is_what_it_was(fields):
    c = ServeConfig(**fields)
    legacy = {k: v for k, v in {"noise": c.noise, "top_k": c.top_k,
                                "round_decimals": c.round_decimals}.items() if v}
    got = EncoderService(tiny_encoder(), c).info()["defence"]
    assert json.dumps(got) == json.dumps(legacy)
