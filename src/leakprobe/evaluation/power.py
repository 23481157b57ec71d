"""Power of the "no leakage" test: the smallest AUC an audit of a given size can detect.

A membership audit tests "the attack's scores do not tell members from non-members" (AUC
0.5) with a one-sided rank test (Mann-Whitney; the permutation test of a fitted attacker
approximates it). How large a true AUC it detects depends only on the sample sizes, the
level and the power asked for, which makes "no leakage shown" interpretable: with 64 + 64
images a modest leak cannot be seen at all.

Method (the normal approximation of the Mann-Whitney statistic, as in sample-size planning
for ROC studies, Hanley & McNeil 1982, Obuchowski 1998): the AUC estimate is approximately
normal,

* under no leakage with mean 0.5 and variance ``(n1 + n0 + 1) / (12 n1 n0)`` (the exact
  null variance of U / (n1 n0) without ties);
* under an AUC ``A`` with Hanley and McNeil's variance
  ``[A (1 - A) + (n1 - 1)(Q1 - A^2) + (n0 - 1)(Q2 - A^2)] / (n1 n0)``, with
  ``Q1 = A / (2 - A)`` and ``Q2 = 2 A^2 / (1 + A)``;

and the test at level ``alpha`` detects ``A`` with probability ``power`` when
``A - 0.5 = z(1 - alpha) sd0 + z(power) sd1(A)``, solved here for ``A`` numerically.
tests/evaluation/test_power.py checks the answer against simulated audits (binormal scores).
For fitted attackers the permutation null is wider than the Mann-Whitney one (their fitting
noise), so the AUC they need is somewhat larger: the value is a lower bound for them.
"""

from __future__ import annotations

import math

from leakprobe.errors import LeakprobeError

__all__ = ["auc_sd_alternative", "auc_sd_null", "detectable_auc"]


def auc_sd_null(*, n_members: int, n_nonmembers: int) -> float:
    """Standard deviation of the AUC estimate under no leakage (Mann-Whitney, no ties)."""
    n1, n0 = _sizes(n_members, n_nonmembers)
    return math.sqrt((n1 + n0 + 1) / (12.0 * n1 * n0))


def auc_sd_alternative(auc: float, *, n_members: int, n_nonmembers: int) -> float:
    """Hanley-McNeil standard deviation of the AUC estimate when the true AUC is ``auc``."""
    n1, n0 = _sizes(n_members, n_nonmembers)
    a = float(auc)
    if not 0.0 <= a <= 1.0:
        raise LeakprobeError(f"an AUC lies in [0, 1], got {auc}")
    q1 = a / (2.0 - a)
    q2 = 2.0 * a * a / (1.0 + a)
    var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)
    return math.sqrt(max(var, 0.0))


def detectable_auc(*, n_members: int, n_nonmembers: int, alpha: float,
                   power: float = 0.8) -> float:
    """The smallest true AUC that a one-sided test at level ``alpha`` detects with ``power``.

    See the module docstring for the method (normal approximation, null variance
    ``(n1 + n0 + 1) / (12 n1 n0)``, Hanley-McNeil variance under the alternative).

    Args:
        n_members, n_nonmembers: the audit's sample sizes (>= 1 each).
        alpha: the test's level, in (0, 1); divide it by the number of attacks for a
            Bonferroni-corrected family.
        power: the probability of detection asked for, in (0, 1).
    Returns:
        The AUC in [0.5, 1]; 1.0 when even perfect separation is not detected with that
        power (too few images for ``alpha``).
    Raises:
        LeakprobeError: sizes below 1, or ``alpha`` / ``power`` outside (0, 1).
    """
    from scipy.optimize import brentq
    from scipy.stats import norm

    for name, value in (("alpha", alpha), ("power", power)):
        if not 0.0 < float(value) < 1.0:
            raise LeakprobeError(f"{name} must lie in (0, 1), got {value}")
    sizes = {"n_members": n_members, "n_nonmembers": n_nonmembers}
    z_alpha = float(norm.ppf(1.0 - float(alpha)))
    z_power = float(norm.ppf(float(power)))
    threshold = 0.5 + z_alpha * auc_sd_null(**sizes)

    def gap(a: float) -> float:  # > 0: an AUC of ``a`` is detected with more than ``power``
        return a - threshold - z_power * auc_sd_alternative(a, **sizes)

    if gap(1.0) <= 0.0:
        return 1.0
    if gap(0.5) >= 0.0:  # power <= 1/2 with a tiny alpha gap, or alpha >= 1/2
        return 0.5
    return float(brentq(gap, 0.5, 1.0, xtol=1e-10))


def _sizes(n_members: int, n_nonmembers: int) -> tuple[int, int]:
    n1, n0 = int(n_members), int(n_nonmembers)
    if n1 < 1 or n0 < 1:
        raise LeakprobeError(f"need at least one member and one non-member, got {n1} and {n0}")
    return n1, n0
