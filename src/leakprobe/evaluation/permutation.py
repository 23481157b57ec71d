"""Label-permutation tests: p-values and AUC intervals that include the attacker's fitting.

Why: a learned attacker's out-of-fold scores are not fixed numbers. Refitting the scorer on
another split, or on as little signal as chance provides, moves its AUC, and the stratified
bootstrap of the scores (``metrics.bootstrap_ci``) cannot see that. Simulated 64 + 64 null
audits put 0.5 inside that bootstrap interval only 81-90% of the time.

The test: permute the member / non-member labels of the audited samples, redo the *whole*
cross-fitted scoring on the cached features with the permuted labels (folds re-drawn,
every scorer refitted; the target is not queried again), and take the AUC. Under "no
leakage" the labels are exchangeable given the features, so the observed AUC is one more draw
from these permuted AUCs, whatever the attacker's fitting does:

* ``p_value = (1 + #{permuted AUC >= observed}) / (1 + B)`` is valid at every level
  (Phipson & Smyth 2010, the add-one estimate: never 0);
* the null band runs from the k-th smallest to the k-th largest permuted AUC
  (k = floor(0.025 (B + 1))), which holds a null AUC with probability >= 95%.

An attack that fits nothing on the audited labels (a fixed statistic, or a scorer fitted on a
shadow model) has fixed scores, and its p-value is the one-sided Mann-Whitney test: exact
without ties, normal with tie correction otherwise. Its permuted AUCs are still computed,
from the same permutations, so that the null of a *maximum* over attacks (the study's
best-of-many) can be taken permutation by permutation.

Permutations are drawn from the audit seed, so every attack of one audit sees the same ones.
"""

from __future__ import annotations

import math

import numpy as np

from leakprobe.errors import LeakprobeError

__all__ = [
    "DEFAULT_PERMUTATIONS",
    "auc_interval",
    "mann_whitney_p",
    "max_statistic_p",
    "null_aucs_of_fixed_scores",
    "null_band",
    "permutation_p",
    "permuted_labels",
    "resolve_permutations",
]

DEFAULT_PERMUTATIONS = 100
PERMUTATIONS_ENV = "LEAKPROBE_PERMUTATIONS"
# Mann-Whitney's exact null distribution is computed up to this many member x non-member pairs.
_EXACT_MAX_PAIRS = 40_000


def resolve_permutations(permutations: int | None) -> int:
    """``permutations``, or when None ``$LEAKPROBE_PERMUTATIONS``, else 100; checked >= 0."""
    import os

    if permutations is None:
        raw = os.environ.get(PERMUTATIONS_ENV, "").strip()
        try:
            permutations = int(raw) if raw else DEFAULT_PERMUTATIONS
        except ValueError:
            raise LeakprobeError(f"{PERMUTATIONS_ENV} must be an integer >= 0, got {raw!r}") \
                from None
    if int(permutations) < 0:
        raise LeakprobeError(f"--permutations must be >= 0, got {permutations}")
    return int(permutations)


def permuted_labels(is_member: np.ndarray, n_permutations: int, seed: int) -> np.ndarray:
    """(B, N) boolean label vectors: ``is_member`` shuffled B times, seeded by the audit seed."""
    y = np.asarray(is_member, dtype=bool)
    if n_permutations < 0:
        raise LeakprobeError(f"--permutations must be >= 0, got {n_permutations}")
    rng = np.random.default_rng([int(seed), 0x5EED])
    if n_permutations == 0:
        return np.zeros((0, y.size), dtype=bool)
    return np.stack([rng.permutation(y) for _ in range(n_permutations)])


def null_aucs_of_fixed_scores(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUC of fixed ``scores`` under each row of ``labels`` (B, N), from ranks computed once."""
    from scipy.stats import rankdata

    labels = np.asarray(labels, dtype=bool)
    if labels.shape[0] == 0:
        return np.zeros(0)
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    n1 = labels.sum(axis=1)
    n0 = labels.shape[1] - n1
    u = labels.astype(np.float64) @ ranks - n1 * (n1 + 1) / 2.0
    return u / (n1 * n0)


def permutation_p(observed: float, null: np.ndarray) -> float:
    """Add-one permutation p-value of ``observed`` against the permuted statistics ``null``."""
    null = np.asarray(null, dtype=np.float64)
    # A tolerance keeps an exact tie (e.g. a scorer that ignores its labels) counted as a tie.
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + null.size))


def mann_whitney_p(scores: np.ndarray, is_member: np.ndarray) -> tuple[float, str]:
    """One-sided Mann-Whitney p-value (members score higher) and the method used."""
    from scipy.stats import mannwhitneyu

    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_member, dtype=bool)
    pos, neg = s[y], s[~y]
    ties = np.unique(s).size < s.size
    small = pos.size * neg.size <= _EXACT_MAX_PAIRS
    method = "exact" if small and not ties else "asymptotic"
    p = mannwhitneyu(pos, neg, alternative="greater", method=method).pvalue
    return float(p), f"mann-whitney-{method}"


def null_band(null: np.ndarray, n_members: int, n_nonmembers: int,
              level: float = 0.95) -> list[float]:
    """A range that holds the AUC under no leakage with probability >= ``level``.

    From the B permuted AUCs when there are any: the k-th smallest and the k-th largest, with
    k = floor((1 - level) / 2 * (B + 1)) (at least 1). Under no leakage the observed AUC is
    one more exchangeable draw, so it falls below the k-th smallest with probability
    k / (B + 1) <= (1 - level) / 2, and likewise above: the band holds it with probability
    >= ``level`` (B = 100: the 2nd smallest and largest, 96%). Interpolated percentiles would
    hold it only ~93% of the time at B = 100; below B = 39 the band is the null's full range,
    which holds it with probability (B - 1) / (B + 1) only. Without permuted AUCs: the
    normal approximation of the Mann-Whitney null (mean 0.5, variance
    (n1 + n0 + 1) / (12 n1 n0)).
    """
    null = np.sort(np.asarray(null, dtype=np.float64))
    tail = 0.5 * (1.0 - level)
    if null.size:
        k = max(1, math.floor(tail * (null.size + 1) + 1e-9))
        return [float(null[k - 1]), float(null[null.size - k])]
    from scipy.stats import norm

    sd = math.sqrt((n_members + n_nonmembers + 1) / (12.0 * n_members * n_nonmembers))
    z = float(norm.ppf(1.0 - tail))
    return [0.5 - z * sd, 0.5 + z * sd]


def auc_interval(auc: float, bootstrap: list[float], band: list[float]) -> list[float]:
    """The reported AUC interval: the bootstrap interval widened by the attacker's fitting noise.

    ``band`` (the null band) is how far a fitted attacker's AUC strays from 0.5 when there is
    nothing to find; re-centred on the observed AUC it gives ``[auc - (hi - 0.5), auc + (0.5 -
    lo)]``, which contains 0.5 exactly when the observed AUC lies inside the band. The
    reported interval is the union of that and the bootstrap interval (the sampling of the
    audited images), clipped to [0, 1]: under no leakage it covers the true 0.5 at least at
    the band's level (tested by simulation in tests/evaluation/test_permutation.py).
    """
    lo = min(bootstrap[0], auc - (band[1] - 0.5))
    hi = max(bootstrap[1], auc + (0.5 - band[0]))
    return [float(max(0.0, lo)), float(min(1.0, hi))]


def max_statistic_p(observed: dict[str, float], null: dict[str, list[float]]) -> float | None:
    """Permutation p-value of the best AUC over several attacks (best-of-many).

    ``null[name]`` must hold each attack's permuted AUCs under the *same* permutations (one
    audit seed); the null of the maximum is then the maximum over attacks, permutation by
    permutation. None when the attacks' permutations cannot be paired (missing or unequal
    counts).
    """
    names = list(observed)
    rows = [row for row in (null.get(n) for n in names) if row is not None and len(row) > 0]
    if not names or len(rows) != len(names):
        return None
    if len({len(r) for r in rows}) != 1:
        return None
    null_max = np.max(np.asarray(rows, dtype=np.float64), axis=0)
    return permutation_p(max(observed.values()), null_max)
