"""The stealing methods' losses, computed by hand, and what each one pays the target."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from leakprobe.attacks.stealing import (
    ContSteal,
    StolenEncoder,
    contsteal_loss,
    rda_loss,
    rda_prototypes,
)
from leakprobe.attacks.stealing.queries import QuantisedViews
from leakprobe.errors import LeakprobeError
from leakprobe.serving.wire import quantise
from leakprobe.targets.encoder import ModuleEncoder
from leakprobe.workflows.steal import resolve_methods, steal_encoder


class Flatten(nn.Module):
    """A fixed linear map of the pixels: an 'encoder' whose outputs are easy to write down."""

    def __init__(self, side: int = 4, dim: int = 5, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(3 * side * side, dim, generator=g))
        self.input_size = side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight


def hand_infonce(s: torch.Tensor, t: torch.Tensor, temperature: float) -> float:
    """Cont-Steal's ContrastiveLoss written out row by row (the reference code's formula)."""
    z = [F.normalize(v, dim=0) for v in torch.cat([s, t])]
    n = s.shape[0]
    total = 0.0
    for i in range(2 * n):
        pos = (i + n) % (2 * n)
        num = math.exp(float(z[i] @ z[pos]) / temperature)
        den = sum(math.exp(float(z[i] @ z[k]) / temperature) for k in range(2 * n) if k != i)
        total += -math.log(num / den)
    return total / (2 * n)


class FakeCache:
    """What a method reads from a query cache: views the target saw and its answers."""

    def __init__(self, views: torch.Tensor, embeddings: torch.Tensor, size: int) -> None:
        self.views = QuantisedViews(quantise(views))
        self.embeddings = embeddings
        self.views_per_image = views.shape[1]
        self.size = size
        self.images = self.views[:, 0]

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        return self.images[idx]


def test_contsteal_pairs_the_same_view_on_both_sides():
    """The positive of the surrogate's embedding of view v is the target's embedding of v:
    the loss is the reference formula over each view slot, averaged."""
    g = torch.Generator().manual_seed(0)
    views = torch.rand(6, 3, 3, 4, 4, generator=g)  # 6 images x 3 views
    target = Flatten(seed=1)
    with torch.no_grad():
        answers = target(quantise(views).float().div(255).flatten(0, 1)).view(6, 3, -1)
    surrogate = Flatten(seed=2)
    cache = FakeCache(views, answers, 4)
    idx = torch.arange(6)
    loss = ContSteal(views_per_image=3).loss(surrogate, cache, idx, g)
    with torch.no_grad():
        s = surrogate(cache.views[idx].flatten(0, 1)).view(6, 3, -1)
    by_hand = sum(hand_infonce(s[:, j], answers[:, j], 0.5) for j in range(3)) / 3
    assert float(loss) == pytest.approx(by_hand, rel=1e-5)
    # pairing a view with another view's answer is a different loss: the pairing matters
    shifted = FakeCache(views, answers.roll(1, dims=1), 4)
    assert float(ContSteal(views_per_image=3).loss(surrogate, shifted, idx, g)) != \
        pytest.approx(by_hand, rel=1e-3)
    # a surrogate equal to the target is the loss's optimum direction: lower than a stranger's
    assert float(ContSteal(views_per_image=3).loss(target, cache, idx, g)) < float(loss)


def test_contsteal_loss_is_the_reference_formula():
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    assert float(contsteal_loss(s, t, 0.5)) == pytest.approx(hand_infonce(s, t, 0.5), rel=1e-5)


def test_the_rda_prototype_of_identical_views_is_the_normalised_embedding():
    e = torch.randn(4, 1, 8).expand(4, 10, 8)  # ten identical views per image
    torch.testing.assert_close(rda_prototypes(e), F.normalize(e[:, 0], dim=-1))
    # different views: the mean of the normalised views, not re-normalised (norm < 1)
    mixed = rda_prototypes(torch.randn(4, 10, 8, generator=torch.Generator().manual_seed(0)))
    assert (mixed.norm(dim=-1) < 1).all()


def test_rda_loss_is_the_papers_formula():
    g = torch.Generator().manual_seed(1)
    s = F.normalize(torch.randn(4, 6, generator=g), dim=-1)
    p = 0.8 * F.normalize(torch.randn(4, 6, generator=g), dim=-1)
    tau = 0.07
    contrast = align = 0.0
    for i in range(4):
        pos = math.exp(float(s[i] @ p[i]) / tau)
        neg = sum(math.exp(float(s[i] @ p[j]) / tau) + math.exp(float(s[i] @ s[j]) / tau)
                  for j in range(4) if j != i)
        contrast += -math.log(pos / neg)
        cos = float(F.cosine_similarity(s[i], p[i], dim=0))
        align += -math.log((cos + 1) / float((s[i] - p[i]).pow(2).sum()))
    assert float(rda_loss(s, p, tau)) == pytest.approx((contrast + align) / 4, rel=1e-5)


def test_stolenencoder_regresses_clean_and_augmented_views_on_the_clean_answer():
    g = torch.Generator().manual_seed(0)
    views = torch.rand(5, 1, 3, 4, 4, generator=g)
    answers = torch.randn(5, 1, 5, generator=g)
    surrogate = Flatten(seed=4)
    cache = FakeCache(views, answers, 4)
    method = StolenEncoder(augmented_weight=0.0)  # the clean term alone, checkable by hand
    loss = method.loss(surrogate, cache, torch.arange(5), g)
    with torch.no_grad():
        s = F.normalize(surrogate(cache.views[torch.arange(5), 0]), dim=-1)
    t = F.normalize(answers[:, 0], dim=-1)
    assert float(loss) == pytest.approx(float(((s - t) ** 2).mean()), rel=1e-5)
    heavy = StolenEncoder().loss(surrogate, cache, torch.arange(5), torch.Generator())
    assert float(heavy) > float(loss)  # the augmented term (weight 20) adds to it


def test_methods_buy_what_they_say():
    chosen = dict(resolve_methods("all"))
    assert list(chosen) == ["contsteal", "contsteal-fresh", "rda", "stolenencoder", "mse",
                            "cosine"]
    assert chosen["rda"].views_per_image == 10 and chosen["rda"].query_recipe == "rda"
    assert chosen["stolenencoder"].query_recipe == chosen["mse"].query_recipe == "clean"
    assert chosen["contsteal"].query_recipe == "contsteal"
    views4 = dict(resolve_methods("all", views=4))
    assert views4["rda"].views_per_image == views4["contsteal"].views_per_image == 4
    assert views4["stolenencoder"].views_per_image == 1  # the clean image, one query
    with pytest.raises(LeakprobeError, match="unknown stealing method 'rdaa'"):
        resolve_methods("rda,rdaa")


def test_every_method_pays_exactly_its_views_times_images(tmp_path):
    """One run of all methods: each result's queries are (budget // N) x N, methods that buy
    the same answers share one stream, and the target saw exactly the streams' queries."""
    torch.manual_seed(0)
    images = torch.rand(60, 3, 16, 16)
    from leakprobe.data.images import ImageSet

    data = ImageSet(images, [f"q{i}" for i in range(60)], source="test")
    model = nn.Sequential(nn.Conv2d(3, 4, 3, 2), nn.Flatten(), nn.LazyLinear(8))
    model(images[:1])
    model.input_size = 16
    target = ModuleEncoder(model, device="cpu")
    report = steal_encoder(target, data, budgets=[20, 40], methods="all", epochs=1,
                           surrogate_arch="resnet-tiny", device="cpu", out_dir=tmp_path)
    by = {(r["method"], r["budget"]): r for r in report["results"]}
    assert by[("rda", 40)]["queries_used"] == 40 and by[("rda", 40)]["images_queried"] == 4
    assert by[("contsteal", 20)]["queries_used"] == 20
    assert by[("stolenencoder", 40)]["images_queried"] == 40
    # streams: clean 40 (mse, cosine, stolenencoder), simclr x2 40, contsteal x1 40, rda 40
    assert target.queries == report["context"]["attack_queries_total"] == 160
    again = ModuleEncoder(model, device="cpu")
    steal_encoder(again, data, budgets=[20, 40], methods="all", epochs=1, device="cpu",
                  surrogate_arch="resnet-tiny", out_dir=tmp_path)
    assert again.queries == 0  # every answer was paid already


def test_a_defence_changes_what_the_attacker_trains_on_not_the_judgement(tmp_path):
    """Each defence is its own row: its query stream holds the defended answers, while the
    probes judge every surrogate against the undefended target; the report says what the
    defence costs a legitimate user."""
    from safetensors.torch import load_file

    from leakprobe.data.images import ImageSet

    torch.manual_seed(0)
    images = torch.rand(80, 3, 16, 16)
    labels = (images[:, 0].mean(dim=(1, 2)) > 0.5).long()
    sets = [ImageSet(images[a:b], [f"i{i}" for i in range(a, b)], labels[a:b], source=f"s{a}")
            for a, b in ((0, 40), (40, 60), (60, 80))]
    model = nn.Sequential(nn.Conv2d(3, 4, 3, 2), nn.Flatten(), nn.LazyLinear(8))
    model(images[:1])
    model.input_size = 16
    target = ModuleEncoder(model, device="cpu")
    report = steal_encoder(target, sets[0], budgets=[20], methods="mse",
                           target_defences="none,noise:0.5", epochs=1, device="cpu",
                           surrogate_arch="resnet-tiny", probe_train=sets[1],
                           probe_test=sets[2], out_dir=tmp_path)
    clean = load_file(str(tmp_path / "queries_v1.safetensors"))
    noisy = load_file(str(tmp_path / "defence-noise_0.5" / "queries_v1.safetensors"))
    assert torch.equal(clean["views_u8"], noisy["views_u8"])  # the same images were asked
    gap = (clean["embeddings"] - noisy["embeddings"]).std()
    assert 0.4 < float(gap) < 0.6  # the attacker got the noisy answers
    rows = {r["defence"]: r for r in report["results"]}
    assert set(rows) == {"none", "noise:0.5"}
    # one judgement: the same target probe for both rows
    assert rows["none"]["metrics"]["target_probe_accuracy"] == \
        rows["noise:0.5"]["metrics"]["target_probe_accuracy"] == report["target_probe_accuracy"]
    costs = {d["defence"]: d for d in report["defences"]}
    assert costs["none"]["target_probe_accuracy"] == report["target_probe_accuracy"]
    assert costs["none"]["probe_accuracy_drop"] == 0
    assert target.queries == 40 + 40  # 20 per stream, 40 probe images


def test_no_method_learns_anything_from_a_constant_target():
    """The null case: a target that answers every image alike gives no method an informative
    probe. (Copying a useful SSL target is measured per method by
    ``benchmarks/stealing.py``; ``contsteal`` copies one in ``test_stealing.py``.)"""
    from leakprobe.data.synthetic import make_synthetic

    class Constant(nn.Module):
        input_size = 16

        def __init__(self) -> None:
            super().__init__()
            self.value = nn.Parameter(torch.linspace(-1, 1, 16))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.value.expand(x.shape[0], -1) + 0 * x.mean()

    torch.manual_seed(0)
    data = make_synthetic(360, 16, seed=3)
    null = steal_encoder(ModuleEncoder(Constant(), device="cpu"), data.subset(range(200)),
                         budgets=[200], methods="all", views=2, epochs=2, device="cpu",
                         surrogate_arch="resnet-tiny", surrogate_kwargs={"width": 8},
                         probe_train=data.subset(range(200, 280)),
                         probe_test=data.subset(range(280, 360)))
    assert null["probe_informative"] is False
    assert len(null["results"]) == 6
