"""The one-sentence verdict of a membership report (its ``summary`` key).

The sentence is computed from the report's own tests, never guessed:

* each non-blind attack's test of "no leakage" is its ``p_value`` (permutation or
  Mann-Whitney); an attack without one (a fitted attacker run without permutations) is
  judged by its AUC interval, turned into the one-sided normal p-value whose 2.5% cut-off is
  "the interval's lower end lies above 0.5", and the sentence says so;
* the attacks are one family, corrected at family-wise level :data:`SUMMARY_ALPHA`: by the
  Westfall-Young step-down maxT over the label permutations the attacks share when every
  attack has them (Holm's step-down, with the permutations' joint law), else by Holm on the
  p-values (:mod:`leakprobe.evaluation.multiplicity`);
* the blind, model-free floor is tested as the report's distribution-shift warning is
  (one-sided, level 0.025): when it beats chance the two image sets differ without the model
  and the attacks' results are not evidence of leakage;
* "no leakage shown" states what the audit could have seen: the smallest AUC its sizes detect
  at the corrected level with 80% power (:func:`leakprobe.evaluation.power.detectable_auc`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from leakprobe.evaluation.multiplicity import holm_adjusted, step_down_max_t
from leakprobe.evaluation.power import detectable_auc
from leakprobe.report.schema import _shift_detected, is_blind

__all__ = ["SUMMARY_ALPHA", "SUMMARY_POWER", "MembershipVerdict", "auc_text",
           "membership_summary", "membership_verdict", "p_text"]

SUMMARY_ALPHA = 0.05  # the family-wise level of "leakage detected"
SUMMARY_POWER = 0.8  # the power of the "cannot be told from chance" clause
_Z_975 = 1.959963984540054  # the 97.5% normal quantile: a 95% interval's half-width in sds

Outcome = Literal["leakage", "no-leakage", "split-differs", "no-attacks"]


@dataclass(frozen=True)
class MembershipVerdict:
    """What :func:`membership_verdict` decided, and the sentence that says it.

    Attributes:
        outcome: ``leakage`` (some attack beats chance, the blind floor does not),
            ``split-differs`` (some attack beats chance but so does the blind floor: not
            evidence), ``no-leakage`` (no attack beats chance after the correction) or
            ``no-attacks`` (only a blind floor ran).
        n_attacks: the non-blind attacks (the family corrected for).
        detected: the attacks that beat chance after the correction, strongest first.
        adjusted_p: attack -> its family-wise adjusted p-value.
        correction: ``westfall-young`` or ``holm``.
        by_interval: attacks judged by their AUC interval (no p-value in the report).
        blind_shift: whether the blind floor beats chance (None: no blind attack ran).
        detectable_auc: the smallest AUC the audit detects at the corrected level with
            :data:`SUMMARY_POWER` (None without attacks).
        sentence: the one-sentence summary.
    """

    outcome: Outcome
    n_attacks: int
    detected: list[str]
    adjusted_p: dict[str, float]
    correction: str
    by_interval: list[str]
    blind_shift: bool | None
    detectable_auc: float | None
    sentence: str = field(default="")


def p_text(p: float) -> str:
    """A p-value in words' width: two decimals from 0.01 up, two significant digits below."""
    return f"{p:.2f}" if p >= 0.01 else f"{p:.2g}"


def auc_text(metrics: Mapping[str, Any]) -> str:
    """``AUC 0.62 [0.58, 0.66]`` (the interval left out when the report has none)."""
    text = f"AUC {float(metrics['auc']):.2f}"
    ci = metrics.get("auc_ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        text += f" [{float(ci[0]):.2f}, {float(ci[1]):.2f}]"
    return text


def _interval_p(metrics: Mapping[str, Any]) -> float:
    """One-sided p-value of AUC > 0.5 read off the 95% interval (normal, lower half-width).

    Below 0.025 exactly when the interval's lower end lies above 0.5; 1 without an interval.
    """
    from scipy.stats import norm

    auc = float(metrics["auc"])
    ci = metrics.get("auc_ci")
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or ci[0] is None:
        return 1.0  # nothing to judge by
    half = (auc - float(ci[0])) / _Z_975
    if half <= 0.0:
        return 0.0 if auc > 0.5 else 1.0
    return float(norm.sf((auc - 0.5) / half))


def _max_t_permutations(alpha: float) -> int:
    """The fewest shared permutations the maxT correction is used with: its adjusted p-values
    are never below 1/(B+1), which must leave room under ``alpha`` (1/(B+1) <= alpha/2)."""
    return math.ceil(2.0 / alpha) - 1


def _adjust(attacks: list[Mapping[str, Any]],
            alpha: float) -> tuple[dict[str, float], str, list[str]]:
    """Family-wise adjusted p-values, the correction used and the attacks judged by interval.

    The choice depends on the design only (which tests ran, how many permutations), never on
    the values: maxT with enough shared permutations, else Holm.
    """
    names = [str(r["attack"]) for r in attacks]
    nulls = [list(r.get("null_aucs") or []) for r in attacks]
    by_interval = [n for n, r in zip(names, attacks, strict=True)
                   if r["metrics"].get("p_value") is None]
    if (not by_interval and all(nulls) and len({len(v) for v in nulls}) == 1
            and len(nulls[0]) >= _max_t_permutations(alpha)):
        adjusted = step_down_max_t([float(r["metrics"]["auc"]) for r in attacks], nulls)
        return dict(zip(names, adjusted, strict=True)), "westfall-young", []
    raw = [float(r["metrics"]["p_value"]) if r["metrics"].get("p_value") is not None
           else _interval_p(r["metrics"]) for r in attacks]
    return dict(zip(names, holm_adjusted(raw), strict=True)), "holm", by_interval


def _sizes(attacks: list[Mapping[str, Any]]) -> tuple[int, int]:
    """The smallest member and non-member counts over the attacks."""
    def n(r: Mapping[str, Any], key: str) -> int:
        return int(r.get(key) or r["metrics"].get(key) or 0)

    return min(n(r, "n_members") for r in attacks), min(n(r, "n_nonmembers") for r in attacks)


#: Model-free attacks that are a family's floor where it has no ``blind``: they judge the
#: audited sets alone, never the model (``model_free`` on the attack class; image-to-image's
#: ``predictability`` measures how hard each image is), so they are no evidence of leakage.
MODEL_FREE_FLOORS = ("predictability",)


def _is_floor(attack: str) -> bool:
    """Whether a result is a model-free floor (``blind`` or a :data:`MODEL_FREE_FLOORS`)."""
    return is_blind(attack) or attack.lower() in MODEL_FREE_FLOORS


def _blind_clause(blind: Mapping[str, Any]) -> str:
    m = blind["metrics"]
    p = m.get("p_value")
    return f"AUC {float(m['auc']):.2f}" + (f", p = {p_text(float(p))}" if p is not None
                                             else "")


def membership_verdict(report: Mapping[str, Any], *,
                       alpha: float = SUMMARY_ALPHA) -> MembershipVerdict:
    """Decide what a membership report shows and say it in one sentence.

    Args:
        report: a membership report (:func:`leakprobe.report.schema.build_report`).
        alpha: the family-wise level over the non-blind attacks.
    Returns:
        The :class:`MembershipVerdict`; its ``sentence`` is the report's ``summary``.
    """
    results = list(report.get("results") or [])
    attacks = [r for r in results if not _is_floor(str(r["attack"]))]
    blinds = [r for r in results if _is_floor(str(r["attack"]))]
    blind = blinds[0] if blinds else None
    shift = None if blind is None else _shift_detected(blind["metrics"])
    if not attacks:
        sentence = "No attack ran, so nothing is said about leakage"
        if blind is not None:
            sentence += (f"; the images alone tell members from non-members "
                         f"(model-free floor {_blind_clause(blind)})" if shift else
                         f"; the model-free floor does not beat chance ({_blind_clause(blind)})")
        return MembershipVerdict("no-attacks", 0, [], {}, "none", [], shift, None, sentence)
    adjusted, correction, by_interval = _adjust(attacks, alpha)
    n = len(attacks)
    by_name = {str(r["attack"]): r for r in attacks}
    detected = sorted((a for a, p in adjusted.items() if p <= alpha),
                      key=lambda a: -float(by_name[a]["metrics"]["auc"]))
    n1, n0 = _sizes(attacks)
    least = detectable_auc(n_members=n1, n_nonmembers=n0, alpha=alpha / n,
                           power=SUMMARY_POWER) if n1 and n0 else None
    tries = "" if n == 1 else f", allowing for {n} tries"
    if detected:
        best = by_name[detected[0]]
        p = best["metrics"].get("p_value")
        evidence = (f"p = {p_text(float(p))}" if p is not None
                    else "its interval excludes 0.5; no permutation test was run")
        strongest = f"{detected[0]}, {auc_text(best['metrics'])}, {evidence}"
        count = ("the attack tells" if n == 1 else
                 f"{len(detected)} of {n} attacks " + ("tells" if len(detected) == 1
                                                       else "tell"))
        if shift:
            assert blind is not None
            outcome: Outcome = "split-differs"
            sentence = (
                f"Inconclusive: the member and non-member images can be told apart without "
                f"the model (model-free floor {_blind_clause(blind)}), so the attacks' results "
                f"({len(detected)} of {n} beat chance{tries}; strongest: {strongest}) are "
                "not evidence of leakage")
        else:
            outcome = "leakage"
            floor = (f"the model-free floor does not beat chance ({_blind_clause(blind)})"
                     if blind is not None else
                     "no model-free floor was run, so a difference between the two image sets "
                     "is not ruled out")
            sentence = (f"Leakage detected: {count} members from non-members{tries} "
                        f"({'' if n == 1 else 'strongest: '}{strongest}); {floor}")
        return MembershipVerdict(outcome, n, detected, adjusted, correction, by_interval,
                                 shift, least, sentence)
    sentence = "No leakage shown at this sample size (" + _why_not(
        attacks, adjusted, correction, by_interval, alpha)
    if least is not None:
        sentence += (f"; with {n1} + {n0} images even a perfect attack cannot be reliably "
                     "told from chance" if least >= 0.995 else
                     f"; with {n1} + {n0} images an AUC below about {least:.2f} cannot be "
                     "reliably told from chance")
    sentence += ")"
    if shift:
        assert blind is not None
        sentence += ("; the member and non-member images also differ without the model "
                     f"(model-free floor {_blind_clause(blind)})")
    return MembershipVerdict("no-leakage", n, [], adjusted, correction, by_interval, shift,
                             least, sentence)


def _why_not(attacks: list[Mapping[str, Any]], adjusted: dict[str, float], correction: str,
             by_interval: list[str], alpha: float) -> str:
    """The clause on the smallest p-value (and on what kept it above ``alpha``)."""
    n = len(attacks)
    with_p = [r for r in attacks if r["metrics"].get("p_value") is not None]
    parts = []
    if with_p:
        smallest = min(float(r["metrics"]["p_value"]) for r in with_p)
        text = f"smallest p = {p_text(smallest)}" + ("" if n == 1 else f" over {n} attacks")
        if smallest <= alpha and n > 1:
            text += f", not significant once corrected for {n} attacks"
        parts.append(text)
    if by_interval:
        parts.append("no AUC interval excludes 0.5" if len(by_interval) == len(attacks) else
                     f"{', '.join(by_interval)} judged by AUC interval")
        parts[-1] += " (no permutation test was run)"
    if correction == "holm":
        # permutation p-values at their floor 1/(B+1) that Holm's first step cannot pass
        at_floor = [int(r["metrics"].get("permutations") or 0) for r in with_p
                    if r["metrics"].get("p_value_method") == "permutation"
                    and float(r["metrics"]["p_value"]) <= 1.0 / (
                        int(r["metrics"].get("permutations") or 0) + 1) + 1e-12]
        if at_floor and 1.0 / (min(at_floor) + 1) > alpha / n:
            parts.append(f"with only {min(at_floor)} permutations no p-value can go below "
                         f"{p_text(1.0 / (min(at_floor) + 1))}, too coarse for this test: "
                         "rerun with more permutations")
    return "; ".join(parts) if parts else "no p-values"


def membership_summary(report: Mapping[str, Any], *, alpha: float = SUMMARY_ALPHA) -> str:
    """The one-sentence verdict of a membership report (see :func:`membership_verdict`)."""
    return membership_verdict(report, alpha=alpha).sentence
