"""Tests of leakprobe.evaluation.metrics."""

from __future__ import annotations

import json
from statistics import NormalDist

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from leakprobe.errors import LeakprobeError
from leakprobe.evaluation import metrics as M


def _random(n: int = 400, seed: int = 0, levels: int | None = None, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.45
    s = rng.normal(size=n) if levels is None else rng.integers(0, levels, size=n).astype(float)
    return s + shift * y, y


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_with_ties(seed: int) -> None:
    s, y = _random(seed=seed, levels=7, shift=0.8 * (seed % 2))
    assert M.auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_roc_curve_matches_sklearn_and_starts_at_origin() -> None:
    s, y = _random(seed=3, levels=12, shift=1.0)
    fpr, tpr, thr = M.roc_curve(s, y)
    sk_fpr, sk_tpr, _ = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert thr[0] == np.inf and np.all(np.diff(thr) < 0)


def test_perfect_separation_and_inversion() -> None:
    y = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    s = np.r_[np.linspace(1, 2, 50), np.linspace(-2, 0, 50)]
    assert M.auc(s, y) == 1.0
    assert M.auc(-s, y) == 0.0
    assert M.tpr_at_fpr(s, y, 0.0) == 1.0
    assert M.balanced_accuracy_best(s, y) == 1.0
    assert M.balanced_accuracy_crossfit(s, y, np.arange(100) % 5) == 1.0


def test_all_tied_scores_auc_half() -> None:
    y = np.r_[np.ones(5, bool), np.zeros(7, bool)]
    assert M.auc(np.zeros(12), y) == 0.5
    assert M.tpr_at_fpr(np.zeros(12), y, 0.5) == 0.0


def test_tpr_at_fpr_hand_made() -> None:
    # members: 10, 9, 5, 3; non-members: 8, 4, 2, 1, 0 (n0 = 5)
    s = np.array([10, 9, 5, 3, 8, 4, 2, 1, 0], dtype=float)
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    # k = floor(f * (n0 + 1)) - 1 audit false positives (at least 0): the (k+1)-th largest
    # non-member is the threshold, members strictly above it count.
    assert M.tpr_at_fpr(s, y, 0.0) == 0.5  # k = 0: above 8 -> 10, 9
    assert M.tpr_at_fpr(s, y, 0.1) == 0.5  # floor(0.6) - 1 < 0 -> k = 0
    assert M.tpr_at_fpr(s, y, 0.2) == 0.5  # floor(1.2) - 1 = 0 (the old rule took 1 FP)
    assert M.tpr_at_fpr(s, y, 0.4) == 0.75  # k = 1: above 4 -> 10, 9, 5
    assert M.tpr_at_fpr(s, y, 0.5) == 1.0  # k = 2: above 2 -> all
    assert M.tpr_at_fpr(s, y, 1.0) == 1.0


def test_tpr_at_fpr_tie_with_nonmember_is_not_counted() -> None:
    # A member tied with the top non-member cannot be taken without that false positive.
    s = np.array([5.0, 3.0, 3.0, 1.0])
    y = np.array([True, True, False, False])
    assert M.tpr_at_fpr(s, y, 0.0) == 0.5
    assert M.tpr_at_fpr(s, y, 0.5) == 0.5  # floor(1.5) - 1 = 0 false positives
    assert M.tpr_at_fpr(s, y, 2 / 3) == 1.0  # floor(2.0) - 1 = 1


def test_tpr_at_fpr_matches_roc_brute_force() -> None:
    s, y = _random(n=300, seed=7, levels=15, shift=2.0)
    fpr, tpr, _ = M.roc_curve(s, y)
    n0 = int((~y).sum())
    for level in (0.0, 0.001, 0.01, 0.05, 0.1, 0.3):
        allowed = max(0.0, np.floor(level * (n0 + 1) + 1e-9) - 1) / n0
        assert M.tpr_at_fpr(s, y, level) == pytest.approx(tpr[fpr <= allowed + 1e-12].max())


def test_bootstrap_reproducible_and_contains_estimate() -> None:
    s, y = _random(n=300, seed=1, shift=0.7)
    a = M.bootstrap_ci(s, y, n_bootstrap=300, seed=4)
    b = M.bootstrap_ci(s, y, n_bootstrap=300, seed=4)
    c = M.bootstrap_ci(s, y, n_bootstrap=300, seed=5)
    assert a == b
    assert a != c
    lo, hi = a["auc"]
    assert lo < M.auc(s, y) < hi
    lo, hi = a["tpr_at_fpr"]["0.1"]
    assert lo <= M.tpr_at_fpr(s, y, 0.1) <= hi


def test_bootstrap_replicates_match_direct_computation() -> None:
    s, y = _random(n=120, seed=2, levels=9, shift=1.0)
    fprs = [0.1, 0.02, 0.0]
    auc_reps, tpr_reps = M._bootstrap_replicates(s, y, fprs, 40, seed=11)
    pos, neg = s[y], s[~y]
    rng = np.random.default_rng(11)
    i1 = rng.integers(0, pos.size, size=(40, pos.size))
    i0 = rng.integers(0, neg.size, size=(40, neg.size))
    labels = np.r_[np.ones(pos.size, bool), np.zeros(neg.size, bool)]
    # TPR replicates: resampled members above the threshold at FPR u ~ Beta(k+1, n0-k), the
    # j-th largest non-member sitting at FPR j / (n0 + 1), linear in between.
    u_rng = np.random.default_rng([11, 1])
    neg_desc = np.sort(neg)[::-1]
    n0 = neg.size
    for j, level in enumerate(fprs):
        k = max(0, int(np.floor(level * (n0 + 1) + 1e-9)) - 1)
        u = u_rng.beta(k + 1, n0 - k, size=40)
        t = np.interp(u * (n0 + 1) - 1, np.arange(n0), neg_desc)
        for r in range(40):
            assert tpr_reps[j, r] == np.mean(pos[i1[r]] > t[r])
    for r in range(40):
        rs = np.r_[pos[i1[r]], neg[i0[r]]]
        assert auc_reps[r] == pytest.approx(roc_auc_score(labels, rs), abs=1e-12)


def test_chance_scores_ci_contains_half_and_crossfit_near_half() -> None:
    s, y = _random(n=2000, seed=8)
    m = M.compute_metrics(s, y, folds=np.arange(s.size) % 5, n_bootstrap=500, seed=0)
    lo, hi = m["auc_ci"]
    assert lo <= 0.5 <= hi
    assert abs(m["balanced_accuracy"] - 0.5) < 0.04
    assert m["balanced_accuracy_best"] >= m["balanced_accuracy"]
    # Fallback 2-way split (no folds / one fold) is seeded and also near chance.
    a = M.balanced_accuracy_crossfit(s, y, None, seed=3)
    assert a == M.balanced_accuracy_crossfit(s, y, np.zeros(s.size), seed=3)
    assert abs(a - 0.5) < 0.05


def test_crossfit_detects_signal() -> None:
    s, y = _random(n=600, seed=9, shift=2.0)
    assert M.balanced_accuracy_crossfit(s, y, np.arange(600) % 4) > 0.75


def test_compute_metrics_keys_and_json() -> None:
    s, y = _random(n=200, seed=5, shift=1.0)
    m = M.compute_metrics(s, y.astype(int), n_bootstrap=100)
    assert set(m) >= {  # the leakage test adds its own keys
        "auc",
        "auc_ci",
        "balanced_accuracy",
        "balanced_accuracy_best",
        "tpr_at_fpr",
        "tpr_at_fpr_ci",
        "fpr_achieved",
        "fpr_expected",
        "n_members",
        "n_nonmembers",
        "min_resolvable_fpr",
    }
    for key in ("tpr_at_fpr", "tpr_at_fpr_ci", "fpr_achieved", "fpr_expected"):
        assert list(m[key]) == ["0.1", "0.01", "0.001"]
    assert m["n_members"] + m["n_nonmembers"] == 200
    assert m["min_resolvable_fpr"] == 10.0 / m["n_nonmembers"]
    # 200 samples, about 110 non-members: only 10% FPR is resolvable (n0 * f >= 10)
    assert m["n_nonmembers"] >= 100 and type(m["tpr_at_fpr"]["0.1"]) is float
    assert m["tpr_at_fpr"]["0.01"] is None and m["tpr_at_fpr_ci"]["0.001"] is None
    assert type(m["auc"]) is float and type(m["n_members"]) is int
    assert all(type(v) is float for v in m["auc_ci"])
    json.dumps(m, allow_nan=False)


@pytest.mark.parametrize(
    ("scores", "labels", "match"),
    [
        ([0.1, np.nan, 0.3], [1, 0, 1], "not finite"),
        ([0.1, np.inf, 0.3], [1, 0, 1], "not finite"),
        ([0.1, 0.2], [1, 0, 1], "differ in length"),
        ([0.1, 0.2, 0.3], [1, 1, 1], "both members and non-members"),
        ([0.1, 0.2, 0.3], [0, 0, 0], "both members and non-members"),
        ([0.1, 0.2, 0.3], [0, 2, 1], "0/1"),
    ],
)
def test_invalid_input(scores, labels, match) -> None:
    with pytest.raises(LeakprobeError, match=match):
        M.compute_metrics(scores, labels, n_bootstrap=10)


def test_roc_points_downsampled() -> None:
    s, y = _random(n=3000, seed=6, shift=0.5)
    pts = M.roc_points(s, y, max_points=100)
    assert 2 < len(pts["fpr"]) <= 100 and len(pts["fpr"]) == len(pts["tpr"])
    assert pts["fpr"][0] == 0.0 and pts["tpr"][0] == 0.0
    assert pts["fpr"][-1] == 1.0 and pts["tpr"][-1] == 1.0
    assert np.all(np.diff(pts["fpr"]) >= 0)
    small = M.roc_points([0.3, 0.1, 0.2], [True, False, True])
    assert small == {"fpr": [0.0, 0.0, 0.0, 1.0], "tpr": [0.0, 0.5, 1.0, 1.0]}


def test_resolvable_needs_ten_expected_false_positives() -> None:
    assert M.MIN_NONMEMBER_FALSE_POSITIVES == 10
    assert M.resolvable(0.1, 100) and not M.resolvable(0.1, 99)
    assert M.resolvable(0.01, 1000) and not M.resolvable(0.01, 999)
    assert M.resolvable(0.001, 10_000) and not M.resolvable(0.001, 9_999)
    assert not M.resolvable(0.0, 10**9)
    with pytest.raises(LeakprobeError, match="FPR level"):
        M.resolvable(1.5, 100)


@pytest.mark.parametrize("n0", [99, 100, 999, 1000])
def test_tpr_is_null_where_n0_times_fpr_below_ten(n0: int) -> None:
    rng = np.random.default_rng(n0)
    s = np.r_[rng.normal(1.0, 1.0, 300), rng.normal(0.0, 1.0, n0)]
    y = np.r_[np.ones(300, bool), np.zeros(n0, bool)]
    m = M.compute_metrics(s, y, n_bootstrap=50, seed=1)
    for key, f in (("0.1", 0.1), ("0.01", 0.01), ("0.001", 0.001)):
        if n0 * f < 10:
            for part in ("tpr_at_fpr", "tpr_at_fpr_ci", "fpr_achieved", "fpr_expected"):
                assert m[part][key] is None, (part, key)
        else:
            assert m["tpr_at_fpr"][key] == M.tpr_at_fpr(s, y, f)
            lo, hi = m["tpr_at_fpr_ci"][key]
            assert 0.0 <= lo <= hi <= 1.0
    assert m["min_resolvable_fpr"] == 10 / n0
    json.dumps(m, allow_nan=False)


def test_fpr_achieved_and_expected() -> None:
    rng = np.random.default_rng(3)
    n0 = 1000
    s = np.r_[rng.normal(1.5, 1.0, 500), rng.normal(0.0, 1.0, n0)]
    y = np.r_[np.ones(500, bool), np.zeros(n0, bool)]
    m = M.compute_metrics(s, y, n_bootstrap=50)
    # f = 1%: k = floor(0.01 * 1001) - 1 = 9 audit false positives, threshold the 10th largest
    assert m["fpr_achieved"]["0.01"] == 9 / n0
    assert m["fpr_expected"]["0.01"] == 10 / (n0 + 1)
    tenth = np.sort(s[~y])[-10]
    assert m["tpr_at_fpr"]["0.01"] == np.mean(s[y] > tenth)
    assert m["fpr_achieved"]["0.1"] == 99 / n0 and m["fpr_expected"]["0.1"] == 100 / (n0 + 1)
    # ties at the threshold: fewer audit non-members lie strictly above it
    s_tied = np.round(s, 1)
    m_tied = M.compute_metrics(s_tied, y, n_bootstrap=50)
    t = np.sort(s_tied[~y])[-10]
    assert m_tied["fpr_achieved"]["0.01"] == np.mean(s_tied[~y] > t) <= 9 / n0


def test_tpr_at_low_fpr_is_unbiased_and_its_interval_covers() -> None:
    # Gaussian non-members N(0, 1), members N(1.5, 1): the true TPR at FPR f is
    # 1 - Phi(Phi^-1(1 - f) - 1.5). Resolvable audits (n0 * f = 10) with few non-members.
    nd = NormalDist()
    shift, f, n0, n1, audits = 1.5, 0.05, 200, 400, 250
    truth = 1.0 - nd.cdf(nd.inv_cdf(1.0 - f) - shift)
    rng = np.random.default_rng(2024)
    y = np.r_[np.ones(n1, bool), np.zeros(n0, bool)]
    estimates, covered, threshold_fpr = [], 0, []
    for a in range(audits):
        s = np.r_[rng.normal(shift, 1.0, n1), rng.normal(0.0, 1.0, n0)]
        tpr, t, achieved, expected = M._tpr_point(s, y, f)
        assert achieved == 9 / n0 and expected == 10 / (n0 + 1)
        lo, hi = M.bootstrap_ci(s, y, fprs=[f], n_bootstrap=200, seed=a)["tpr_at_fpr"]["0.05"]
        estimates.append(tpr)
        covered += lo <= truth <= hi
        threshold_fpr.append(1.0 - nd.cdf(t))  # the threshold's FPR on fresh non-members
    # The threshold admits at most f of new non-members on average (the old rule, floor(f n0)
    # audit false positives, admitted (floor(f n0) + 1) / (n0 + 1) = 0.0547 here).
    assert np.mean(threshold_fpr) <= f + 0.002
    assert abs(np.mean(estimates) - truth) < 0.015
    assert covered / audits >= 0.92
