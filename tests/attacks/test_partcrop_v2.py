"""partcrop-v2: PartCrop's features (same queries, one cache entry) scored by the extension's
RMSNorm + Tanh attacker; above chance on a memorising target, at chance on a null one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leakprobe.attacks.membership import (
    PartCrop,
    PartCropV2,
    create_attack,
    expand_attack_names,
)
from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.audit import crossfit
from leakprobe.evaluation.metrics import compute_metrics
from leakprobe.evaluation.plan import FeatureCache, PlanRunner, build_plan

# shares the session fixture of test_encoder_attacks.py: built once, on one xdist worker
pytestmark = [pytest.mark.xdist_group("memorising-target"),
              pytest.mark.usefixtures("one_torch_thread")]


def audit(target, members, nonmembers, permutations):
    # one repeat of 2 folds: 99 permutations (p down to 0.01) for the price of 19 at 3 repeats
    result = crossfit(create_attack("partcrop-v2"), target, members, nonmembers, folds=2,
                      seed=0, repeats=1, permutations=permutations)
    assert result.attack == "partcrop-v2"
    return compute_metrics(result.scores, result.is_member, result.folds, n_bootstrap=200,
                           null_aucs=result.null_aucs, refitted=result.refitted)


def test_partcrop_v2_finds_memorised_members(memorising_target):
    t = memorising_target
    m = audit(t["target"], t["members"], t["nonmembers"], permutations=99)
    # measured: AUC 0.80 (interval 0.69-0.92), above all 99 permuted-label fits: p 0.01
    assert m["auc"] >= 0.65, m
    assert m["p_value_method"] == "permutation" and m["p_value"] <= 0.01, m


def test_partcrop_v2_sits_at_chance_on_a_null_target(memorising_target):
    """Two sets of unseen images: nothing to find (measured: AUC 0.54, p 0.25)."""
    t = memorising_target
    m = audit(t["target"], t["unseen_a"], t["unseen_b"], permutations=19)
    assert abs(m["auc"] - 0.5) <= 0.15, m
    assert m["p_value"] > 0.05, m  # not even at its smallest value, 1/20


def _fitted(seed: int, n: int = 80, width: int = 16) -> tuple[PartCropV2, np.ndarray]:
    """partcrop-v2 fitted on synthetic features whose mean shifts with membership."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2 == 0
    x = rng.normal(size=(n, width)) + 0.8 * y[:, None]
    return PartCropV2(epochs=15, seed=seed).fit_features(x, y), x


def test_the_attacker_has_rmsnorm_after_every_hidden_layer_and_tanh():
    attack, x = _fitted(seed=0)
    net = attack.scorer_.net_
    module = net.module()
    kinds = [type(layer).__name__ for layer in module]
    assert kinds == ["RMSNorm", *["Linear", "RMSNorm", "Tanh"] * 3, "Linear"]
    linears = [layer for layer in module if isinstance(layer, torch.nn.Linear)]
    assert [layer.out_features for layer in linears] == [512, 256, 128, 1]
    for layer in module:
        if isinstance(layer, torch.nn.RMSNorm):  # the reference's: no gain, eps in the root
            assert layer.weight is None and layer.eps == 1e-6
    # the module is the function the batched engine trained and scores with
    z = torch.as_tensor((x - net.means[0]) / net.stds[0], dtype=torch.float32)
    with torch.no_grad():
        probs = torch.sigmoid(module(z)[:, 0]).double().numpy()
        rescaled = torch.sigmoid(module(3.0 * z)[:, 0]).double().numpy()
    np.testing.assert_allclose(probs, attack.score_features(x), atol=1e-6)
    np.testing.assert_allclose(rescaled, probs, atol=1e-5)  # the input's RMSNorm applies
    # partcrop keeps the paper's ReLU MLP
    relu = PartCrop(epochs=2).fit_features(x, np.arange(len(x)) % 2 == 0).scorer_.net_.module()
    assert "ReLU" in {type(layer).__name__ for layer in relu}
    assert not {"RMSNorm", "Tanh"} & {type(layer).__name__ for layer in relu}


def test_the_attacker_is_seeded():
    a, x = _fitted(seed=0)
    b, _ = _fitted(seed=0)
    c, _ = _fitted(seed=1)
    assert np.array_equal(a.score_features(x), b.score_features(x))
    assert not np.allclose(a.score_features(x), c.score_features(x))
    assert a.clone().get_params() == a.get_params() and a.clone().name == "partcrop-v2"


@pytest.fixture(scope="module")
def tiny_target():
    """An untrained resnet-tiny (width 8) and 12 synthetic images: a cheap target."""
    from leakprobe.data.synthetic import make_synthetic
    from leakprobe.models import create_model
    from leakprobe.targets.encoder import ModuleEncoder

    torch.manual_seed(0)
    images = make_synthetic(12, 32, seed=0).images
    model = create_model("resnet-tiny", width=8).eval()
    return ModuleEncoder(model, device="cpu"), images


def test_partcrop_v2_shares_partcrops_queries_and_cache_entry(tiny_target, tmp_path):
    target, images = tiny_target
    v1, v2 = PartCrop(num_parts=4), PartCropV2(num_parts=4)
    assert v1.query_requests(target) == v2.query_requests(target)
    assert build_plan([v1, v2], target, 12).queries_per_image == 5  # the parts, paid once
    ids = [str(i) for i in range(12)]
    cache = FeatureCache(tmp_path, {"target": "tiny"})
    first = PlanRunner([v1], target, images, ids=ids, order=0, cache=cache).features(v1)
    q0 = target.queries
    again = PlanRunner([v2], target, images, ids=ids, order=0, cache=cache).features(v2)
    assert target.queries == q0 and cache.hits == 1  # partcrop's entry, no query
    assert np.array_equal(first, again)
    assert PartCropV2(similarity="cosine", temperature=0.1).name == "partcrop-v2-cosine"
    assert PartCropV2(num_parts=8).features_key() != v2.features_key()


def test_partcrop_v2_is_a_partcrop_variant_and_not_in_all():
    assert "partcrop-v2" in expand_attack_names("partcrop-variants")
    assert "partcrop-v2" not in expand_attack_names("all")
    assert isinstance(create_attack("partcrop-v2"), PartCropV2)
    # needs tokens: an alias runs partcrop-pooled in its place, its name is refused
    assert expand_attack_names("partcrop-variants", "no tokens") == ["partcrop-pooled"]
    with pytest.raises(LeakprobeError, match="attack 'partcrop-v2'.*use partcrop-pooled"):
        expand_attack_names("partcrop-v2", "no tokens")
