"""The study report: ``study.json``, ``report.html`` and PNGs from the cells' records.

What it shows:

- one row per cell: paradigm, defence and strength, seed, utility (k-NN and linear probe,
  50/50 on the utility set), each attack's AUC and TPR at 1% FPR with 95% intervals, and the
  epsilon spent by DP cells;
- privacy against utility: every cell as a point (linear-probe accuracy, AUC), one panel per
  attack;
- defence trade-off curves: per defence kind and paradigm, AUC against the defence strength
  and against utility (mean over seeds), the undefended run as the reference point;
- the LpLA question (do better encoders leak more?): paradigms ranked by utility and by
  leakage (the strongest non-blind attack's AUC) on their undefended cells, and Spearman's
  rank correlation between utility and AUC, across undefended cells and across all cells.
  With few cells the correlation is weak evidence; ``n`` and the p-value are reported.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from leakprobe.io import write_json, write_text
from leakprobe.report.html import _CSS, _esc, _fmt, _fmt_ci, figure_html
from leakprobe.report.plots import new_figure, plot_curves, save_figure
from leakprobe.report.schema import is_blind, leakprobe_version, to_jsonable
from leakprobe.study.config import StudyConfig

STUDY_FORMAT = "leakprobe-study/1"
UTILITY_KEY = "linear_probe_accuracy"
_STRENGTH_LABEL = {"epochs": "epochs trained", "noise_multiplier": "DP noise multiplier",
                   "target_epsilon": "DP target epsilon", "crop_min": "SCSR crop minimum"}


def _attacks(records: list[dict]) -> list[str]:
    names: list[str] = []
    for r in records:
        names.extend(a["attack"] for a in r["attacks"] if a["attack"] not in names)
    return names


def _auc(record: dict, attack: str) -> float | None:
    for a in record["attacks"]:
        if a["attack"] == attack:
            return a["auc"]
    return None


def leakage(record: dict) -> float:
    """The cell's leakage: the highest AUC of its non-blind attacks."""
    aucs = [a["auc"] for a in record["attacks"] if not is_blind(a["attack"])]
    return float(max(aucs)) if aucs else float("nan")


def _spearman(x: list[float], y: list[float]) -> dict:
    from scipy.stats import spearmanr

    pairs = [(a, b) for a, b in zip(x, y, strict=True)
             if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3:
        return {"rho": None, "p": None, "n": len(pairs)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = spearmanr([p[0] for p in pairs], [p[1] for p in pairs])
    rho, p = float(res.statistic), float(res.pvalue)
    return {"rho": rho if math.isfinite(rho) else None, "p": p if math.isfinite(p) else None,
            "n": len(pairs)}


def _ranking(records: list[dict], attacks: list[str]) -> dict:
    """Paradigms ranked by utility and by leakage on their undefended cells, and Spearman."""
    by_paradigm: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["defence"] == "none":
            by_paradigm[r["paradigm"]].append(r)
    rows = []
    for name, recs in by_paradigm.items():
        rows.append({
            "paradigm": name, "cells": len(recs),
            "utility": float(np.mean([r["utility"][UTILITY_KEY] for r in recs])),
            "knn_accuracy": float(np.mean([r["utility"]["knn_accuracy"] for r in recs])),
            "leakage": float(np.mean([leakage(r) for r in recs])),
            "auc": {a: float(np.mean([_auc(r, a) for r in recs])) for a in attacks
                    if all(_auc(r, a) is not None for r in recs)},
        })
    for key in ("utility", "leakage"):
        for rank, row in enumerate(sorted(rows, key=lambda r: -r[key]), 1):
            row[f"rank_{key}"] = rank
    rows.sort(key=lambda r: r["rank_utility"])
    undefended = [r for r in records if r["defence"] == "none"]
    attacks = [a for a in attacks if not is_blind(a)]  # model-free: nothing to correlate
    corr: dict[str, Any] = {}
    for scope, recs in (("undefended_cells", undefended), ("all_cells", records),
                        ("paradigms", None)):
        if recs is None:
            util = [r["utility"] for r in rows]
            corr[scope] = {"leakage": _spearman(util, [r["leakage"] for r in rows]),
                           **{a: _spearman(util, [r["auc"].get(a) for r in rows])
                              for a in attacks}}
            continue
        util = [r["utility"][UTILITY_KEY] for r in recs]
        corr[scope] = {"leakage": _spearman(util, [leakage(r) for r in recs]),
                       **{a: _spearman(util, [_auc(r, a) for r in recs]) for a in attacks}}
    return {"paradigms": rows, "spearman_utility_vs_auc": corr,
            "utility_metric": UTILITY_KEY, "leakage": "max AUC over non-blind attacks"}


def _strength_x(record: dict, study: StudyConfig, kind: str, strength_name: str) -> float:
    """x of a cell on a defence's curve; the undefended cell sits at 'no defence'."""
    if record["defence"] != "none":
        return float(record["strength"])
    p = study.paradigm(record["paradigm"])
    if kind == "early-stopping":
        return float(record.get("epochs_trained") or p.train.epochs)
    if kind == "scsr":
        return float(p.crop_scale[0])
    return 0.0 if strength_name == "noise_multiplier" else math.inf


def _tradeoffs(study: StudyConfig, records: list[dict], attacks: list[str]) -> dict:
    """Per defence kind and paradigm: points (strength, utility, AUC per attack), seed means."""
    out: dict[str, dict] = {}
    for d in study.defences:
        if d.kind == "none":
            continue
        per_paradigm = {}
        for p in study.paradigms:
            if d.paradigms and p.name not in d.paradigms:
                continue
            recs = [r for r in records if r["paradigm"] == p.name and
                    (r["defence"] == d.kind or r["defence"] == "none")]
            groups: dict[float, list[dict]] = defaultdict(list)
            for r in recs:
                groups[_strength_x(r, study, d.kind, d.strength)].append(r)
            points = []
            for x in sorted(groups):
                g = groups[x]
                points.append({
                    "strength": x, "undefended": g[0]["defence"] == "none", "cells": len(g),
                    "utility": float(np.mean([r["utility"][UTILITY_KEY] for r in g])),
                    "epsilon": (float(np.mean([r["epsilon"] for r in g]))
                                if all(r.get("epsilon") is not None for r in g) else None),
                    "auc": {a: float(np.mean([_auc(r, a) for r in g])) for a in attacks
                            if all(_auc(r, a) is not None for r in g)},
                })
            if len(points) > 0:
                per_paradigm[p.name] = points
        out[d.kind] = {"strength": d.strength, "paradigms": per_paradigm}
    return out


def build_study(study: StudyConfig, records: list[dict]) -> dict:
    """The ``study.json`` content from the cells' records (grid order kept)."""
    attacks = _attacks(records)
    cells = [{k: v for k, v in r.items() if k not in ("config",)} for r in records]
    return to_jsonable({
        "format": STUDY_FORMAT, "name": study.name, "leakprobe_version": leakprobe_version(),
        "config": study.to_dict(), "attacks": attacks, "n_cells": len(records),
        "cells": cells, "ranking": _ranking(records, attacks),
        "tradeoffs": _tradeoffs(study, records, attacks),
    })


# -- plots --------------------------------------------------------------------------------


_MARKERS = {"none": "o", "early-stopping": "s", "dp": "^", "scsr": "D"}


def plot_privacy_utility(summary: dict, path: Path) -> Path:
    """One panel per attack: each cell at (linear-probe accuracy, AUC), coloured by paradigm."""
    attacks = [a for a in summary["attacks"] if not is_blind(a)] or summary["attacks"]
    cols = min(3, max(1, len(attacks)))
    rows = math.ceil(len(attacks) / cols)
    fig = new_figure(4.2 * cols, 3.6 * rows)
    paradigms = sorted({c["paradigm"] for c in summary["cells"]})
    colours = {p: f"C{i % 10}" for i, p in enumerate(paradigms)}
    for i, attack in enumerate(attacks):
        ax = fig.add_subplot(rows, cols, i + 1)
        for c in summary["cells"]:
            auc = _auc(c, attack)
            if auc is None:
                continue
            ax.scatter(c["utility"][UTILITY_KEY], auc, color=colours[c["paradigm"]],
                       marker=_MARKERS.get(c["defence"], "o"), s=30, alpha=0.85)
        ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(attack, fontsize=9)
        ax.set_xlabel("linear-probe accuracy", fontsize=8)
        ax.set_ylabel("attack AUC", fontsize=8)
        ax.grid(True, alpha=0.3)
    if fig.axes:
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        handles = [Patch(color=colours[p], label=p) for p in paradigms]
        handles += [Line2D([], [], color="black", marker=m, linestyle="", label=k)
                    for k, m in _MARKERS.items()
                    if any(c["defence"] == k for c in summary["cells"])]
        fig.axes[0].legend(handles=handles, fontsize=7, loc="best")
    return save_figure(fig, path)


def write_plots(summary: dict, out: Path) -> dict[str, Path]:
    """``privacy_vs_utility.png`` and two trade-off PNGs per (defence, paradigm)."""
    images = {"privacy_vs_utility": plot_privacy_utility(summary, out / "privacy_vs_utility.png")}
    attacks = [a for a in summary["attacks"] if not is_blind(a)]
    for kind, block in summary["tradeoffs"].items():
        label = _STRENGTH_LABEL.get(block["strength"], block["strength"])
        for paradigm, points in block["paradigms"].items():
            finite = [p for p in points if p["strength"] is not None and
                      math.isfinite(p["strength"])]
            vs_strength = {a: ([p["strength"] for p in finite],
                               [p["auc"].get(a, math.nan) for p in finite]) for a in attacks}
            vs_utility = {a: ([p["utility"] for p in points],
                              [p["auc"].get(a, math.nan) for p in points]) for a in attacks}
            stem = f"tradeoff_{kind}_{paradigm}"
            images[f"{stem}_strength"] = plot_curves(
                vs_strength, label, "attack AUC", out / f"{stem}_strength.png",
                title=f"{paradigm}: {kind} (AUC vs strength)")
            images[f"{stem}_utility"] = plot_curves(
                vs_utility, "linear-probe accuracy", "attack AUC", out / f"{stem}_utility.png",
                title=f"{paradigm}: {kind} (AUC vs utility)")
    return images


# -- HTML ---------------------------------------------------------------------------------


def _setting(c: dict) -> str:
    if c["defence"] == "none":
        return "none"
    return f"{c['defence']} {c['strength_name']}={c['strength']:g}"


def _cells_table(summary: dict) -> str:
    attacks = summary["attacks"]
    head = ("<tr><th>cell</th><th>paradigm</th><th>defence</th><th>seed</th><th>epochs</th>"
            "<th>k-NN</th><th>linear probe</th><th>&epsilon;</th>"
            + "".join(f"<th>{_esc(a)}<br>AUC [95% CI]</th><th>{_esc(a)}<br>TPR@1%FPR</th>"
                      for a in attacks) + "</tr>")
    rows = []
    for c in summary["cells"]:
        link = f"cells/{c['folder']}/audit/report.html"
        cells = [f'<td><a href="{_esc(link)}">{_esc(c["name"])}</a></td>',
                 f"<td>{_esc(c['paradigm'])}</td>", f"<td>{_esc(_setting(c))}</td>",
                 f'<td class="num">{_fmt(c["seed"])}</td>',
                 f'<td class="num">{_fmt(c.get("epochs_trained"))}</td>',
                 f'<td class="num">{_fmt(c["utility"]["knn_accuracy"])}</td>',
                 f'<td class="num">{_fmt(c["utility"][UTILITY_KEY])}</td>',
                 f'<td class="num">{_fmt(c.get("epsilon"), 2)}</td>']
        by_name = {a["attack"]: a for a in c["attacks"]}
        for a in attacks:
            r = by_name.get(a)
            if r is None:
                cells += ["<td></td>", "<td></td>"]
                continue
            cells += [f'<td class="num">{_fmt(r["auc"])} {_fmt_ci(r["auc_ci"])}</td>',
                      f'<td class="num">{_fmt(r["tpr_at_1pct_fpr"])} '
                      f'{_fmt_ci(r["tpr_at_1pct_fpr_ci"])}</td>']
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="metrics">{head}{"".join(rows)}</table>'


def _ranking_html(summary: dict) -> str:
    rank = summary["ranking"]
    head = ("<tr><th>paradigm</th><th>undefended cells</th><th>linear probe</th><th>k-NN</th>"
            "<th>rank by utility</th><th>leakage (max AUC)</th><th>rank by leakage</th></tr>")
    body = "".join(
        f"<tr><td>{_esc(r['paradigm'])}</td><td class=\"num\">{r['cells']}</td>"
        f'<td class="num">{_fmt(r["utility"])}</td><td class="num">{_fmt(r["knn_accuracy"])}</td>'
        f'<td class="num">{r["rank_utility"]}</td><td class="num">{_fmt(r["leakage"])}</td>'
        f'<td class="num">{r["rank_leakage"]}</td></tr>' for r in rank["paradigms"])
    corr = rank["spearman_utility_vs_auc"]
    names = list(next(iter(corr.values())).keys()) if corr else []
    chead = "<tr><th>scope</th>" + "".join(f"<th>{_esc(n)}</th>" for n in names) + "</tr>"
    cbody = "".join(
        f"<tr><td>{_esc(scope.replace('_', ' '))}</td>" + "".join(
            f'<td class="num">{_fmt(v["rho"])} <span class="muted">(p {_fmt(v["p"])}, '
            f'n {v["n"]})</span></td>' for v in block.values()) + "</tr>"
        for scope, block in corr.items())
    return (f'<table class="metrics">{head}{body}</table>'
            "<p>Spearman rank correlation between utility (linear-probe accuracy) and attack "
            "AUC. Positive: better encoders leak more (the LpLA claim).</p>"
            f'<table class="metrics">{chead}{cbody}</table>')


def _figures(images: dict[str, Path], keys: list[str]) -> str:
    figs = "".join(figure_html(images[k], k.replace("_", " ")) for k in keys if k in images)
    return f'<div class="plots">{figs}</div>'


def render_html(summary: dict, images: dict[str, Path]) -> str:
    """The study page (every string from the config or cells is escaped)."""
    cfg = summary["config"]
    facts = {"data": cfg["data"], "image size": cfg["image_size"], "members": cfg["members"],
             "non-members": cfg["nonmembers"], "seeds": cfg["seeds"],
             "knowledge": f"{cfg['knowledge']['setting']}, {cfg['knowledge']['folds']} folds, "
                          f"{cfg['knowledge']['repeats']} repeats",
             "utility data": cfg["utility_data"] + (
                 f" (at most {cfg['utility_max_images']} images)"
                 if cfg.get("utility_max_images") else ""),
             "cells": summary["n_cells"],
             "leakprobe version": summary["leakprobe_version"]}
    facts_html = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>"
                         for k, v in facts.items())
    warnings_ = sorted({w for c in summary["cells"] for w in c.get("warnings") or []})
    warn_html = "".join(f'<div class="warning">{_esc(w)}</div>' for w in warnings_)
    tradeoff_keys = [k for k in images if k.startswith("tradeoff_")]
    title = f"leakprobe study: {summary['name']}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_esc(title)}</h1>"
        '<p class="muted">Each cell trains an encoder (paradigm x defence x seed), audits it '
        "for membership leakage (AUC 0.5 is chance; 95% stratified-bootstrap intervals) and "
        "measures its utility (k-NN / linear probe, 50/50 split of the utility set).</p>"
        f'<table class="kv">{facts_html}</table>{warn_html}'
        f"<h2>Cells</h2>{_cells_table(summary)}"
        f"<h2>Privacy vs utility</h2>{_figures(images, ['privacy_vs_utility'])}"
        f"<h2>Defence trade-offs</h2>{_figures(images, tradeoff_keys)}"
        f"<h2>Do better encoders leak more?</h2>{_ranking_html(summary)}"
        "</body></html>\n"
    )


def write_study_report(summary: dict, out: str | Path) -> dict[str, Path]:
    """Write ``study.json``, the PNGs and ``report.html`` (atomically) into ``out``."""
    out = Path(out)
    paths = {"json": write_json(out / "study.json", summary)}
    images = write_plots(summary, out)
    paths.update(images)
    paths["html"] = write_text(out / "report.html", render_html(summary, images))
    return paths


def table_lines(summary: dict) -> list[str]:
    """The per-cell table as text: utility, each attack's AUC, epsilon where DP."""
    attacks = summary["attacks"]
    short = [a.replace("encodermi-", "emi-").replace("baseline-", "b-") for a in attacks]
    head = f"{'cell':28s} {'k-NN':>6s} {'probe':>6s} {'eps':>7s} " + " ".join(
        f"{s:>10s}" for s in short)
    lines = [head]
    for c in summary["cells"]:
        eps = c.get("epsilon")
        by_name = {a["attack"]: a["auc"] for a in c["attacks"]}
        lines.append(
            f"{c['name']:28s} {c['utility']['knn_accuracy']:6.3f} "
            f"{c['utility'][UTILITY_KEY]:6.3f} {'' if eps is None else f'{eps:.2f}':>7s} "
            + " ".join(f"{by_name[a]:10.3f}" if a in by_name else f"{'':10s}" for a in attacks))
    return lines


def print_table(summary: dict, echo=print) -> None:
    """Print :func:`table_lines` and the utility-vs-leakage correlation through ``echo``."""
    for line in table_lines(summary):
        echo(line)
    corr = summary["ranking"]["spearman_utility_vs_auc"]
    for scope in ("undefended_cells", "all_cells"):
        s = corr.get(scope, {}).get("leakage") or {}
        if s.get("rho") is not None:
            echo(f"Spearman(utility, max AUC) over {scope.replace('_', ' ')}: "
                 f"{s['rho']:.3f} (p {s['p']:.3f}, n {s['n']})")
