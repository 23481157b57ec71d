"""B4B: coverage by LSH buckets, the noise schedule, per-user transforms, the spec grammar."""

from __future__ import annotations

import json
import math

import pytest
import torch

from leakprobe.defences.answers import AnswerDefence, parse_answer_defence, parse_answer_defences
from leakprobe.defences.b4b import (
    B4B,
    B4BClient,
    CoverageTracker,
    UserTransform,
    noise_std,
)
from leakprobe.errors import LeakprobeError


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def spread(n: int, dim: int = 32, seed: int = 0) -> torch.Tensor:
    """Embeddings spread over the space (a thief's queries)."""
    return torch.randn(n, dim, generator=gen(seed))


def narrow(n: int, dim: int = 32, seed: int = 0) -> torch.Tensor:
    """Embeddings of one narrow cluster (a legitimate client's one task)."""
    centre = torch.randn(dim, generator=gen(99))
    return centre + 0.05 * torch.randn(n, dim, generator=gen(seed))


# -- coverage ------------------------------------------------------------------------------


def test_the_paper_lsh_sizes_and_an_empty_tracker():
    t = CoverageTracker(32)
    assert (t.hashes, t.bits) == (20, 12) and t.occupied.shape == (20, 4096)
    assert t.coverage == 0.0 and t.answered == 0


def test_one_embedding_occupies_one_bucket_per_hash():
    t = CoverageTracker(8, seed=1)
    t.update(spread(1, 8))
    assert t.occupied.sum(dim=1).tolist() == [1] * 20
    assert math.isclose(t.coverage, 100 / 4096)
    t.update(spread(1, 8))  # the same embedding again: nothing new
    assert math.isclose(t.coverage, 100 / 4096) and t.answered == 2


def test_coverage_grows_much_faster_for_spread_queries_than_for_one_cluster():
    thief, user = CoverageTracker(32, seed=3), CoverageTracker(32, seed=3)
    for i in range(10):  # 10 requests of 200
        thief.update(spread(200, seed=i))
        user.update(narrow(200, seed=i))
    assert thief.coverage > 20  # 2000 spread points fill a good part of 4096 buckets
    assert user.coverage < 1
    assert thief.coverage > 20 * user.coverage


def test_coverage_is_the_mean_percentage_over_hashes():
    t = CoverageTracker(16, hashes=4, bits=3, seed=0)
    t.update(spread(500, 16))
    per_hash = t.occupied.float().mean(dim=1) * 100
    assert math.isclose(t.coverage, per_hash.mean().item(), rel_tol=1e-6)
    assert t.coverage > 90  # 8 buckets per hash, 500 spread points: nearly all


def test_scaling_an_embedding_does_not_change_its_buckets():
    t = CoverageTracker(16, seed=2)
    x = spread(50, 16)
    assert torch.equal(t.buckets(x), t.buckets(3.7 * x))  # no normalisation needed


def test_same_seed_same_hashes_other_seed_other_hashes():
    x = spread(300, 16, seed=5)
    a, b, c = (CoverageTracker(16, seed=s) for s in (7, 7, 8))
    for t in (a, b, c):
        t.update(x)
    assert torch.equal(a.occupied, b.occupied) and not torch.equal(a.occupied, c.occupied)


def test_state_round_trips_through_json_and_continues_exactly():
    whole, first = CoverageTracker(24, seed=4), CoverageTracker(24, seed=4)
    whole.update(spread(400, 24, seed=1))
    first.update(spread(400, 24, seed=1))
    state = json.loads(json.dumps(first.to_state()))
    assert len(state["occupied"]) == 20 and all(len(r) <= 700 for r in state["occupied"])
    resumed = CoverageTracker.from_state(state)
    assert torch.equal(resumed.occupied, first.occupied) and resumed.answered == 400
    whole.update(spread(300, 24, seed=2))
    resumed.update(spread(300, 24, seed=2))
    assert torch.equal(resumed.occupied, whole.occupied)
    assert resumed.coverage == whole.coverage


@pytest.mark.parametrize("broken", [None, {}, {"format": "other"},
                                    {**CoverageTracker(4).to_state(), "occupied": ["AAAA"]},
                                    {**CoverageTracker(4).to_state(), "dim": "x"}])
def test_a_damaged_state_is_one_clear_error(broken):
    with pytest.raises(LeakprobeError, match="not a b4b coverage state"):
        CoverageTracker.from_state(broken)


def test_wrong_widths_are_refused():
    with pytest.raises(LeakprobeError, match=r"hashes \(B, 8\) embeddings"):
        CoverageTracker(8).update(torch.zeros(2, 9))
    with pytest.raises(LeakprobeError, match="bits"):
        CoverageTracker(8, bits=30)


# -- the noise schedule --------------------------------------------------------------------


def test_sigma_is_zero_at_no_coverage_and_alpha_minus_lambda_at_beta():
    assert noise_std(0) == 0.0
    assert math.isclose(noise_std(80), 1 - 1e-6, rel_tol=1e-12)
    # halfway in the exponent: lambda * (sqrt(alpha / lambda) - 1)
    assert math.isclose(noise_std(40), 1e-6 * (1000 - 1), rel_tol=1e-9)
    assert math.isclose(noise_std(10, lam=1e-4, alpha=0.5, beta=20),
                        1e-4 * (math.exp(math.log(0.5 / 1e-4) * 0.5) - 1), rel_tol=1e-12)
    values = [noise_std(c) for c in range(0, 101, 5)]
    assert values == sorted(values) and values[-1] > 1  # grows, and beyond alpha past beta


@pytest.mark.parametrize("bad", [{"lam": 0}, {"alpha": -1}, {"beta": math.inf}])
def test_the_schedule_refuses_meaningless_settings(bad):
    with pytest.raises(LeakprobeError, match="b4b"):
        noise_std(10, **bad)
    with pytest.raises(LeakprobeError, match="b4b"):
        B4B(**bad)


# -- clients and per-user transformations -------------------------------------------------


def test_a_client_answers_with_noise_from_its_coverage_before_the_request():
    settings = B4B(lam=1e-3, alpha=1.0, beta=5.0)
    client = settings.client(16, seed=0, transform_seed=0)
    g, g_check = gen(1), gen(1)
    first = spread(300, 16, seed=1)
    out = client.answer(first, generator=g)
    torch.randn(first.shape, generator=g_check)  # drawn whatever sigma
    assert torch.equal(out, first)  # coverage 0 before it: sigma 0
    coverage = client.coverage
    assert coverage > 0 and client.noise_std == settings.noise_std(coverage)
    second = spread(300, 16, seed=2)
    out = client.answer(second, generator=g)
    expected = second + settings.noise_std(coverage) * torch.randn(second.shape,
                                                                  generator=g_check)
    assert torch.equal(out, expected)
    assert client.tracker.answered == 600  # the clean answers are hashed


def test_apply_needs_a_client_under_b4b_and_b4b_comes_before_rounding():
    defence = parse_answer_defence("b4b:lambda=1e-3,beta=5+round:2")
    with pytest.raises(LeakprobeError, match="answers a client"):
        defence.apply(spread(2, 8), generator=gen(0))
    client = defence.b4b.client(8, seed=0, transform_seed=0)
    x = spread(200, 8)
    defence.apply(x, generator=gen(0), client=client)
    out = defence.apply(x, generator=gen(0), client=client)
    assert torch.equal(out, torch.round(out, decimals=2)) and not torch.allclose(out, x,
                                                                                 atol=0.01)


@pytest.mark.parametrize("kind", ["affine", "shuffle", "affine-shuffle"])
def test_per_user_transforms_are_invertible_seeded_and_differ_between_users(kind):
    x = spread(20, 12)
    t = UserTransform(12, kind=kind, seed=1)
    y = t(x)
    assert not torch.allclose(y, x)
    assert torch.allclose(t.inverse(y), x, atol=1e-5)
    assert torch.equal(UserTransform(12, kind=kind, seed=1)(x), y)
    assert not torch.allclose(UserTransform(12, kind=kind, seed=2)(x), y)
    if kind == "shuffle":
        assert torch.equal(torch.sort(y, dim=1).values, torch.sort(x, dim=1).values)
    if kind != "shuffle":
        assert (t.scale.abs() >= 0.1).all() and (t.scale.abs() <= 1).all()
        assert (t.shift.abs() <= 1).all()


def test_a_client_with_a_transform_answers_through_it_and_round_trips():
    settings = B4B(transform="affine-shuffle")
    client = settings.client(12, seed=3, transform_seed=9)
    x = spread(5, 12)
    out = client.answer(x, generator=gen(0))  # coverage 0: no noise, only the transform
    assert client.transform is not None
    assert torch.allclose(client.transform.inverse(out), x, atol=1e-5)
    restored = B4BClient.from_state(settings, json.loads(json.dumps(client.to_state())))
    assert restored.coverage == client.coverage and restored.transform_seed == 9
    assert torch.equal(restored.transform(x), client.transform(x))


# -- the spec grammar ----------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("b4b", AnswerDefence(b4b=B4B())),
    ("B4B:lambda=1e-6,alpha=1,beta=80", AnswerDefence(b4b=B4B())),
    ("b4b:alpha=0.8;beta=40", AnswerDefence(b4b=B4B(alpha=0.8, beta=40))),
    ("b4b:lam=1e-5, transform=Affine", AnswerDefence(b4b=B4B(lam=1e-5, transform="affine"))),
    ("round:3+b4b", AnswerDefence(round_decimals=3, b4b=B4B())),
    ("b4b:hashes=10,bits=8+noise:0.1", AnswerDefence(noise=0.1, b4b=B4B(hashes=10, bits=8))),
])
def test_b4b_specs_parse(text, expected):
    assert parse_answer_defence(text) == expected


@pytest.mark.parametrize("defence, spec", [
    (AnswerDefence(b4b=B4B()), "b4b"),
    (AnswerDefence(b4b=B4B(alpha=0.8)), "b4b:alpha=0.8"),
    (AnswerDefence(round_decimals=3, b4b=B4B(beta=40, transform="shuffle")),
     "b4b:beta=40,transform=shuffle+round:3"),
])
def test_b4b_canonical_specs_round_trip(defence, spec):
    assert defence.spec == spec and parse_answer_defence(spec) == defence
    assert not defence.is_identity and defence.stateful


@pytest.mark.parametrize("text, message", [
    ("b4d", "unknown answer defence 'b4d' (did you mean 'b4b'?)"),
    ("b4b:gamma=1", "unknown b4b setting 'gamma' in 'b4b:gamma=1'"),
    ("b4b:alfa=1", "unknown b4b setting 'alfa' in 'b4b:alfa=1' (did you mean 'alpha=1'?)"),
    ("b4b:alpha=-1", "bad b4b setting 'alpha=-1': alpha needs a number > 0, got '-1'"),
    ("b4b:bits=30", "bad b4b setting 'bits=30': bits needs an integer from 1 to 24"),
    ("b4b:transform=afine", "unknown b4b transform 'afine' (did you mean 'affine'?)"),
    ("b4b:", "answer defence 'b4b:' needs settings after ':'"),
    ("b4b:alpha", "bad b4b setting 'alpha' in 'b4b:alpha': use NAME=VALUE"),
    ("b4b:alpha=1,alpha=2", "b4b setting 'alpha' given twice"),
    ("b4b+b4b", "answer defence 'b4b' given twice in 'b4b+b4b'"),
])
def test_b4b_parse_errors_are_one_line(text, message):
    with pytest.raises(LeakprobeError) as info:
        parse_answer_defence(text)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_b4b_settings_may_be_separated_by_commas_in_a_list():
    got = parse_answer_defences("none,b4b:alpha=1,beta=40,noise:0.1,b4b:alpha=1")
    assert [d.spec for d in got] == ["none", "b4b:beta=40", "noise:0.1", "b4b"]
    with pytest.raises(LeakprobeError, match="'beta=40' in the answer defence list"):
        parse_answer_defences("noise:0.1,beta=40")


def test_to_dict_announces_the_b4b_settings():
    assert parse_answer_defence("b4b:alpha=0.5+round:3").to_dict() == {
        "round_decimals": 3,
        "b4b": {"lambda": 1e-6, "alpha": 0.5, "beta": 80.0, "transform": "none",
                "hashes": 20, "bits": 12}}
