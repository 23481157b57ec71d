"""One HTML page from several runs (``leakprobe report``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def audit_reports(run: str | Path) -> list[Path]:
    """The audit reports behind ``run``.

    Args:
        run: a ``report.json`` file or a folder holding one; a defence sweep's report
            (``kind: encoder-defence``) stands for the audit report of each setting.
    Returns:
        The ``report.json`` paths (a file that cannot be read is returned as it is, for
        :func:`~leakprobe.report.html.render_reports` to name the problem).
    """
    path = Path(run)
    if path.is_dir():
        path = path / "report.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return [path]
    if isinstance(data, dict) and data.get("kind") == "encoder-defence":
        return [path.parent / s["report"] for s in data.get("settings", []) if s.get("report")]
    return [path]


def render_runs(runs: Sequence[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """Render the audit reports of ``runs`` (see :func:`audit_reports`) as one HTML page.

    Returns:
        What :func:`~leakprobe.report.html.render_reports` wrote (``"html"``: the page).
    """
    from leakprobe.report.html import render_reports

    return render_reports([p for run in runs for p in audit_reports(run)], out_dir)
