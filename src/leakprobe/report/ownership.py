"""The report of an ownership audit (``kind: encoder-ownership``): JSON, one line, HTML.

Built by :func:`leakprobe.workflows.ownership.run_ownership` through
:func:`build_ownership_report`; the verdict line (:func:`verdict_line`) is the same in the
terminal and at the top of ``report.html``. Keys may be added, never renamed:

``verdict`` (``derived`` | ``not shown``), ``p_value`` (combined), ``alpha``, ``combination``
(``holm``), ``combined_tests``, ``holm_k``, ``tests`` (one entry per test: ``name``,
``statistic``, ``p_value``, ``references``, ``ran``, ``skipped``, ``min_p``, ``combined``,
``adjusted_p``, ...), ``n_members``, ``n_nonmembers``, ``n_references``, ``suspect``,
``victim``, ``seed``, ``leakprobe_version``, ``seconds``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leakprobe.evaluation.ownership import Combination, OwnershipTest
from leakprobe.io import write_json, write_text
from leakprobe.report.schema import OWNERSHIP_KIND, leakprobe_version, to_jsonable

__all__ = ["build_ownership_report", "ownership_body_html", "ownership_details_html",
           "verdict_line", "write_ownership_report"]

_WHAT_IT_SHOWS = (
    "A <em>derived</em> verdict rejects, at level alpha, the hypothesis that the suspect was "
    "made without the owner's encoder or training data. <em>Not shown</em> is not evidence "
    "of independence: a copy made from few queries, or a victim that memorised little, can "
    "leave no trace these sets can see.")


def build_ownership_report(
    *,
    tests: Sequence[OwnershipTest],
    combination: Combination,
    alpha: float,
    n_members: int,
    n_nonmembers: int,
    n_references: int,
    suspect: str,
    victim: str | None,
    seed: int,
    seconds: float,
    references: dict[str, Any] | None = None,
    victim_membership: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """Assemble the ``encoder-ownership`` report.

    Args:
        tests: every test, run or skipped, in report order.
        combination: their :func:`~leakprobe.evaluation.ownership.combine_tests`.
        alpha: the verdict's level.
        n_members, n_nonmembers: the owner's set sizes.
        n_references: reference encoders used.
        suspect, victim: the models as given (``victim`` None without one).
        seed: the run's seed.
        seconds: wall time.
        references: how the references were made (recipe, data, cache folder...).
        victim_membership: the victim's own calibrated membership test (not combined).
        context: the run's settings.
        warnings: shown first.
    Returns:
        The report (plain JSON types).
    """
    entries = []
    for t in tests:
        entry = t.to_dict()
        entry["combined"] = t.name in combination.family
        entry["adjusted_p"] = combination.adjusted.get(t.name)
        if t.name in combination.left_out:
            entry["not_combined"] = combination.left_out[t.name]
        entries.append(entry)
    notes = []
    rank_tests = [t for t in tests if t.ran and t.min_p > 0]
    if rank_tests:
        r = rank_tests[0].references
        notes.append(
            f"with {r} references a reference-rank test's smallest p-value is 1/(R+1) = "
            f"{1 / (r + 1):.3g}" + (f", above alpha = {alpha:g}: it can never reach alpha alone "
                                     f"(that needs R >= {max(1, round(1 / alpha) - 1)})"
                                     if 1 / (r + 1) > alpha else ""))
    report = {
        "leakprobe_version": leakprobe_version(), "kind": OWNERSHIP_KIND,
        "verdict": combination.verdict, "p_value": combination.p_value, "alpha": alpha,
        "combination": "holm", "combined_tests": list(combination.family),
        "holm_k": combination.k, "tests": entries, "n_members": n_members,
        "n_nonmembers": n_nonmembers, "n_references": n_references, "suspect": suspect,
        "victim": victim, "seed": seed, "seconds": round(float(seconds), 2),
        "references": references or {}, "victim_membership": victim_membership,
        "notes": notes, "warnings": list(warnings or []), "context": context or {},
    }
    report["summary"] = verdict_line(report)
    return to_jsonable(report)


def verdict_line(report: dict[str, Any]) -> str:
    """``derived: combined p = 0.0004 <= alpha = 0.01 (Holm over ...)`` (one line)."""
    p, alpha = float(report["p_value"]), float(report["alpha"])
    family = report.get("combined_tests") or []
    over = (f"Holm over {', '.join(family)}" if family else "no test run could reach alpha")
    if report["verdict"] == "derived":
        return (f"derived: combined p = {p:.3g} <= alpha = {alpha:g} ({over}): the suspect "
                "is derived from the owner's encoder or data")
    return (f"not shown: combined p = {p:.3g} > alpha = {alpha:g} ({over}): no evidence of "
            "derivation, which does not show independence")


def _p(value: Any) -> str:
    from leakprobe.report.html import fmt

    return fmt(value, 4) if isinstance(value, float) else fmt(value)


def _verdict_html(report: dict[str, Any]) -> str:
    from leakprobe.report.html import verdict_html

    return verdict_html(str(report.get("summary") or verdict_line(report)))


def ownership_details_html(report: dict[str, Any]) -> str:
    """The test table and the notes, then the setting collapsed (values escaped)."""
    from leakprobe.report.html import esc, fmt

    rows = []
    for t in report.get("tests", []):
        if t.get("ran"):
            combined = ("yes" if t.get("combined")
                        else f"no ({esc(t.get('not_combined', ''))})")
            rows.append(
                f"<tr><td>{esc(t['name'])}</td><td>{esc(t.get('statistic_name', ''))}</td>"
                f'<td class="num">{fmt(t.get("statistic"))}</td>'
                f'<td class="num">{_p(t.get("p_value"))}</td>'
                f'<td class="num">{_p(t.get("adjusted_p"))}</td>'
                f'<td class="num">{fmt(t.get("references"))}</td><td>{combined}</td></tr>')
        else:
            rows.append(f"<tr><td>{esc(t['name'])}</td><td colspan=\"6\" class=\"muted\">"
                        f"skipped: {esc(t.get('skipped'))}</td></tr>")
    table = ('<table class="metrics"><tr><th>test</th><th>statistic</th><th>value</th>'
             "<th>p</th><th>Holm-adjusted p</th><th>references</th><th>combined</th></tr>"
             + "".join(rows) + "</table>")
    facts: list[tuple[str, Any]] = [
        ("suspect", report.get("suspect")), ("victim", report.get("victim")),
        ("members", report.get("n_members")), ("non-members", report.get("n_nonmembers")),
        ("references", report.get("n_references")), ("alpha", report.get("alpha")),
        ("combination", f"{report.get('combination')} (k = {report.get('holm_k')})"),
        ("seed", report.get("seed")), ("seconds", report.get("seconds")),
        ("leakprobe version", report.get("leakprobe_version"))]
    vm = report.get("victim_membership")
    if vm:
        facts.append(("victim's own calibrated membership",
                      f"AUC {fmt(vm.get('statistic'))}, p = {_p(vm.get('p_value'))}"))
    card = "".join(f"<tr><th>{esc(k)}</th><td>{fmt(v)}</td></tr>" for k, v in facts)
    notes = "".join(f'<p class="foot">{esc(n)}</p>' for n in report.get("notes", []))
    return (f"<h3>Tests</h3>{table}{notes}<p class=\"foot\">{_WHAT_IT_SHOWS}</p>"
            '<details class="config"><summary>Configuration: the setting</summary>'
            f'<h3>Setting</h3><table class="kv card">{card}</table></details>')


def ownership_body_html(report: dict[str, Any]) -> str:
    """The verdict line, the test table, the notes and the setting (values escaped)."""
    return _verdict_html(report) + ownership_details_html(report)


def write_ownership_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json`` and ``report.html`` (the verdict line first) atomically.

    Returns:
        ``{"json": path, "html": path}``.
    """
    from leakprobe.report.html import esc, kind_blurb, page_html

    out = Path(out_dir)
    paths = {"json": write_json(out / "report.json", report)}
    title = "leakprobe report: encoder-ownership"
    warn = "".join(f'<div class="warning"><strong>Warning:</strong> {esc(w)}</div>'
                   for w in report.get("warnings", []))
    page = page_html(title, _verdict_html(report),
                     kind_blurb(OWNERSHIP_KIND) + warn + ownership_details_html(report))
    paths["html"] = write_text(out / "report.html", page)
    return paths
