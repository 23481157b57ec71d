"""PNG plots of audit reports: ROC (linear and log-log), score histograms, generic curves.

Figures are built as ``matplotlib.figure.Figure`` objects on the Agg canvas, never through
pyplot: nothing is registered in pyplot's global figure list, no GUI backend is touched
(safe in threads and on headless machines), and each figure is released after saving.
PNG files are written atomically; :func:`png_data_uri` inlines one into an HTML page.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from leakprobe.evaluation.metrics import MIN_NONMEMBER_FALSE_POSITIVES, roc_points
from leakprobe.io import atomic_write
from leakprobe.report.schema import is_blind

__all__ = ["plot_curves", "plot_histograms", "plot_roc", "png_data_uri"]

_DPI = 110


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)  # Agg backend, independent of pyplot's global backend
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    try:
        fig.tight_layout()
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        fig.clear()  # free the artists; the figure was never known to pyplot


def png_data_uri(path: str | Path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI (an ``<img>`` needing no other file)."""
    data = Path(path).read_bytes()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _samples(result: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    samples = result.get("samples") or {}
    score = samples.get("score")
    member = samples.get("is_member")
    if not score or member is None or len(score) != len(member):
        return None
    return np.asarray(score, dtype=np.float64), np.asarray(member, dtype=bool)


def _roc(result: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    roc = result.get("roc")
    if roc and roc.get("fpr") and roc.get("tpr"):
        return np.asarray(roc["fpr"], dtype=np.float64), np.asarray(roc["tpr"], dtype=np.float64)
    samples = _samples(result)
    if samples is None:
        return None
    pts = roc_points(*samples)
    return np.asarray(pts["fpr"]), np.asarray(pts["tpr"])


def _auc_label(result: dict[str, Any]) -> str:
    metrics = result.get("metrics") or {}
    name = str(result.get("attack", "?"))
    if "auc" not in metrics:
        return name
    label = f"{name} (AUC {metrics['auc']:.3f}"
    ci = metrics.get("auc_ci")
    if ci and len(ci) == 2 and ci[0] is not None and ci[1] is not None:
        label += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    return label + ")"


def plot_roc(report: dict[str, Any], path: str | Path, loglog: bool = False) -> Path:
    """ROC curves of every attack in a report, AUC in the legend, chance diagonal.

    Args:
        report: a membership report (see :func:`leakprobe.report.schema.build_report`).
        path: destination PNG.
        loglog: log-log axes from ``min(1e-3, 1/n_nonmembers)`` to 1, the view that shows
            the low-FPR regime; points at FPR 0 are drawn on the left edge, points at TPR 0
            are left out. FPRs below ``10 / n_nonmembers`` (fewer than 10 non-members above
            the threshold, where leakprobe reports no TPR) are shaded "not resolvable", once
            per distinct non-member count.
    Returns:
        The PNG path.
    """
    fig = new_figure(5.6, 5.0)
    ax = fig.add_subplot(1, 1, 1)
    results = report.get("results") or []
    n0_max = max((int(r.get("n_nonmembers") or 0) for r in results), default=0)
    lower = min(1e-3, 1.0 / n0_max) if n0_max > 0 else 1e-3
    for r in results:
        roc = _roc(r)
        if roc is None:
            continue
        fpr, tpr = roc
        style: dict[str, Any] = (
            {"linestyle": "--", "color": "0.45"} if is_blind(str(r.get("attack"))) else {}
        )
        if loglog:
            # TPR 0 has no place on a log axis; FPR 0 (zero false positives) is drawn on the
            # left edge.
            keep = tpr > 0
            fpr, tpr = np.clip(fpr[keep], lower, 1.0), np.clip(tpr[keep], lower, 1.0)
        # Straight segments between ROC vertices: ties give the correct diagonal steps.
        ax.plot(fpr, tpr, label=_auc_label(r), linewidth=1.5, **style)
    if loglog:
        n0s = sorted({int(r.get("n_nonmembers") or 0) for r in results} - {0})
        for n0 in n0s:
            edge = min(1.0, MIN_NONMEMBER_FALSE_POSITIVES / n0)
            label = "not resolvable (FPR < 10/n0" + ("" if len(n0s) == 1 else f", n0={n0:,}")
            ax.axvspan(lower, edge, color="0.5", alpha=0.12, linewidth=0, label=label + ")")
        ax.plot([lower, 1.0], [lower, 1.0], color="0.7", linestyle=":", label="chance")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lower, 1.0)
        ax.set_ylim(lower, 1.0)
    else:
        ax.plot([0, 1], [0, 1], color="0.7", linestyle=":", label="chance")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.005)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    kind = report.get("kind", "")
    ax.set_title(f"ROC{' (log-log)' if loglog else ''} {kind}".strip(), fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    return save_figure(fig, path)


def plot_histograms(report: dict[str, Any], path: str | Path, bins: int = 40) -> Path:
    """Grid of member vs non-member score histograms, one panel per attack.

    Histograms are density-normalised (the two groups may differ in size) and share bin
    edges within a panel. Attacks without per-sample scores get an empty, labelled panel.

    Args:
        report: a membership report.
        path: destination PNG.
        bins: maximum number of bins per panel.
    Returns:
        The PNG path.
    """
    results = report.get("results") or []
    n = max(1, len(results))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = new_figure(4.0 * cols, 3.0 * rows)
    for i, r in enumerate(results):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_title(_auc_label(r), fontsize=8)
        samples = _samples(r)
        if samples is None or not np.isfinite(samples[0]).all():
            ax.text(
                0.5, 0.5, "no per-sample scores", ha="center", va="center", transform=ax.transAxes
            )
            continue
        score, member = samples
        edges = np.histogram_bin_edges(score, bins=min(bins, max(5, score.size // 5)))
        if member.any():
            ax.hist(
                score[member],
                bins=edges,  # type: ignore[arg-type]  # matplotlib's stub omits ndarray bins
                density=True,
                alpha=0.55,
                label="members",
                color="tab:red",
            )
        if (~member).any():
            ax.hist(
                score[~member],
                bins=edges,  # type: ignore[arg-type]  # matplotlib's stub omits ndarray bins
                density=True,
                alpha=0.55,
                label="non-members",
                color="tab:blue",
            )
        ax.set_xlabel("score (higher = member)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    if not results:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
    return save_figure(fig, path)


def plot_curves(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str,
    path: str | Path,
    title: str = "",
    logx: bool = False,
    logy: bool = False,
) -> Path:
    """Line plot of named (x, y) series, e.g. attack AUC vs query budget or utility vs epoch.

    Args:
        series: ``{label: (x values, y values)}``.
        xlabel: x-axis label.
        ylabel: y-axis label.
        path: destination PNG.
        title: figure title.
        logx: logarithmic x axis.
        logy: logarithmic y axis.
    Returns:
        The PNG path.
    """
    fig = new_figure(5.6, 4.2)
    ax = fig.add_subplot(1, 1, 1)
    for label, (x, y) in series.items():
        ax.plot(
            np.asarray(x, dtype=np.float64),
            np.asarray(y, dtype=np.float64),
            marker="o",
            markersize=3,
            linewidth=1.5,
            label=str(label),
        )
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    return save_figure(fig, path)
