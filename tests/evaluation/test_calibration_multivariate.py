"""Multivariate LiRA: LiRA for one statistic, better with several, at chance on the null."""

from __future__ import annotations

import numpy as np
import pytest

from leakprobe.evaluation import calibration
from leakprobe.evaluation.metrics import auc

SIGNS = np.array([1.0, -1.0, 0.0])  # the noise statistic's direction unknown: left out


def _world(n: int = 3000, r: int = 8, effect: float = 0.2, rho: float = 0.3, seed: int = 0,
           online: bool = False, m: int = 1000):
    """Three statistics per sample and model: per-sample difficulty + member shift + noise.

    Statistics 0 and 1 shift with membership (1 up, in units of 10 and downwards) and share
    part of their model noise (correlation ``rho``); statistic 2 has no shift and a model
    noise seven times larger: it disagrees across references. Returns the candidates' target
    and reference statistics, the references' IN mask, the labels, and the population
    samples' reference statistics and IN mask (for :func:`calibration.estimate_shift`).
    """
    rng = np.random.default_rng(seed)
    shift = np.array([effect, -10 * effect, 0.0])
    scale = np.array([0.3, 3.0, 2.0])

    def stats(difficulty: np.ndarray, trained: np.ndarray) -> np.ndarray:
        shared = rng.normal(0, 1, trained.shape)[..., None]
        own = rng.normal(0, 1, (*trained.shape, 3))
        noise = np.sqrt(rho) * shared + np.sqrt(1 - rho) * own
        noise[..., 2] = own[..., 2]
        return difficulty + shift * trained[..., None] + scale * noise

    difficulty = rng.normal(0, 1, (n, 3)) * np.array([1.0, 10.0, 1.0])
    member = np.zeros(n, bool)
    member[rng.permutation(n)[: n // 2]] = True
    target = stats(difficulty, member)
    ref_in = rng.random((r, n)) < 0.5 if online else np.zeros((r, n), bool)
    refs = stats(difficulty[None], ref_in)
    pop_in = rng.random((r, m)) < 0.5
    pop_refs = stats(rng.normal(0, 1, (m, 3)) * np.array([1.0, 10.0, 1.0])[None], pop_in)
    return target, refs, ref_in, member, pop_refs, pop_in


def _univariate_aucs(target, refs, ref_in, member, online: bool = False) -> list[float]:
    if online:
        return [auc(calibration.lira_online(target[:, k], refs[:, :, k], ref_in), member)
                for k in range(2)]
    return [auc(calibration.lira_offline(target[:, k], refs[:, :, k], ~ref_in, int(SIGNS[k])),
                member) for k in range(2)]


@pytest.mark.parametrize("r", [8, 40])  # pooled std; per-sample std (>= PER_SAMPLE_VARIANCE_MIN)
@pytest.mark.parametrize("direction", [1, -1])
def test_one_statistic_equals_univariate_lira(r: int, direction: int) -> None:
    rng = np.random.default_rng(r)
    n = 400
    target = rng.normal(0, 1, (n, 1))
    refs = rng.normal(0, 1, (1, n, 1)) + rng.gamma(2.0, 1.0, (1, n, 1)) * rng.normal(0, 1,
                                                                                    (r, n, 1))
    out = np.ones((r, n), bool) if r >= calibration.PER_SAMPLE_VARIANCE_MIN \
        else rng.random((r, n)) < 0.5
    out[0] = True
    multi = calibration.lira_offline_multivariate(target, refs, out, np.array([direction]))
    uni = calibration.lira_offline(target[:, 0], refs[:, :, 0], out, direction)
    np.testing.assert_allclose(multi, uni, rtol=1e-12, atol=1e-12)
    ref_in = ~out
    ref_in[1] = True  # both sides present somewhere
    multi = calibration.lira_online_multivariate(target, refs, ref_in)
    uni = calibration.lira_online(target[:, 0], refs[:, :, 0], ref_in)
    np.testing.assert_allclose(multi, uni, rtol=1e-12, atol=1e-12)


def test_full_shrinkage_is_the_normalised_sum_of_z_scores() -> None:
    target, refs, ref_in, *_ = _world(n=300)
    d = np.array([1.0, -1.0, 1.0])
    multi = calibration.lira_offline_multivariate(target, refs, ~ref_in, d, shrinkage=1.0)
    z = [calibration.lira_offline(target[:, k], refs[:, :, k], ~ref_in, 1) for k in range(3)]
    np.testing.assert_allclose(multi, (z[0] - z[1] + z[2]) / np.sqrt(3))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_offline_multivariate_beats_the_best_statistic(seed: int) -> None:
    target, refs, ref_in, member, pop_refs, pop_in = _world(seed=seed)
    best = max(_univariate_aucs(target, refs, ref_in, member))
    signs = calibration.lira_offline_multivariate(target, refs, ~ref_in, SIGNS)
    shift = calibration.estimate_shift(pop_refs, pop_in)
    assert abs(shift[2]) < 0.2 * min(abs(shift[0]), abs(shift[1]))  # the noise statistic
    assert np.sign(shift[:2]).tolist() == [1.0, -1.0]
    weighted = calibration.lira_offline_multivariate(target, refs, ~ref_in, shift)
    assert auc(signs, member) >= best + 0.04  # +0.08 to +0.10 over seeds 0-19
    assert auc(weighted, member) >= best + 0.04
    # With signs only, the noise statistic would count as much as the others and cost power;
    # the references' estimated shift gives it (almost) no weight.
    all_signs = calibration.lira_offline_multivariate(target, refs, ~ref_in,
                                                      np.array([1.0, -1.0, 1.0]))
    assert auc(weighted, member) >= auc(all_signs, member) + 0.01  # +0.02 to +0.04


@pytest.mark.parametrize("seed", [0, 1])
def test_online_multivariate_beats_the_best_statistic(seed: int) -> None:
    target, refs, ref_in, member, *_ = _world(seed=seed, online=True, r=16)
    best = max(_univariate_aucs(target, refs, ref_in, member, online=True))
    online = calibration.lira_online_multivariate(target, refs, ref_in)
    assert auc(online, member) >= best + 0.03  # +0.07 to +0.09 over seeds 0-19


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_multivariate_stays_at_chance_without_membership(seed: int) -> None:
    target, refs, ref_in, member, pop_refs, pop_in = _world(effect=0.0, seed=seed)
    for d in (SIGNS, np.array([1.0, 1.0, 1.0]), calibration.estimate_shift(pop_refs, pop_in)):
        scores = calibration.lira_offline_multivariate(target, refs, ~ref_in, d)
        assert abs(auc(scores, member) - 0.5) < 0.04
    target, refs, ref_in, member, *_ = _world(effect=0.0, seed=seed, online=True)
    assert abs(auc(calibration.lira_online_multivariate(target, refs, ref_in), member)
               - 0.5) < 0.04


def test_degenerate_statistics_give_finite_scores() -> None:
    target, refs, ref_in, member, *_ = _world(n=500)
    base = target[:, :1]
    # a constant statistic, and a copy of statistic 0 (singular correlation)
    t = np.column_stack([base, np.full(len(base), 3.0), base])
    rs = np.concatenate([refs[:, :, :1], np.full(refs[:, :, :1].shape, 3.0), refs[:, :, :1]],
                        axis=2)
    d = np.array([1.0, 1.0, 1.0])
    scores = calibration.lira_offline_multivariate(t, rs, ~ref_in, d)
    assert np.isfinite(scores).all()
    uni = calibration.lira_offline(base[:, 0], refs[:, :, 0], ~ref_in, 1)
    assert np.corrcoef(scores, uni)[0, 1] > 0.9999  # the copy and the constant add nothing
    online_in = ref_in.copy()
    online_in[: refs.shape[0] // 2] = True
    assert np.isfinite(calibration.lira_online_multivariate(t, rs, online_in)).all()
    # NaNs: a reference value, a target value, a whole sample; one reference only
    t[0, 0] = np.nan
    t[1] = np.nan
    rs[2, 5, 0] = np.nan
    rs[:, 6, 1] = np.nan
    scores = calibration.lira_offline_multivariate(t, rs, ~ref_in, d)
    assert np.isfinite(scores).all() and scores[1] == 0.0
    assert np.isfinite(calibration.lira_online_multivariate(t, rs, online_in)).all()
    one = calibration.lira_offline_multivariate(target, refs[:1], ~ref_in[:1], SIGNS)
    assert np.isfinite(one).all()


def test_a_missing_target_statistic_scores_on_the_others() -> None:
    target, refs, ref_in, *_ = _world(n=300)
    target[7, 1] = np.nan
    scores = calibration.lira_offline_multivariate(target, refs, ~ref_in, SIGNS)
    uni = calibration.lira_offline(target[:, 0], refs[:, :, 0], ~ref_in, 1)
    assert scores[7] == pytest.approx(uni[7])  # the Gaussian's marginal on statistic 0
    assert np.isfinite(scores).all()


def test_shape_errors_say_what_is_wrong() -> None:
    target, refs, ref_in, *_ = _world(n=50)
    out = ~ref_in
    f = calibration.lira_offline_multivariate
    with pytest.raises(ValueError, match=r"target must be \(N, K\)"):
        f(target[:, 0], refs, out, SIGNS)
    with pytest.raises(ValueError, match=r"references must be \(R, N, K\) = \(R, 50, 3\)"):
        f(target, refs[:, :40], out, SIGNS)
    with pytest.raises(ValueError, match=r"references must be"):
        f(target, refs[:, :, 0], out, SIGNS)
    with pytest.raises(ValueError, match=r"out_mask must be \(R, N\) = \(8, 50\)"):
        f(target, refs, out[:, :10], SIGNS)
    with pytest.raises(ValueError, match=r"directions must be \(3,\)"):
        f(target, refs, out, SIGNS[:2])
    with pytest.raises(ValueError, match="nonzero direction"):
        f(target, refs, out, np.zeros(3))
    with pytest.raises(ValueError, match="shrinkage must be in"):
        f(target, refs, out, SIGNS, shrinkage=1.5)
    out[:, 3] = False
    with pytest.raises(ValueError, match="at least one OUT reference"):
        f(target, refs, out, SIGNS)
    with pytest.raises(ValueError, match=r"in_mask must be \(R, N\)"):
        calibration.lira_online_multivariate(target, refs, ref_in[:2])
    with pytest.raises(ValueError, match="both IN and OUT"):
        calibration.lira_online_multivariate(target, refs, np.zeros_like(ref_in))
    with pytest.raises(ValueError, match=r"population_refs must be \(R, M, K\)"):
        calibration.estimate_shift(refs[:, :, 0], ref_in)
