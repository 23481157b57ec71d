"""Encoder stealing: a Cont-Steal surrogate copies a useful target within a budget."""

from __future__ import annotations

import json

import pytest
import torch

from leakprobe.attacks.stealing import ContSteal, QueryCache, contsteal_loss
from leakprobe.attacks.stealing.queries import cached_embeddings
from leakprobe.errors import BudgetExceededError, LeakprobeError
from leakprobe.evaluation.theft import procrustes_cosine
from leakprobe.targets.encoder import ModuleEncoder
from leakprobe.workflows.steal import parse_budgets, probe_verdict, steal_encoder

# shares the session fixture of these files: built once, on one xdist worker
pytestmark = pytest.mark.xdist_group("digits-target")


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
    assert torch.equal(resumed.views.levels, straight.views.levels)
    torch.testing.assert_close(resumed.embeddings, straight.embeddings)


def test_the_query_cache_keeps_uint8_views_the_target_saw_exactly(digits_target, tmp_path):
    """Views are quantised before the query and stored as uint8: a quarter of float32's
    room, and ``views[idx, pick]`` gives back the very floats the target embedded."""
    model, images = digits_target["model"], digits_target["query"].images[:24]
    path = tmp_path / "q.safetensors"
    target = ModuleEncoder(model, device="cpu")
    cache = QueryCache(images, 2, 32, seed=3, path=path)
    cache.fill(target, 24, chunk=10)
    assert cache.views.levels.dtype == torch.uint8 and cache.views.shape == (24, 2, 3, 32, 32)
    float_views = 24 * 2 * 3 * 32 * 32 * 4
    assert path.stat().st_size < float_views / 4 + 24 * 2 * 128 * 4 + 4096
    assert cache.nbytes == float_views // 4 + 24 * 2 * 128 * 4
    idx, pick = torch.tensor([0, 5, 23]), torch.tensor([1, 0, 1])
    again = target.embed(cache.views[idx, pick])
    torch.testing.assert_close(again, cache.embeddings[idx, pick], rtol=0, atol=1e-5)
    reloaded = QueryCache(images, 2, 32, seed=3, path=path)
    assert reloaded.n_done == 24 and torch.equal(reloaded.views.levels, cache.views.levels)
    assert torch.equal(reloaded.embeddings, cache.embeddings)
    assert torch.equal(reloaded.views.float()[idx, pick], cache.views[idx, pick])


def test_an_old_float32_query_cache_is_converted_and_resumed(digits_target, tmp_path):
    from safetensors.torch import load_file, save_file

    model, images = digits_target["model"], digits_target["query"].images[:20]
    path = tmp_path / "q.safetensors"
    target = ModuleEncoder(model, device="cpu")
    new = QueryCache(images, 1, 32, seed=0)
    new.fill(target, 12, chunk=6)
    old_views = new.views.float() + 0.4 / 255  # off the grid, as the float32 format was
    save_file({"views": old_views, "embeddings": new.embeddings, "seed": torch.tensor(0)},
              str(path))
    resumed = QueryCache(images, 1, 32, seed=0, path=path)
    assert resumed.n_done == 12 and torch.equal(resumed.views.levels, new.views.levels)
    assert "views_u8" in load_file(str(path))  # rewritten in the compact format
    counting = ModuleEncoder(model, device="cpu")
    resumed.fill(counting, 20, chunk=6)
    assert counting.queries == 8 and resumed.n_done == 20


@pytest.mark.parametrize("content", [b"torn", None])
def test_an_unreadable_query_cache_is_one_clear_line(tmp_path, content):
    from safetensors.torch import save_file

    path = tmp_path / "q.safetensors"
    if content is None:
        save_file({"something": torch.zeros(2)}, str(path))
    else:
        path.write_bytes(content)
    with pytest.raises(LeakprobeError, match="remove it") as err:
        QueryCache(torch.rand(4, 3, 8, 8), 1, 8, path=path)
    assert "\n" not in str(err.value)


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
    assert ContSteal().views_per_image == 1


def test_budget_larger_than_the_query_data_is_a_clear_error(digits_target):
    t = digits_target
    with pytest.raises(LeakprobeError, match="query images"):
        steal_encoder(t["target"], t["query"].subset(range(20)), budgets=[100],
                      methods="mse", epochs=1, device="cpu")


def test_the_target_probe_beats_the_random_init_one(contsteal_report):
    assert contsteal_report["probe_informative"] is True
    assert contsteal_report["probe_informative_margin"] >= 0.02
    assert not contsteal_report["warnings"]


def test_probe_verdict_margin():
    # a newcomer's run: the target's probe is worse than an untrained encoder's
    assert probe_verdict(0.338, 0.375, 697) == (False, pytest.approx(0.0302, abs=1e-4))
    assert probe_verdict(0.884, 0.66, 697)[0] is True
    # within the binomial spread of the random-init probe: not informative either
    assert probe_verdict(0.40, 0.375, 697)[0] is False
    # at least 0.02 however many test images
    assert probe_verdict(0.51, 0.5, 10**7) == (False, 0.02)


class ConstantEncoder(torch.nn.Module):
    """Embeds every image alike: a probe on it knows nothing (an untrained-looking target)."""

    input_size = 32

    def __init__(self) -> None:
        super().__init__()
        self.value = torch.nn.Parameter(torch.linspace(-1, 1, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value.expand(x.shape[0], -1) + 0 * x.mean()


def test_an_uninformative_probe_is_reported_not_trusted(digits_target, tmp_path):
    t = digits_target
    out = tmp_path / "steal"
    report = steal_encoder(ModuleEncoder(ConstantEncoder(), device="cpu"), t["query"],
                           budgets=[40], methods="mse", epochs=1, device="cpu", out_dir=out,
                           probe_train=t["probe_train"], probe_test=t["probe_test"].subset(
                               range(200)))
    assert report["target_probe_accuracy"] < report["random_init_probe_accuracy"]
    assert report["probe_informative"] is False
    assert [w for w in report["warnings"] if "cannot judge theft" in w]
    saved = json.loads((out / "report.json").read_text())
    assert saved["probe_informative"] is False and saved["warnings"] == report["warnings"]
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.index("cannot judge theft") < page.index("Stealing results")


def test_a_rerun_pays_no_query_twice(digits_target, tmp_path):
    """Attack and probe queries are cached in the out folder: a rerun sends the target none."""
    t = digits_target
    kwargs = {"budgets": [40], "methods": "mse", "epochs": 1, "device": "cpu",
              "out_dir": tmp_path / "steal", "probe_train": t["probe_train"].subset(range(60)),
              "probe_test": t["probe_test"].subset(range(60))}
    first_target = ModuleEncoder(t["model"], device="cpu")
    first = steal_encoder(first_target, t["query"], **kwargs)
    assert first_target.queries == 40 + 60 + 60
    assert (tmp_path / "steal" / "probe_embeddings.safetensors").is_file()
    counting = ModuleEncoder(t["model"], device="cpu")
    second = steal_encoder(counting, t["query"], **kwargs)
    assert counting.queries == 0
    assert second["target_probe_accuracy"] == first["target_probe_accuracy"]
    assert second["context"]["evaluation_queries"] == 120
    assert not list((tmp_path / "steal").glob("*.tmp"))


def test_probe_cache_embeds_changed_images_again(digits_target, tmp_path):
    model, images = digits_target["model"], digits_target["probe_test"].images[:30]
    path = tmp_path / "probe.safetensors"
    target = ModuleEncoder(model, device="cpu")
    first, paid = cached_embeddings(target, {"a": images[:20], "b": images[20:]}, path)
    assert paid == 30 and target.queries == 30
    again, paid = cached_embeddings(target, {"a": images[:20], "b": images[20:]}, path)
    assert paid == 0 and target.queries == 30
    torch.testing.assert_close(again["a"], first["a"])
    changed, paid = cached_embeddings(target, {"a": images[:20], "b": images[20:] * 0.5}, path)
    assert paid == 10 and target.queries == 40
    torch.testing.assert_close(changed["a"], first["a"])
    assert not torch.allclose(changed["b"], first["b"])
    path.write_bytes(b"torn")
    _, paid = cached_embeddings(target, {"a": images[:20]}, path)
    assert paid == 20


def test_procrustes_of_independent_embeddings_is_near_zero_held_out():
    """Fitted and judged on the same 500 images, two independent 512-d embeddings 'align' to
    about 0.76; fitted on probe-train and judged on probe-test they score about 0."""
    g = torch.Generator().manual_seed(0)
    a_train, b_train, a_test, b_test = (torch.randn(500, 512, generator=g) for _ in range(4))
    assert procrustes_cosine(a_train, b_train) > 0.6  # in-sample: optimistic
    assert abs(procrustes_cosine(a_train, b_train, a_test, b_test)) < 0.05
    x_train, x_test = a_train[:, :64], a_test[:, :64]  # more images than dimensions
    q = torch.linalg.qr(torch.randn(64, 64, generator=g))[0]  # a rotated copy scores 1
    assert procrustes_cosine(x_train @ q, x_train, x_test @ q, x_test) == pytest.approx(1.0)


def test_random_init_floor_is_reported(contsteal_report):
    floor = contsteal_report["random_init_procrustes_cosine"]
    stolen = contsteal_report["results"][0]["metrics"]["procrustes_cosine"]
    assert floor is not None and stolen > floor, (stolen, floor)


def test_probe_images_among_the_queries_are_refused(digits_target, tmp_path):
    t = digits_target
    with pytest.raises(LeakprobeError, match="--probe-test shares 10 images with the query"):
        steal_encoder(t["target"], t["query"], budgets=[100], methods="mse", epochs=1,
                      device="cpu", out_dir=tmp_path / "o", probe_train=t["probe_train"],
                      probe_test=t["query"].subset(range(10)))
    assert not (tmp_path / "o").exists()
