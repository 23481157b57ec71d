"""What the audit commands print: the verdict and the result table of a membership report."""

from __future__ import annotations

from pathlib import Path

import typer


def print_summary(report: dict, out: Path | None) -> None:
    """The report's one-sentence verdict (its ``summary``; computed for a report written
    before the key existed), one row per attack (AUC, 95% CI, p-value, TPR at 1% FPR,
    balanced accuracy), then the report's warnings (stderr) and, with ``out``, where its HTML
    page is."""
    from leakprobe.report.schema import summary_rows
    from leakprobe.report.summary import membership_summary

    typer.echo(report.get("summary") or membership_summary(report))
    rows = summary_rows(report)
    width = max([len("attack")] + [len(str(r["attack"])) for r in rows])  # the longest name
    typer.echo(f"{'attack':{width}s} {'AUC':>6s} {'95% CI':>15s} {'p':>8s} {'TPR@1%':>7s} "
               f"{'bal.acc':>7s}")
    for r in rows:
        ci, tpr, p = r["auc_ci"], r["tpr_at_1pct_fpr"], r["p_value"]
        interval = f"[{ci[0]:.3f}, {ci[1]:.3f}]"
        tpr_text = "n/a" if tpr is None else f"{tpr:.3f}"  # n/a: < 1,000 non-members
        p_text = "n/a" if p is None else f"{p:.2g}"  # n/a: a fitted scorer, no permutations
        typer.echo(f"{r['attack']!s:{width}s} {r['auc']:6.3f} {interval:>15s} {p_text:>8s} "
                   f"{tpr_text:>7s} {r['balanced_accuracy']:7.3f}")
    for w in report.get("warnings", []):
        typer.echo(f"warning: {w}", err=True)
    if out is not None:
        typer.echo(f"report: {out / 'report.html'}")
