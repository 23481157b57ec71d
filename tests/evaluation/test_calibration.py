"""Calibration against reference models, on a setting where per-sample difficulty is known."""

from __future__ import annotations

import numpy as np
import pytest

from leakprobe.evaluation import calibration
from leakprobe.evaluation.metrics import auc, tpr_at_fpr


def _world(n: int = 2000, r: int = 8, effect: float = 0.5, seed: int = 0, online: bool = False):
    """Statistic = per-sample difficulty (spread 1) + effect if trained on + model noise 0.1.

    Some samples are "easy" for every model (high difficulty): a global threshold flags them
    as members; only comparing each sample with its own reference statistics removes that.
    """
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 1, n)
    member = np.zeros(n, bool)
    member[rng.permutation(n)[: n // 2]] = True
    target = difficulty + effect * member + rng.normal(0, 0.1, n)
    ref_in = rng.random((r, n)) < 0.5 if online else np.zeros((r, n), bool)
    refs = difficulty[None] + effect * ref_in + rng.normal(0, 0.1, (r, n))
    m = 1000  # population samples (references trained on about half of each)
    pop_difficulty = rng.normal(0, 1, m)
    pop_in = rng.random((r, m)) < 0.5
    pop_refs = pop_difficulty[None] + effect * pop_in + rng.normal(0, 0.1, (r, m))
    pop_target = pop_difficulty + rng.normal(0, 0.1, m)  # the target never saw them
    return target, refs, ref_in, member, pop_target, pop_refs, pop_in


def _tpr(scores, member, fpr=0.01):
    return tpr_at_fpr(scores, member, fpr)


def test_offline_lira_lifts_low_fpr_over_a_global_threshold() -> None:
    target, refs, ref_in, member, *_ = _world()
    raw = _tpr(target, member)
    lira = calibration.lira_offline(target, refs, ~ref_in, direction=1)
    assert _tpr(lira, member) >= max(2 * raw, 0.5)
    assert auc(lira, member) > auc(target, member)


def test_online_lira_and_rmia_lift_low_fpr() -> None:
    target, refs, ref_in, member, pop_target, pop_refs, pop_in = _world(online=True)
    raw = _tpr(target, member)
    online = calibration.lira_online(target, refs, ref_in)
    assert _tpr(online, member) >= max(2 * raw, 0.5)
    p = calibration.likelihood
    rmia = calibration.rmia_scores(p(target, pop_target, 1), p(refs, pop_refs, 1), None,
                                   p(pop_target, pop_target, 1), p(pop_refs, pop_refs, 1))
    assert auc(rmia, member) > auc(target, member) + 0.1
    assert _tpr(rmia, member) >= 2 * raw


def test_offline_rmia_with_tuned_a() -> None:
    target, refs, ref_in, member, pop_target, pop_refs, pop_in = _world()
    p = calibration.likelihood
    pz_refs = p(pop_refs, pop_refs, 1)
    a = calibration.tune_rmia_a(pz_refs, pop_in)
    assert a in calibration.RMIA_A_GRID
    rmia = calibration.rmia_scores(p(target, pop_target, 1), p(refs, pop_refs, 1), ~ref_in,
                                   p(pop_target, pop_target, 1), pz_refs, a=a)
    assert _tpr(rmia, member) >= 2 * _tpr(target, member)
    assert rmia.min() >= 0 and rmia.max() <= 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_calibration_stays_at_chance_without_membership(seed: int) -> None:
    target, refs, ref_in, member, pop_target, pop_refs, pop_in = _world(effect=0.0, seed=seed)
    lira = calibration.lira_offline(target, refs, ~ref_in, direction=1)
    assert abs(auc(lira, member) - 0.5) < 0.04
    p = calibration.likelihood
    rmia = calibration.rmia_scores(p(target, pop_target, 1), p(refs, pop_refs, 1), ~ref_in,
                                   p(pop_target, pop_target, 1), p(pop_refs, pop_refs, 1))
    assert abs(auc(rmia, member) - 0.5) < 0.04


def test_direction_comes_from_the_references_own_members() -> None:
    *_, pop_refs, pop_in = _world()
    assert calibration.estimate_direction(pop_refs, pop_in) == 1
    assert calibration.estimate_direction(-pop_refs, pop_in) == -1


def test_per_sample_variance_only_with_many_references() -> None:
    rng = np.random.default_rng(0)
    stats = rng.normal(0, 1, (4, 10))
    _, std = calibration._side(stats, np.ones((4, 10)))
    assert np.allclose(std, std[0])  # pooled
    stats = rng.normal(0, 1, (40, 10)) * np.arange(1, 11)
    _, std = calibration._side(stats, np.ones((40, 10)))
    assert std[-1] > 5 * std[0]  # per sample
