"""Correcting for running several attacks: family-wise adjusted p-values.

An audit runs several attacks; the chance that at least one of N attacks on a model that did
not leak reaches p <= 0.05 grows with N (the study measures it: 9 chance attacks on 64 + 64
images reach it more than 20% of the time). Two corrections keep that chance at ``alpha``:

* :func:`holm_adjusted` (Holm 1979) on any valid p-values, whatever their dependence;
* :func:`step_down_max_t` (Westfall & Young 1993, the step-down "maxT" procedure) on the
  label permutations all attacks of one audit share: each attack's AUC is compared with the
  maximum, permutation by permutation, of the permuted AUCs of the attacks not yet rejected.
  It is Holm's procedure with the dependence between attacks taken from the permutations,
  and, unlike Holm on permutation p-values (never below 1/(B+1), e.g. 0.0099 with 100
  permutations, above 0.05/9), it can reject with B = 100.

Both return adjusted p-values: an attack is rejected at family-wise level ``alpha`` when its
adjusted p-value is at most ``alpha``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from leakprobe.errors import LeakprobeError

__all__ = ["holm_adjusted", "step_down_max_t"]


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    The i-th smallest p-value (1-based) is multiplied by ``N - i + 1``, made non-decreasing
    along that order and capped at 1.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1 or np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise LeakprobeError("Holm's correction needs a list of p-values in [0, 1]")
    n = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((n - np.arange(n)) * p[order])
    out = np.empty(n)
    out[order] = np.minimum(stepped, 1.0)
    return [float(v) for v in out]


def step_down_max_t(observed: Sequence[float], null: Sequence[Sequence[float]]) -> list[float]:
    """Westfall-Young step-down maxT adjusted p-values (add-one), in the input order.

    Attacks are taken from the highest statistic down; the j-th is compared with the
    maximum over the attacks from j on (the not yet rejected ones) within each permutation:
    ``p_j = (1 + #{b: max_{k >= j} null[k, b] >= observed_j}) / (B + 1)``, then made
    non-decreasing along that order. Valid (family-wise) when the rows of ``null`` come from
    the same label permutations.

    Args:
        observed: the attacks' statistics (AUCs), higher = more evidence.
        null: per attack, its statistics under the B shared permutations (equal lengths).
    Returns:
        The adjusted p-values, one per attack, each in [1/(B+1), 1].
    """
    t = np.asarray(observed, dtype=np.float64)
    rows = [np.asarray(r, dtype=np.float64) for r in null]
    if len(rows) != t.size or not rows or len({r.size for r in rows}) != 1 or rows[0].size == 0:
        raise LeakprobeError("the step-down maxT needs one equally long row of permuted "
                             "statistics per attack")
    matrix = np.stack(rows)  # (N, B)
    b = matrix.shape[1]
    order = np.argsort(-t, kind="stable")
    # maximum over the attacks from position j on (in the descending order), per permutation
    tail_max = np.maximum.accumulate(matrix[order][::-1], axis=0)[::-1]
    raw = (1 + np.sum(tail_max >= t[order][:, None] - 1e-12, axis=1)) / (b + 1)
    stepped = np.maximum.accumulate(raw)
    out = np.empty(t.size)
    out[order] = stepped
    return [float(v) for v in out]
