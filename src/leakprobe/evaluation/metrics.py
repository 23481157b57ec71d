"""Membership-inference metrics: ROC, AUC, TPR at fixed FPR, balanced accuracy, bootstrap CIs.

Conventions used throughout:

* ``scores``: one finite number per sample, **higher = more likely a member**.
* ``is_member``: one boolean per sample (0/1 integers are accepted).
* A threshold ``t`` predicts "member" for ``score >= t`` (ROC) or ``score > t`` (TPR at FPR);
  ties between a member and a non-member count one half in the AUC.
* TPR at FPR ``f``: the threshold is the ``(k+1)``-th largest non-member score with
  ``k = floor(f * (n0 + 1)) - 1``, so that on fresh non-members it admits in expectation
  ``(k+1) / (n0+1) <= f`` of them (see :func:`tpr_at_fpr`). An audit resolves ``f`` only when
  ``n0 * f >= MIN_NONMEMBER_FALSE_POSITIVES`` (10, see :func:`resolvable`);
  :func:`compute_metrics` reports ``None`` elsewhere.

Everything is vectorised with numpy; bootstrap replicates are processed as matrices in a few
memory-bounded chunks, never one replicate at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.permutation import (
    auc_interval,
    mann_whitney_p,
    null_band,
    permutation_p,
)

__all__ = [
    "auc",
    "balanced_accuracy_best",
    "balanced_accuracy_crossfit",
    "bootstrap_ci",
    "compute_metrics",
    "fpr_key",
    "resolvable",
    "roc_curve",
    "roc_points",
    "tpr_at_fpr",
]

DEFAULT_FPRS: tuple[float, ...] = (0.1, 0.01, 0.001)
# An FPR level f is reported only when the audit's non-members would hold at least this many
# false positives at f (n0 * f >= 10); below that the threshold is a handful of extreme scores.
MIN_NONMEMBER_FALSE_POSITIVES = 10
# Bound on the number of array elements one bootstrap chunk allocates (per (R, n) matrix).
_CHUNK_ELEMENTS = 4_000_000


def fpr_key(fpr: float) -> str:
    """JSON key of an FPR level: ``repr(float(fpr))``, e.g. ``0.001 -> "0.001"``."""
    return repr(float(fpr))


def _as_vector(a: np.ndarray, name: str) -> np.ndarray:
    """Flatten an (N,), (N, 1) or (1, N) array to (N,); refuse anything else."""
    if a.ndim == 1:
        return a
    if a.ndim >= 1 and sum(d != 1 for d in a.shape) <= 1:
        return a.reshape(-1)
    raise LeakprobeError(f"{name} must be one-dimensional, got shape {a.shape}")


def _validate(scores: Any, is_member: Any) -> tuple[np.ndarray, np.ndarray]:
    """Check and convert inputs to a float64 score vector and a boolean label vector.

    Raises:
        LeakprobeError: on shape/length mismatch, non-finite scores, labels other than 0/1,
            or when members or non-members are missing.
    """
    s = _as_vector(np.asarray(scores, dtype=np.float64), "scores")
    y_raw = _as_vector(np.asarray(is_member), "is_member")
    if s.shape[0] != y_raw.shape[0]:
        raise LeakprobeError(
            f"scores and is_member differ in length ({s.shape[0]} vs {y_raw.shape[0]})"
        )
    if y_raw.dtype != np.bool_:
        if y_raw.size and not np.isin(y_raw, (0, 1)).all():
            raise LeakprobeError("is_member must hold booleans or 0/1 values")
        y = y_raw.astype(bool)
    else:
        y = y_raw
    bad = ~np.isfinite(s)
    if bad.any():
        n_nan = int(np.isnan(s).sum())
        raise LeakprobeError(
            f"{int(bad.sum())} of {s.size} attack scores are not finite "
            f"({n_nan} NaN, {int(bad.sum()) - n_nan} infinite); the attack produced invalid "
            "scores"
        )
    n1 = int(y.sum())
    n0 = int(y.size - n1)
    if n1 == 0 or n0 == 0:
        raise LeakprobeError(
            f"metrics need both members and non-members, got {n1} members and {n0} non-members"
        )
    return s, y


def _check_fpr(fpr: float) -> float:
    fpr = float(fpr)
    if not 0.0 <= fpr <= 1.0 or math.isnan(fpr):
        raise LeakprobeError(f"FPR level must lie in [0, 1], got {fpr}")
    return fpr


def _allowed_false_positives(fpr: float, n_nonmembers: int) -> int:
    """Audit false positives ``k`` of the TPR-at-``fpr`` threshold (the rank rule).

    The threshold is the ``(k+1)``-th largest of ``n0`` non-member scores; for continuous
    scores that order statistic's true FPR follows Beta(k+1, n0-k), with mean
    ``(k+1)/(n0+1)``. ``k = floor(fpr * (n0+1)) - 1`` is the largest ``k`` with that mean at
    most ``fpr``. Where even ``k = 0`` exceeds it (``fpr * (n0+1) < 1``) ``k`` is clamped to
    0: the TPR at zero false positives, which :func:`compute_metrics` does not report.
    """
    fpr = _check_fpr(fpr)
    # The small tolerance keeps e.g. 0.1 * 30 = 3.0000000000000004 from flooring wrongly.
    return max(0, int(math.floor(fpr * (n_nonmembers + 1) + 1e-9)) - 1)


def resolvable(fpr: float, n_nonmembers: int) -> bool:
    """Whether an audit with ``n_nonmembers`` non-members resolves the TPR at FPR ``fpr``.

    True when ``n_nonmembers * fpr >= MIN_NONMEMBER_FALSE_POSITIVES`` (10): the threshold then
    rests on at least 10 non-members above it, so its FPR on new data is near ``fpr``. E.g. the
    TPR at 0.1% FPR needs at least 10,000 non-members.
    """
    return float(n_nonmembers) * _check_fpr(fpr) + 1e-9 >= MIN_NONMEMBER_FALSE_POSITIVES


def roc_curve(scores: Any, is_member: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve with one point per distinct score (ties handled as one step).

    Args:
        scores: per-sample scores, higher = member.
        is_member: per-sample membership labels.
    Returns:
        ``(fpr, tpr, thresholds)``; point ``i`` predicts member for ``score >= thresholds[i]``.
        The first point is ``(0, 0)`` with threshold ``+inf``, the last is ``(1, 1)``;
        thresholds decrease strictly.
    """
    s, y = _validate(scores, is_member)
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    y_sorted = y[order]
    # Last index of every run of equal scores.
    ends = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s_sorted.size - 1]
    tps = np.cumsum(y_sorted)[ends]
    fps = (ends + 1) - tps
    n1, n0 = tps[-1], fps[-1]
    fpr = np.r_[0.0, fps / n0]
    tpr = np.r_[0.0, tps / n1]
    thresholds = np.r_[np.inf, s_sorted[ends]]
    return fpr, tpr, thresholds


def _auc_validated(s: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import rankdata

    ranks = rankdata(s)  # average ranks: ties count 1/2
    n1 = int(y.sum())
    n0 = y.size - n1
    u = ranks[y].sum() - n1 * (n1 + 1) / 2.0
    return float(u / (n1 * n0))


def auc(scores: Any, is_member: Any) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic.

    Args:
        scores: per-sample scores, higher = member.
        is_member: per-sample membership labels.
    Returns:
        P(member score > non-member score) + 0.5 * P(tie); equals sklearn's ``roc_auc_score``.
    """
    s, y = _validate(scores, is_member)
    return _auc_validated(s, y)


def _tpr_point(s: np.ndarray, y: np.ndarray, fpr: float) -> tuple[float, float, float, float]:
    """``(tpr, threshold, in-sample FPR, expected FPR)`` of the TPR-at-``fpr`` rank rule.

    The in-sample FPR is the fraction of the audit's non-members strictly above the threshold
    (``k / n0``, less where non-members tie with it); the expected FPR is ``(k+1)/(n0+1)``,
    what the threshold admits of fresh non-members on average.
    """
    neg = s[~y]
    pos = s[y]
    n0 = neg.size
    k = _allowed_false_positives(fpr, n0)
    if k >= n0:
        return 1.0, -math.inf, 1.0, 1.0
    # The (k+1)-th largest non-member score; members strictly above it count.
    t = float(np.partition(neg, n0 - 1 - k)[n0 - 1 - k])
    return float(np.mean(pos > t)), t, float(np.mean(neg > t)), (k + 1) / (n0 + 1)


def _tpr_at_fpr_validated(s: np.ndarray, y: np.ndarray, fpr: float) -> float:
    return _tpr_point(s, y, fpr)[0]


def tpr_at_fpr(scores: Any, is_member: Any, fpr: float) -> float:
    """TPR at a threshold chosen on the non-members so that its FPR on new data is <= ``fpr``.

    With ``n0`` non-members the threshold ``t`` is the ``(k+1)``-th largest non-member score,
    ``k = floor(fpr * (n0 + 1)) - 1``, and the TPR is the fraction of members scoring strictly
    above ``t``. For continuous scores ``t`` admits in expectation ``(k+1)/(n0+1) <= fpr`` of
    fresh non-members (the audit's own non-members see ``k / n0``, which is not the point: a
    threshold at exactly ``floor(fpr * n0)`` audit false positives admits about
    ``(floor(fpr * n0) + 1) / (n0 + 1) > fpr`` of new ones, and overstates the TPR).

    The value is returned for any ``n0``; it is meaningful only where
    :func:`resolvable` holds (``n0 * fpr >= 10``), and :func:`compute_metrics` reports ``None``
    elsewhere. When ``fpr * (n0 + 1) < 1`` the TPR at zero audit false positives is returned.

    Args:
        scores: per-sample scores, higher = member.
        is_member: per-sample membership labels.
        fpr: the FPR level in [0, 1].
    Returns:
        The TPR in [0, 1].
    """
    s, y = _validate(scores, is_member)
    return _tpr_at_fpr_validated(s, y, fpr)


def _best_threshold(s: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Threshold (predict member for ``score > t``) maximising balanced accuracy, and its BA.

    The threshold sits midway between the chosen score and the next lower distinct score so
    that it generalises symmetrically to unseen scores.
    """
    fpr, tpr, thr = roc_curve(s, y)
    ba = 0.5 * (tpr + 1.0 - fpr)
    i = int(np.argmax(ba))
    if i == 0:
        t = np.inf
    elif i == thr.size - 1:
        t = -np.inf
    else:
        t = 0.5 * (thr[i] + thr[i + 1])
    return float(t), float(ba[i])


def balanced_accuracy_best(scores: Any, is_member: Any) -> float:
    """Best balanced accuracy over all thresholds, chosen on the evaluated scores themselves.

    This is **optimistic** (the threshold is fitted to the very labels it is scored on); use
    :func:`balanced_accuracy_crossfit` for an honest number.

    Args:
        scores: per-sample scores, higher = member.
        is_member: per-sample membership labels.
    Returns:
        ``max_t (TPR(t) + TNR(t)) / 2``, always >= 0.5.
    """
    s, y = _validate(scores, is_member)
    return _best_threshold(s, y)[1]


def _balanced_accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    return float(0.5 * (np.mean(pred[y]) + np.mean(~pred[~y])))


def balanced_accuracy_crossfit(
    scores: Any, is_member: Any, folds: Any | None = None, seed: int = 0
) -> float:
    """Honest balanced accuracy: every sample is classified by a threshold chosen without it.

    For each fold ``k`` the threshold maximising balanced accuracy on the other folds'
    scores is applied to fold ``k``; the balanced accuracy of all these out-of-fold
    predictions is returned. When ``folds`` is None or holds a single fold, the samples are
    split into two halves inside (stratified by membership, seeded by ``seed``) and the same
    procedure runs on that 2-way split. If a training part lacks members or non-members, its
    threshold is the median of its scores.

    Args:
        scores: per-sample scores, higher = member.
        is_member: per-sample membership labels.
        folds: per-sample fold ids (any hashable numpy dtype), or None.
        seed: seed of the fallback 2-way split.
    Returns:
        The out-of-fold balanced accuracy in [0, 1] (about 0.5 for uninformative scores).
    """
    s, y = _validate(scores, is_member)
    f = None
    if folds is not None:
        f = np.asarray(folds).reshape(-1)
        if f.shape[0] != s.shape[0]:
            raise LeakprobeError(
                f"folds and scores differ in length ({f.shape[0]} vs {s.shape[0]})"
            )
        if np.unique(f).size < 2:
            f = None
    if f is None:
        rng = np.random.default_rng(seed)
        f = np.zeros(s.size, dtype=np.int64)
        for mask in (y, ~y):  # stratified: half of each class per fold
            idx = np.flatnonzero(mask)
            perm = rng.permutation(idx)
            f[perm[: idx.size // 2]] = 1
    pred = np.zeros(s.size, dtype=bool)
    for k in np.unique(f):
        test = f == k
        train = ~test
        s_tr, y_tr = s[train], y[train]
        if y_tr.all() or not y_tr.any():
            t = float(np.median(s_tr))
        else:
            t = _best_threshold(s_tr, y_tr)[0]
        pred[test] = s[test] > t
    return _balanced_accuracy(pred, y)


def _bootstrap_replicates(
    s: np.ndarray,
    y: np.ndarray,
    fprs: Sequence[float],
    n_bootstrap: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """AUC and TPR@FPR of stratified bootstrap replicates.

    Replicates are drawn in chunks of ``c`` (a deterministic function of the class sizes
    that bounds memory): per chunk ``rng.integers(0, n1, (c, n1))`` member indices, then
    ``rng.integers(0, n0, (c, n0))`` non-member indices, from ``np.random.default_rng(seed)``.
    Instead of re-sorting every replicate, non-member
    multiplicities are accumulated over the non-members sorted once; the number of drawn
    non-members below / equal to each member score is then a lookup in their cumulative sum.

    TPR replicate ``r`` at FPR ``f`` (rank ``k``, see :func:`tpr_at_fpr`) counts the
    replicate's resampled members above the threshold :func:`_threshold_at` gives for a
    false-positive rate ``u_r ~ Beta(k+1, n0-k)``: the exact distribution of the true FPR of
    the ``(k+1)``-th largest of ``n0`` continuous non-member scores, i.e. of the threshold
    the point estimate uses. The ``u`` are drawn per chunk, one row of ``c`` per FPR, from
    ``np.random.default_rng([seed, 1])``, so the AUC replicates do not depend on ``fprs``.

    Returns:
        ``(auc_reps (R,), tpr_reps (len(fprs), R))``.
    """
    pos = s[y]
    neg = s[~y]
    n1, n0 = pos.size, neg.size
    rng = np.random.default_rng(seed)

    neg_order = np.argsort(neg, kind="stable")
    neg_sorted = neg[neg_order]
    rank_of_neg = np.empty(n0, dtype=np.int64)
    rank_of_neg[neg_order] = np.arange(n0)
    # For each original member: non-members (sorted) strictly below, and at or below it.
    lo = np.searchsorted(neg_sorted, pos, side="left")
    hi = np.searchsorted(neg_sorted, pos, side="right")
    ks = [_allowed_false_positives(f, n0) for f in fprs]
    u_rng = np.random.default_rng([int(seed), 1])
    neg_desc = neg_sorted[::-1]

    auc_reps = np.empty(n_bootstrap, dtype=np.float64)
    tpr_reps = np.empty((len(ks), n_bootstrap), dtype=np.float64)
    chunk = max(1, _CHUNK_ELEMENTS // max(n0 + 1, n1))
    for start in range(0, n_bootstrap, chunk):
        stop = min(start + chunk, n_bootstrap)
        r = stop - start
        # Multiplicity of every sorted non-member in each replicate: (r, n0).
        drawn = rng.integers(0, n1, size=(r, n1))
        drawn0 = rng.integers(0, n0, size=(r, n0))
        flat = (np.arange(r)[:, None] * n0 + rank_of_neg[drawn0]).ravel()
        counts = np.bincount(flat, minlength=r * n0).reshape(r, n0)
        cum = np.zeros((r, n0 + 1), dtype=np.int64)
        np.cumsum(counts, axis=1, out=cum[:, 1:])
        below = np.take_along_axis(cum, lo[drawn], axis=1)
        at_or_below = np.take_along_axis(cum, hi[drawn], axis=1)
        u = below.sum(axis=1) + 0.5 * (at_or_below - below).sum(axis=1)
        auc_reps[start:stop] = u / (n1 * n0)
        pos_drawn = pos[drawn]
        for j, k in enumerate(ks):
            if k >= n0:
                tpr_reps[j, start:stop] = 1.0
                continue
            t = _threshold_at(neg_desc, u_rng.beta(k + 1, n0 - k, size=r))
            tpr_reps[j, start:stop] = np.mean(pos_drawn > t[:, None], axis=1)
    return auc_reps, tpr_reps


def _threshold_at(neg_desc: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Thresholds whose FPR is ``u`` on the non-member scores ``neg_desc`` (sorted, descending).

    The ``j``-th largest score sits at FPR ``j / (n0 + 1)`` (its expected true FPR); between
    those points the score is interpolated linearly, beyond them clamped to the extremes.
    """
    n0 = neg_desc.size
    where = np.clip(np.asarray(u, dtype=np.float64) * (n0 + 1) - 1.0, 0.0, n0 - 1.0)
    i = np.minimum(np.floor(where).astype(np.int64), n0 - 1)
    frac = where - i
    return neg_desc[i] * (1.0 - frac) + neg_desc[np.minimum(i + 1, n0 - 1)] * frac


def bootstrap_ci(
    scores: Any,
    is_member: Any,
    fprs: Sequence[float] = DEFAULT_FPRS,
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Stratified percentile-bootstrap intervals for the AUC and each TPR at fixed FPR.

    Members and non-members are resampled separately (with replacement, sizes kept), so
    every replicate has the original class counts. Seeded: the same inputs and seed give the
    same intervals.

    The TPR interval accounts for the threshold being estimated from the non-members: each
    replicate evaluates its resampled members at a threshold whose FPR is drawn from
    Beta(k+1, n0-k), the exact distribution of the true FPR of the threshold
    :func:`tpr_at_fpr` picks (continuous scores). In simulation (Gaussian scores, member shift
    0.5-2.5 sd, n0 * f >= 10, 200-400 audits per setting, 200 to 10,000 non-members, 200 to
    10,000 members) the 95% interval covered the true TPR at FPR ``f`` in 93.5-97.5% of
    audits; the plain bootstrap with the threshold re-chosen on resampled non-members covered
    only 91.5-92% with 200 non-members and 2,000 members. Intervals are for resolvable levels
    (:func:`resolvable`); elsewhere they are computed but not meaningful.

    Args:
        scores: per-sample scores, higher = member.
        is_member: per-sample membership labels.
        fprs: FPR levels for the TPR intervals.
        n_bootstrap: number of replicates (>= 1).
        seed: seed of ``np.random.default_rng``.
        level: coverage of the percentile interval.
    Returns:
        ``{"auc": [lo, hi], "tpr_at_fpr": {fpr_key: [lo, hi], ...}}`` with plain floats.
    """
    s, y = _validate(scores, is_member)
    if int(n_bootstrap) < 1:
        raise LeakprobeError(f"n_bootstrap must be at least 1, got {n_bootstrap}")
    if not 0.0 < level < 1.0:
        raise LeakprobeError(f"confidence level must lie in (0, 1), got {level}")
    auc_reps, tpr_reps = _bootstrap_replicates(s, y, list(fprs), int(n_bootstrap), seed)
    q = [50.0 * (1.0 - level), 100.0 - 50.0 * (1.0 - level)]
    auc_lo, auc_hi = np.percentile(auc_reps, q)
    tpr_ci = {}
    for f, reps in zip(fprs, tpr_reps, strict=True):
        lo, hi = np.percentile(reps, q)
        tpr_ci[fpr_key(f)] = [float(lo), float(hi)]
    return {"auc": [float(auc_lo), float(auc_hi)], "tpr_at_fpr": tpr_ci}


def compute_metrics(
    scores: Any,
    is_member: Any,
    folds: Any | None = None,
    fprs: Sequence[float] = DEFAULT_FPRS,
    n_bootstrap: int = 1000,
    seed: int = 0,
    *,
    null_aucs: Any | None = None,
    refitted: bool = False,
) -> dict[str, Any]:
    """All membership metrics of one attack, JSON-ready.

    Args:
        scores: per-sample scores, higher = member.
        is_member: per-sample membership labels.
        folds: per-sample cross-fitting fold ids (for the honest balanced accuracy), or None.
        fprs: FPR levels for TPR at fixed FPR.
        n_bootstrap: bootstrap replicates for the intervals.
        seed: seed of the bootstrap and of the fallback split.
        null_aucs: the AUCs of the label-permutation test (see
            :mod:`leakprobe.evaluation.permutation`), or None.
        refitted: whether the scores came from scorers fitted on the audited labels (then
            the p-value is the permutation p-value; otherwise the Mann-Whitney one).
    Returns:
        ``{"auc", "auc_ci", "balanced_accuracy" (cross-fitted), "balanced_accuracy_best"
        (optimistic), "tpr_at_fpr", "tpr_at_fpr_ci", "fpr_achieved", "fpr_expected",
        "n_members", "n_nonmembers", "min_resolvable_fpr"}``; FPR keys are ``repr(float)``
        strings such as ``"0.001"``. ``tpr_at_fpr[f]`` (see :func:`tpr_at_fpr`) and its
        interval (see :func:`bootstrap_ci`) are ``None`` where the audit cannot resolve ``f``
        (``n_nonmembers * f < 10``); ``fpr_achieved[f]`` is the fraction of the audit's
        non-members above the threshold and ``fpr_expected[f]`` = ``(k+1)/(n0+1)`` its
        expected FPR on fresh non-members (both ``None`` where unresolved);
        ``min_resolvable_fpr`` = ``10 / n_nonmembers``. The test of "no leakage":
        ``p_value``, ``p_value_method``, ``permutations``, ``null_auc_band``; ``auc_ci`` is
        the bootstrap interval ``auc_ci_bootstrap`` widened by the attacker's fitting noise
        (:func:`leakprobe.evaluation.permutation.auc_interval`).
    """
    s, y = _validate(scores, is_member)
    fprs = [float(f) for f in fprs]
    ci = bootstrap_ci(s, y, fprs=fprs, n_bootstrap=n_bootstrap, seed=seed)
    n1 = int(y.sum())
    n0 = int(y.size - n1)
    # TPR at FPR f only where the audit resolves f (n0 * f >= 10); None elsewhere.
    point = {fpr_key(f): _tpr_point(s, y, f) if resolvable(f, n0) else None for f in fprs}
    auc_value = _auc_validated(s, y)
    test = _leakage_test(s, y, auc_value, null_aucs, refitted)
    return {
        "auc": auc_value,
        # Fitting noise widens the interval of a refitted scorer (permutations only).
        "auc_ci": auc_interval(auc_value, ci["auc"], test["null_auc_band"])
        if refitted and test["permutations"] else ci["auc"],
        "auc_ci_bootstrap": ci["auc"],
        **test,
        "balanced_accuracy": balanced_accuracy_crossfit(s, y, folds, seed=seed),
        "balanced_accuracy_best": _best_threshold(s, y)[1],
        "tpr_at_fpr": {k: None if p is None else p[0] for k, p in point.items()},
        "tpr_at_fpr_ci": {
            k: None if p is None else ci["tpr_at_fpr"][k] for k, p in point.items()
        },
        "fpr_achieved": {k: None if p is None else p[2] for k, p in point.items()},
        "fpr_expected": {k: None if p is None else p[3] for k, p in point.items()},
        "n_members": n1,
        "n_nonmembers": n0,
        "min_resolvable_fpr": MIN_NONMEMBER_FALSE_POSITIVES / n0,
    }


def _leakage_test(s: np.ndarray, y: np.ndarray, auc_value: float, null_aucs: Any | None,
                  refitted: bool) -> dict[str, Any]:
    """p-value and null band of "no leakage" (see :mod:`leakprobe.evaluation.permutation`)."""
    null = np.zeros(0) if null_aucs is None else np.asarray(null_aucs, dtype=np.float64)
    n1 = int(y.sum())
    n0 = int(y.size - n1)
    if refitted and null.size:
        p, method = permutation_p(auc_value, null), "permutation"
    elif refitted:  # a fitted scorer without permutations: no valid p-value
        p, method = None, None
    else:
        p, method = mann_whitney_p(s, y)
    return {"p_value": p, "p_value_method": method, "permutations": int(null.size),
            "null_auc_band": null_band(null if refitted else np.zeros(0), n1, n0)}


def roc_points(scores: Any, is_member: Any, max_points: int = 200) -> dict[str, list[float]]:
    """ROC points downsampled for JSON, keeping detail at low FPR for log-log plots.

    Half of the budget is spread evenly over the curve's points, half at log-spaced FPR
    values; the first ``(0, 0)`` and last ``(1, 1)`` points are always kept.

    Args:
        scores: per-sample scores, higher = member.
        is_member: per-sample membership labels.
        max_points: upper bound on the number of points returned (>= 2).
    Returns:
        ``{"fpr": [...], "tpr": [...]}`` as plain float lists, FPR non-decreasing.
    """
    fpr, tpr, _ = roc_curve(scores, is_member)
    max_points = max(2, int(max_points))
    n = fpr.size
    if n > max_points:
        half = max_points // 2
        even = np.linspace(0, n - 1, max_points - half).round().astype(np.int64)
        nonzero = fpr[fpr > 0]
        lowest = float(nonzero.min()) if nonzero.size else 1.0
        targets = np.logspace(np.log10(lowest), 0.0, half)
        logpts = np.clip(np.searchsorted(fpr, targets, side="left"), 0, n - 1)
        # ``even`` holds both end points, so the union has at most ``max_points`` entries.
        keep = np.unique(np.r_[even, logpts])
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [float(v) for v in fpr], "tpr": [float(v) for v in tpr]}
