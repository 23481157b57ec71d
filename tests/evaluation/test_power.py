"""The detectable AUC (power of the "no leakage" test) and the corrections for many attacks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, norm

from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.multiplicity import holm_adjusted, step_down_max_t
from leakprobe.evaluation.power import auc_sd_alternative, auc_sd_null, detectable_auc


def test_hand_checked_values() -> None:
    # 100 + 100: null sd = sqrt(201 / 120000) = 0.040927; at power 1/2 the alternative's
    # spread drops out: A = 0.5 + z(0.95) sd0 = 0.5 + 1.644854 * 0.040927 = 0.567319
    assert auc_sd_null(n_members=100, n_nonmembers=100) == pytest.approx(0.0409268, abs=1e-7)
    assert detectable_auc(n_members=100, n_nonmembers=100, alpha=0.05,
                          power=0.5) == pytest.approx(0.567319, abs=1e-5)
    # Hanley & McNeil (1982), A = 0.8: Q1 = 0.8/1.2, Q2 = 1.28/1.8
    a, q1, q2 = 0.8, 0.8 / 1.2, 1.28 / 1.8
    var = (a * (1 - a) + 49 * (q1 - a * a) + 49 * (q2 - a * a)) / 2500
    assert auc_sd_alternative(0.8, n_members=50, n_nonmembers=50) == pytest.approx(
        math.sqrt(var))
    # at power 0.8 the root solves A - 0.5 = z(1-alpha) sd0 + z(0.8) sd1(A)
    a = detectable_auc(n_members=300, n_nonmembers=300, alpha=0.05 / 9)
    sd1 = auc_sd_alternative(a, n_members=300, n_nonmembers=300)
    assert a - 0.5 == pytest.approx(norm.ppf(1 - 0.05 / 9) * auc_sd_null(
        n_members=300, n_nonmembers=300) + norm.ppf(0.8) * sd1, abs=1e-8)


def test_the_detectable_auc_shrinks_with_more_images_and_grows_with_stricter_tests() -> None:
    small = detectable_auc(n_members=64, n_nonmembers=64, alpha=0.05)
    large = detectable_auc(n_members=1000, n_nonmembers=1000, alpha=0.05)
    strict = detectable_auc(n_members=64, n_nonmembers=64, alpha=0.05 / 9)
    assert 0.5 < large < small < strict < 1.0
    assert detectable_auc(n_members=2, n_nonmembers=2, alpha=0.001) == 1.0  # hopeless
    with pytest.raises(LeakprobeError, match="alpha"):
        detectable_auc(n_members=10, n_nonmembers=10, alpha=0.0)
    with pytest.raises(LeakprobeError, match="at least one member"):
        detectable_auc(n_members=0, n_nonmembers=10, alpha=0.05)


@pytest.mark.parametrize("n1, n0, alpha", [(150, 150, 0.05), (64, 64, 0.05 / 9),
                                            (100, 400, 0.01)])
def test_simulated_audits_at_the_detectable_auc_reject_with_the_asked_power(
        n1: int, n0: int, alpha: float) -> None:
    """400 simulated audits with binormal scores of exactly that AUC (equal variances:
    AUC = Phi(d / sqrt(2))): the one-sided Mann-Whitney test rejects about 80% of them."""
    a = detectable_auc(n_members=n1, n_nonmembers=n0, alpha=alpha, power=0.8)
    d = math.sqrt(2.0) * norm.ppf(a)
    rng = np.random.default_rng(7)
    members = rng.normal(size=(400, n1)) + d
    nonmembers = rng.normal(size=(400, n0))
    p = mannwhitneyu(members, nonmembers, alternative="greater", axis=1,
                     method="asymptotic").pvalue
    assert abs(np.mean(p <= alpha) - 0.8) <= 0.06  # binomial sd 0.02


def test_holm_hand_checked() -> None:
    assert holm_adjusted([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm_adjusted([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    with pytest.raises(LeakprobeError):
        holm_adjusted([0.1, float("nan")])


def test_step_down_max_t_hand_checked() -> None:
    # B = 4 permutations of 2 attacks; attack a (0.9) against the max of both rows,
    # attack b (0.62) against its own row only (a is rejected first)
    null = [[0.5, 0.6, 0.55, 0.4], [0.65, 0.5, 0.45, 0.61]]
    adjusted = step_down_max_t([0.9, 0.62], null)
    assert adjusted == pytest.approx([1 / 5, 2 / 5])  # b: (1 + #{0.65 >= 0.62}) / 5
    # monotone: a weaker attack never gets a smaller adjusted p than a stronger one
    assert step_down_max_t([0.6, 0.9], [[0.1] * 4, [0.95] * 4]) == pytest.approx([1.0, 1.0])
    with pytest.raises(LeakprobeError):
        step_down_max_t([0.6, 0.7], [[0.5, 0.5], [0.5]])
