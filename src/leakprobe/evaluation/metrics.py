"""Membership-inference metrics: ROC, AUC, TPR at fixed FPR, balanced accuracy, bootstrap CIs.

Conventions used throughout:

* ``scores``: one finite number per sample, **higher = more likely a member**.
* ``is_member``: one boolean per sample (0/1 integers are accepted).
* A threshold ``t`` predicts "member" for ``score >= t`` (ROC) or ``score > t`` (TPR at FPR);
  ties between a member and a non-member count one half in the AUC.

Everything is vectorised with numpy; bootstrap replicates are processed as matrices in a few
memory-bounded chunks, never one replicate at a time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from leakprobe.errors import LeakprobeError

__all__ = [
    "auc",
    "balanced_accuracy_best",
    "balanced_accuracy_crossfit",
    "bootstrap_ci",
    "compute_metrics",
    "fpr_key",
    "roc_curve",
    "roc_points",
    "tpr_at_fpr",
]

DEFAULT_FPRS: tuple[float, ...] = (0.1, 0.01, 0.001)
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


def _allowed_false_positives(fpr: float, n_nonmembers: int) -> int:
    """Largest number of false positives k with k / n_nonmembers <= fpr."""
    if not 0.0 <= fpr <= 1.0 or math.isnan(fpr):
        raise LeakprobeError(f"FPR level must lie in [0, 1], got {fpr}")
    # The small tolerance keeps e.g. 0.1 * 30 = 3.0000000000000004 from flooring wrongly.
    return int(math.floor(fpr * n_nonmembers + 1e-9))


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


def _tpr_at_fpr_validated(s: np.ndarray, y: np.ndarray, fpr: float) -> float:
    neg = s[~y]
    pos = s[y]
    k = _allowed_false_positives(fpr, neg.size)
    if k >= neg.size:
        return 1.0
    # The (k+1)-th largest non-member score: every threshold admitting it (or anything
    # below) admits at least k+1 false positives, so members strictly above it are the best
    # achievable set.
    t = np.partition(neg, neg.size - 1 - k)[neg.size - 1 - k]
    return float(np.mean(pos > t))


def tpr_at_fpr(scores: Any, is_member: Any, fpr: float) -> float:
    """Largest TPR of a threshold whose false-positive rate is at most ``fpr``.

    Strict reading: with ``n`` non-members at most ``floor(fpr * n)`` false positives are
    allowed; when that is 0, the TPR is the fraction of members scoring strictly above the
    highest non-member score.

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
            # (k+1)-th largest drawn non-member = the (n0-k)-th smallest: first sorted
            # position whose cumulative count reaches n0 - k.
            pos_idx = np.argmax(cum[:, 1:] >= n0 - k, axis=1)
            t = neg_sorted[pos_idx]
            tpr_reps[j, start:stop] = np.mean(pos_drawn > t[:, None], axis=1)
    return auc_reps, tpr_reps


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
) -> dict[str, Any]:
    """All membership metrics of one attack, JSON-ready.

    Args:
        scores: per-sample scores, higher = member.
        is_member: per-sample membership labels.
        folds: per-sample cross-fitting fold ids (for the honest balanced accuracy), or None.
        fprs: FPR levels for TPR at fixed FPR.
        n_bootstrap: bootstrap replicates for the intervals.
        seed: seed of the bootstrap and of the fallback split.
    Returns:
        ``{"auc", "auc_ci", "balanced_accuracy" (cross-fitted), "balanced_accuracy_best"
        (optimistic), "tpr_at_fpr", "tpr_at_fpr_ci", "n_members", "n_nonmembers",
        "min_resolvable_fpr"}``; FPR keys are ``repr(float)`` strings such as ``"0.001"``.
    """
    s, y = _validate(scores, is_member)
    fprs = [float(f) for f in fprs]
    ci = bootstrap_ci(s, y, fprs=fprs, n_bootstrap=n_bootstrap, seed=seed)
    n1 = int(y.sum())
    n0 = int(y.size - n1)
    return {
        "auc": _auc_validated(s, y),
        "auc_ci": ci["auc"],
        "balanced_accuracy": balanced_accuracy_crossfit(s, y, folds, seed=seed),
        "balanced_accuracy_best": _best_threshold(s, y)[1],
        "tpr_at_fpr": {fpr_key(f): _tpr_at_fpr_validated(s, y, f) for f in fprs},
        "tpr_at_fpr_ci": ci["tpr_at_fpr"],
        "n_members": n1,
        "n_nonmembers": n0,
        "min_resolvable_fpr": 1.0 / n0,
    }


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
