"""Encoder stealing: a Cont-Steal surrogate copies a useful target within a budget."""

from __future__ import annotations

import pytest
import torch

from leakprobe.attacks.stealing import ContSteal, QueryCache, contsteal_loss
from leakprobe.errors import BudgetExceededError, LeakprobeError
from leakprobe.evaluation.theft import procrustes_cosine
from leakprobe.stealing import parse_budgets, steal_encoder
from leakprobe.targets.encoder import ModuleEncoder


@pytest.fixture(scope="module")
def contsteal_report(digits_target, tmp_path_factory):
    t = digits_target
    return steal_encoder(t["target"], t["query"], budgets=[1000], methods="contsteal",
                         epochs=30, seed=0, device="cpu",
                         out_dir=tmp_path_factory.mktemp("steal"),
                         probe_train=t["probe_train"], probe_test=t["probe_test"])


def test_contsteal_copies_the_target_within_the_budget(contsteal_report):
    r = contsteal_report["results"][0]
    target_acc = contsteal_report["target_probe_accuracy"]
    random_acc = contsteal_report["random_init_probe_accuracy"]
    stolen = r["metrics"]["surrogate_probe_accuracy"]
    assert r["queries_used"] <= 1000
    assert stolen >= 0.8 * target_acc, (stolen, target_acc)
    assert stolen >= random_acc + 0.05, (stolen, random_acc)
    assert r["metrics"]["agreement"] > 0.7


def test_stealing_report_has_the_documented_keys(contsteal_report, tmp_path):
    assert contsteal_report["kind"] == "encoder-stealing"
    r = contsteal_report["results"][0]
    assert {"method", "budget", "queries_used", "metrics"} <= set(r)
    assert {"surrogate_probe_accuracy", "agreement", "procrustes_cosine"} <= set(r["metrics"])


def test_the_stolen_encoder_is_saved_like_a_trained_one(contsteal_report):
    from leakprobe.targets.loading import load_encoder

    stolen = load_encoder(contsteal_report["results"][0]["model"], device="cpu")
    assert stolen.embed(torch.rand(2, 3, 32, 32)).shape == (2, 128)


def test_query_cache_resumes_without_paying_twice(digits_target, tmp_path):
    model, images = digits_target["model"], digits_target["query"].images[:40]
    path = tmp_path / "q.safetensors"
    flaky = ModuleEncoder(model, device="cpu", budget=50)  # dies after 50 queries
    cache = QueryCache(images, 2, 32, seed=1, path=path)
    with pytest.raises(BudgetExceededError):
        cache.fill(flaky, 40, chunk=8)
    paid = flaky.queries
    resumed_target = ModuleEncoder(model, device="cpu")
    resumed = QueryCache(images, 2, 32, seed=1, path=path)
    resumed.fill(resumed_target, 40, chunk=8)
    assert paid + resumed_target.queries == 80
    straight = QueryCache(images, 2, 32, seed=1)
    straight.fill(ModuleEncoder(model, device="cpu"), 40, chunk=8)
    torch.testing.assert_close(resumed.views, straight.views)
    torch.testing.assert_close(resumed.embeddings, straight.embeddings)


def test_contsteal_loss_pulls_the_surrogate_to_the_target_and_leaves_it_alone():
    torch.manual_seed(0)
    t = torch.randn(16, 8, requires_grad=True)
    aligned = contsteal_loss(t.detach().clone() * 2, t)
    shuffled = contsteal_loss(t.detach()[torch.randperm(16)], t)
    assert aligned < shuffled
    s = torch.randn(16, 8, requires_grad=True)
    contsteal_loss(s, t).backward()
    assert s.grad is not None and t.grad is None


def test_procrustes_is_invariant_to_rotations():
    x = torch.randn(50, 6)
    q, _ = torch.linalg.qr(torch.randn(6, 6))
    assert procrustes_cosine(x @ q, x) == pytest.approx(1.0, abs=1e-6)
    assert procrustes_cosine(torch.randn(50, 6), x) < 0.6


def test_budget_errors_are_clear():
    with pytest.raises(LeakprobeError):
        parse_budgets("100,abc")
    with pytest.raises(LeakprobeError):
        parse_budgets("0")
    assert parse_budgets("500,100,500") == [100, 500]
    assert ContSteal().views_per_image == 2


def test_budget_larger_than_the_query_data_is_a_clear_error(digits_target):
    t = digits_target
    with pytest.raises(LeakprobeError, match="query images"):
        steal_encoder(t["target"], t["query"].subset(range(20)), budgets=[100],
                      methods="mse", epochs=1, device="cpu")
