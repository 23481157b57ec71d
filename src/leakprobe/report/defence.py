"""The report of a defence sweep: a table and trade-off plots (attack AUC vs utility/strength).

Reads the ``encoder-defence`` report of :func:`leakprobe.workflows.defend.defend_encoder`;
every string from it is HTML-escaped. An epsilon is shown as a number only when it is a DP
guarantee; otherwise as ``none (nominal X, not a guarantee)`` with the caveat under the table
(:mod:`leakprobe.training.dp_record`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from leakprobe.defences.kinds import STRENGTH_AXIS_LABELS, SWEEP_DEFENCES, resolve_defence
from leakprobe.io import write_json, write_text
from leakprobe.report.html import esc, figure_html, fmt, kind_blurb, page_html, verdict_html
from leakprobe.report.plots import new_figure, plot_curves, save_figure
from leakprobe.report.schema import DEFENCE_KIND, summary_rows
from leakprobe.training.dp_record import dp_epsilon, epsilon_text

__all__ = ["build_defence_report", "defence_rows", "defence_summary", "plot_tradeoff",
           "write_defence_report"]

# sweep name (``--defence``) -> the strength axis's label
STRENGTH_LABELS = {name: STRENGTH_AXIS_LABELS[resolve_defence(name)[1]]
                   for name in SWEEP_DEFENCES}


def build_defence_report(
    *,
    defence: str,
    settings: list[dict[str, Any]],
    warnings: list[str],
    context: dict[str, Any],
) -> dict[str, Any]:
    """Assemble the report of a defence sweep (``kind: encoder-defence``).

    Args:
        defence: the sweep's defence (``early-stopping``, ``dp``, ``dp-epsilon``, ``scsr``).
        settings: one entry per strength (``name``, ``setting``, ``strength``, ``utility``,
            ``epsilon``..., ``report``: its audit report's path, ``results``: that report's).
        warnings: shown first.
        context: the sweep's data, recipe, training and audit protocol.
    Returns:
        The report as plain JSON types (paths, tuples and other objects become strings and
        lists); ``summary`` is its verdict in one sentence (:func:`defence_summary`).
    """
    report = {"kind": DEFENCE_KIND, "summary": "", "defence": defence, "settings": settings,
              "warnings": warnings, "context": context}
    plain: dict[str, Any] = json.loads(json.dumps(report, default=str))
    plain["summary"] = defence_summary(plain)
    return plain


def _setting_text(row: dict[str, Any]) -> str:
    setting = row.get("setting")
    if isinstance(setting, dict) and setting:
        return ", ".join(f"{k}={v}" for k, v in setting.items())
    return str(row.get("name"))


def defence_summary(report: dict[str, Any]) -> str:
    """The one-sentence verdict of a defence sweep: which setting lowers the strongest attack's
    AUC most, against the setting where it is highest, and at what utility cost.

    The strongest attack is the non-blind attack with the highest AUC in any setting; the
    p-value quoted is that attack's own test in the lowering setting (uncorrected).
    """
    from leakprobe.report.schema import is_blind
    from leakprobe.report.summary import p_text

    attacks, rows = defence_rows(report)
    attacks = [a for a in attacks if not is_blind(a)]
    kind = str(report.get("defence") or "defence")
    if not rows or not attacks:
        return f"No {kind} setting was audited by a membership attack"
    ranked = [(r["auc"][a], a, r) for r in rows for a in attacks
              if isinstance(r["auc"].get(a), (int, float))]
    if not ranked:
        return f"No {kind} setting has an attack AUC"
    _, attack, top = max(ranked, key=lambda t: t[0])
    with_attack = [r for r in rows if isinstance(r["auc"].get(attack), (int, float))]
    low = min(with_attack, key=lambda r: r["auc"][attack])
    setting = next(s for s in report["settings"] if s["name"] == low["name"])
    p = next((x["p_value"] for x in summary_rows(setting) if x["attack"] == attack), None)
    p_part = f" (p = {p_text(float(p))})" if isinstance(p, (int, float)) else ""
    if low is top and len(rows) > 1:
        return (f"No {kind} setting lowers the strongest attack, {attack}: AUC "
                f"{low['auc'][attack]:.2f} in all {len(rows)} settings")
    if low is top:
        return (f"In the one {kind} setting ({_setting_text(low)}) the strongest attack, "
                f"{attack}, reaches AUC {low['auc'][attack]:.2f}{p_part}"
                + (f" at linear-probe accuracy {low['probe']:.2f}"
                   if isinstance(low["probe"], (int, float)) else ""))
    text = (f"Of {len(rows)} {kind} settings, {_setting_text(low)} lowers the strongest "
            f"attack, {attack}, most: AUC {low['auc'][attack]:.2f}{p_part} against "
            f"{top['auc'][attack]:.2f} at {_setting_text(top)}")
    if isinstance(low["probe"], (int, float)) and isinstance(top["probe"], (int, float)):
        cost = top["probe"] - low["probe"]
        pair = f"({low['probe']:.2f} vs {top['probe']:.2f})"
        text += (f", at a cost of {cost:.2f} linear-probe accuracy {pair}" if cost > 0.005
                 else f", while linear-probe accuracy rises {pair}" if cost < -0.005
                 else f", at no cost in linear-probe accuracy {pair}")
    else:
        text += " (utility not measured)"
    return text


def defence_rows(report: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """Attack names and one flat row per setting (name, utility, epsilon, AUC per attack).

    Returns:
        ``(attacks, rows)``; a row has ``name``, ``setting``, ``strength``, ``knn``,
        ``probe``, ``epsilon`` (a guarantee or None), ``epsilon_nominal``, ``caveat``,
        ``epsilon_text`` (how to show it: ``"2.1"``, ``"none (nominal 6.8, not a
        guarantee)"``, ``"inf (no noise)"``, ``"-"``), ``auc`` (attack -> AUC) and ``auc_ci``
        (attack -> interval).
    """
    attacks: list[str] = []
    rows = []
    for s in report["settings"]:
        util = s.get("utility") or {}
        auc, ci = {}, {}
        for r in summary_rows(s):
            if r["attack"] not in attacks:
                attacks.append(r["attack"])
            auc[r["attack"]] = r["auc"]
            ci[r["attack"]] = r["auc_ci"]
        eps = dp_epsilon(s.get("dp"))
        rows.append({"name": s["name"], "setting": s["setting"], "strength": s.get("strength"),
                     "knn": util.get("knn_accuracy"), "probe": util.get("linear_probe_accuracy"),
                     "epsilon": eps["epsilon"] if eps else s.get("epsilon"),
                     "epsilon_nominal": eps["epsilon_nominal"] if eps else None,
                     "caveat": eps["caveat"] if eps else None,
                     "epsilon_text": epsilon_text(s.get("dp"), detail=False,
                                                  epsilon=s.get("epsilon")),
                     "auc": auc, "auc_ci": ci})
    return attacks, rows


def plot_tradeoff(report: dict[str, Any], path: str | Path) -> Path:
    """Scatter of attack AUC (one colour per attack) against linear-probe utility.

    Each point is labelled with its setting's name; settings without utility are skipped.
    """
    attacks, rows = defence_rows(report)
    rows = [r for r in rows if r["probe"] is not None]
    fig = new_figure(6.0, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    for a in attacks:
        pts = [(r["probe"], r["auc"][a], r["name"]) for r in rows if a in r["auc"]]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=22, label=a)
        for x, y, name in pts:
            ax.annotate(name, (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlabel("utility: linear-probe accuracy")
    ax.set_ylabel("attack AUC")
    ax.set_title(f"{report.get('defence')}: privacy vs utility", fontsize=10)
    ax.grid(True, alpha=0.3)
    if attacks:
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def _plots(report: dict[str, Any], out: Path) -> dict[str, Path]:
    attacks, rows = defence_rows(report)
    label = STRENGTH_LABELS.get(report.get("defence", ""), "strength")
    paths = {}
    with_util = [r for r in rows if r["probe"] is not None]
    if with_util:
        paths["tradeoff"] = plot_tradeoff(report, out / "tradeoff.png")
    ranked = sorted((r for r in rows if r["strength"] is not None), key=lambda r: r["strength"])
    if ranked:
        xs = [r["strength"] for r in ranked]
        series = {f"{a} AUC": (xs, [r["auc"].get(a) for r in ranked]) for a in attacks}
        if all(r["probe"] is not None for r in ranked):
            series["linear probe"] = (xs, [r["probe"] for r in ranked])
            series["k-NN"] = (xs, [r["knn"] for r in ranked])
        paths["strength"] = plot_curves(series, label, "AUC / accuracy", out / "strength.png",
                                        title=f"{report.get('defence')}: effect of strength")
    return paths


def _table_html(report: dict[str, Any]) -> str:
    attacks, rows = defence_rows(report)
    head = "".join(f"<th>{esc(a)} AUC</th>" for a in attacks)
    out = ['<table class="metrics"><tr><th>setting</th><th>epsilon</th><th>k-NN acc.</th>'
           f"<th>linear probe</th>{head}<th>audit</th></tr>"]
    for r, s in zip(rows, report["settings"], strict=True):
        setting = ", ".join(f"{k}={v}" for k, v in r["setting"].items())
        cells = []
        for a in attacks:
            ci = r["auc_ci"].get(a)
            interval = (f' <span class="muted">[{fmt(ci[0])}, {fmt(ci[1])}]</span>'
                        if isinstance(ci, list) and len(ci) == 2 else "")
            cells.append(f'<td class="num">{fmt(r["auc"].get(a))}{interval}</td>')
        if r["epsilon_text"] != "-":
            eps = esc(r["epsilon_text"])
        else:
            eps = "&infin;" if s.get("dp") else "&mdash;"
        link = s.get("report", "")
        html_link = esc(str(Path(link).with_suffix(".html"))) if link else ""
        out.append(f"<tr><td>{esc(setting)}</td><td class=\"num\">{eps}</td>"
                   f'<td class="num">{fmt(r["knn"])}</td><td class="num">{fmt(r["probe"])}</td>'
                   + "".join(cells)
                   + (f'<td><a href="{html_link}">{esc(r["name"])}</a></td>' if link
                      else "<td></td>") + "</tr>")
    out.append("</table>")
    caveats = sorted({r["caveat"] for r in rows
                      if r["caveat"] and r["epsilon"] is None and r["epsilon_nominal"] is not None})
    out.extend(f'<div class="warning">epsilon is not a DP guarantee here: {esc(c)}</div>'
               for c in caveats)
    return "".join(out)


def write_defence_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``tradeoff.png``, ``strength.png`` and ``report.html``.

    ``report.html`` inlines the PNGs (data URIs); the links to the settings' own reports
    are relative, so send the folder to keep them.

    Args:
        report: an ``encoder-defence`` report.
        out_dir: destination folder.
    Returns:
        ``{"json", "tradeoff", "strength", "html"}`` -> paths (plots only when drawable).
    """
    out = Path(out_dir)
    paths: dict[str, Path] = {"json": write_json(out / "report.json", report)}
    paths.update(_plots(report, out))
    ctx = report.get("context", {})
    title = f"leakprobe defence report: {report.get('defence', '')}"
    warn = "".join(f'<div class="warning">{esc(w)}</div>' for w in report.get("warnings", []))
    facts = "".join(f"<tr><th>{esc(k)}</th><td>{esc(ctx.get(k))}</td></tr>" for k in
                    ("data", "members", "nonmembers", "attacks", "knowledge", "seed")
                    if k in ctx)
    recipe = ctx.get("recipe", {})
    facts += (f"<tr><th>recipe</th><td>{esc(recipe.get('method'))} / "
              f"{esc(recipe.get('arch'))}, crop scale {esc(recipe.get('crop_scale'))}</td></tr>")
    captions = {"tradeoff": "Attack AUC vs linear-probe utility",
                "strength": "AUC and utility vs defence strength"}
    plots = "".join(figure_html(p, captions[k]) for k, p in paths.items() if k in captions)
    summary = str(report.get("summary") or defence_summary(report))
    body = (
        f"{kind_blurb('encoder-defence')}{warn}"
        f'<h2>Settings</h2><div class="scroll">{_table_html(report)}</div>'
        f'<h2>Trade-off</h2><div class="plots">{plots}</div>'
        '<details class="config"><summary>Configuration: data, attacks and recipe</summary>'
        f'<table class="kv card">{facts}</table></details>'
    )
    paths["html"] = write_text(out / "report.html", page_html(title, verdict_html(summary), body))
    return paths
