"""The study report: ``study.json``, ``report.html`` and PNGs from the cells' records.

What it shows:

- first, the grid's main finding in one sentence (:func:`study_summary`, the ``summary`` key
  of ``study.json``, also the first line the ``study`` command prints);
- one row per cell: paradigm, defence and strength, seed, utility (k-NN and linear probe,
  50/50 on the utility set), each attack's AUC and TPR at 1% FPR with 95% intervals, and the
  epsilon spent by DP cells (a number only when it is a DP guarantee, else ``none (nominal
  X, not a guarantee)`` with the caveat under the table, :mod:`leakprobe.training.dp_record`);
- privacy against utility: every cell as a point (linear-probe accuracy, AUC), one panel per
  attack;
- defence trade-off curves: per defence kind and paradigm, AUC against the defence strength
  and against utility (mean over seeds), the undefended run as the reference point;
- leakage of a cell: the AUC (interval, p-value) of each attack family's pre-declared
  *primary* attack (``primary_attacks`` of the config); the *headline* family's primary is
  the cell's leakage. The best AUC over all non-blind attacks is biased upwards (the maximum
  of 8-9 chance AUCs on 64 + 64 samples is about 0.6), so it is shown only as
  *best-of-many*, with its p-value against the permutation null of the maximum (all attacks
  of a cell share the label permutations, so the null maximum is taken permutation by
  permutation; ``n/a`` when the cell ran no permutations);
- the LpLA question (do better encoders leak more?): paradigms ranked by utility and by
  leakage (the headline primary's AUC, best-of-many beside it) on their undefended cells,
  and Spearman's rank correlation between utility and AUC, across undefended cells and
  across all cells. With few cells the correlation is weak evidence; ``n`` and the p-value
  are reported.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leakprobe.evaluation.permutation import max_statistic_p
from leakprobe.io import write_json, write_text
from leakprobe.report.html import esc, figure_html, fmt, fmt_ci, page_html, verdict_html
from leakprobe.report.plots import new_figure, plot_curves, save_figure
from leakprobe.report.schema import is_blind, leakprobe_version, to_jsonable
from leakprobe.study.config import StudyConfig, primary_attacks
from leakprobe.training.dp_record import dp_epsilon, epsilon_text

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


def leakage(record: dict, attack: str | None = None) -> float:
    """The cell's leakage: the AUC of ``attack`` (the headline primary; NaN when missing).

    Without ``attack``: the best-of-many maximum over the non-blind attacks (biased upwards;
    see :func:`best_of_many`).
    """
    if attack is None:
        return best_of_many(record)["auc"]
    auc = _auc(record, attack)
    return float(auc) if auc is not None else float("nan")


def best_of_many(record: dict) -> dict:
    """The highest AUC over the cell's non-blind attacks and its permutation p-value.

    Returns:
        ``{"attack", "auc", "p_value", "n_attacks", "permutations"}``: the argmax, the max
        (NaN without attacks), the p-value of the max against the permutation null of the
        maximum (:func:`~leakprobe.evaluation.permutation.max_statistic_p`; None when the
        attacks' permutations are missing or cannot be paired, e.g. an old record), how many
        attacks the max is over and the permutations behind the p-value.
    """
    rows = [a for a in record["attacks"] if not is_blind(a["attack"])]
    if not rows:
        return {"attack": None, "auc": float("nan"), "p_value": None, "n_attacks": 0,
                "permutations": 0}
    best = max(rows, key=lambda a: a["auc"])
    p = max_statistic_p({a["attack"]: a["auc"] for a in rows},
                        {a["attack"]: a.get("null_aucs") or [] for a in rows})
    return {"attack": best["attack"], "auc": float(best["auc"]), "p_value": p,
            "n_attacks": len(rows),
            "permutations": len(best.get("null_aucs") or []) if p is not None else 0}


def cell_leakage(record: dict, primaries: dict[str, str], headline_family: str | None) -> dict:
    """A cell's leakage: each family's primary attack, the headline, and best-of-many.

    Args:
        record: the cell record (``attacks`` rows of the study runner).
        primaries: family -> pre-declared primary attack.
        headline_family: the family whose primary is the cell's leakage.
    Returns:
        ``{"primary": {family: {"attack", "auc", "auc_ci", "p_value", "null_auc_band"}},
        "headline_family", "headline_attack", "headline_auc", "headline_p_value",
        "best_of_many": {...}}`` (a primary the cell did not run has ``auc`` None).
    """
    by_name = {a["attack"]: a for a in record["attacks"]}
    primary = {}
    for family, attack in primaries.items():
        r = by_name.get(attack) or {}
        primary[family] = {"attack": attack, "auc": r.get("auc"), "auc_ci": r.get("auc_ci"),
                           "p_value": r.get("p_value"),
                           "null_auc_band": r.get("null_auc_band")}
    head = primary.get(headline_family) if headline_family else None
    return {"primary": primary, "headline_family": headline_family,
            "headline_attack": head["attack"] if head else None,
            "headline_auc": head["auc"] if head else None,
            "headline_p_value": head["p_value"] if head else None,
            "best_of_many": best_of_many(record)}


def summary_primaries(summary: dict) -> tuple[dict[str, str], str | None]:
    """``(family -> primary attack, headline family)`` of a study summary.

    From its config block; an older summary without them gets the defaults for its attacks.
    """
    cfg = summary.get("config") or {}
    primaries = dict(cfg.get("primary_attacks") or {}) or primary_attacks(
        [a for a in summary.get("attacks", []) if not is_blind(a)])
    family = cfg.get("headline_family")
    if family not in primaries:
        family = next(iter(primaries), None)
    return primaries, family


def _cell_leak(cell: dict, summary: dict) -> dict:
    """The cell's ``leakage_summary`` (computed for summaries written before it existed)."""
    return cell.get("leakage_summary") or cell_leakage(cell, *summary_primaries(summary))


def _mean(values: list) -> float:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(vals)) if vals and len(vals) == len(values) else float("nan")


def _p_text(p: float | None) -> str:
    """A p-value for display: two decimals (three below 0.01), ``n/a`` when missing."""
    if p is None:
        return "n/a"
    return f"{p:.2f}" if p >= 0.01 else f"{p:.3f}"


def best_text(best: dict) -> str:
    """``best of 9: 0.630, p = 0.21`` (``p = n/a`` without permutations)."""
    auc = best.get("auc")
    shown = "n/a" if auc is None or not math.isfinite(auc) else f"{auc:.3f}"
    ps = best.get("p_values") if "p_values" in best else [best.get("p_value")]
    return (f"best of {best.get('n_attacks', 0)}: {shown}, p = "
            + "/".join(_p_text(p) for p in ps or [None]))


def _spearman(x: Sequence[float | None], y: Sequence[float | None]) -> dict:
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


def _ranking(records: list[dict], attacks: list[str], primaries: dict[str, str] | None = None,
             headline_family: str | None = None) -> dict:
    """Paradigms ranked by utility and by leakage on their undefended cells, and Spearman.

    Leakage is the headline primary attack's AUC (mean over the paradigm's undefended cells);
    the best-of-many maximum and its per-cell p-values are reported beside it, not ranked.
    """
    if primaries is None:
        primaries = primary_attacks([a for a in attacks if not is_blind(a)])
        headline_family = headline_family if headline_family in primaries \
            else next(iter(primaries), None)
    head = primaries.get(headline_family) if headline_family else None
    by_paradigm: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["defence"] == "none":
            by_paradigm[r["paradigm"]].append(r)
    rows: list[dict[str, Any]] = []
    for name, recs in by_paradigm.items():
        leaks = [cell_leakage(r, primaries, headline_family) for r in recs]
        bests = [lk["best_of_many"] for lk in leaks]
        rows.append({
            "paradigm": name, "cells": len(recs),
            "utility": float(np.mean([r["utility"][UTILITY_KEY] for r in recs])),
            "knn_accuracy": float(np.mean([r["utility"]["knn_accuracy"] for r in recs])),
            "leakage": _mean([leakage(r, head) for r in recs]) if head else float("nan"),
            "leakage_attack": head,
            "leakage_p_values": [lk["headline_p_value"] for lk in leaks],
            "primary": {f: {"attack": a, "auc": _mean([lk["primary"][f]["auc"]
                                                       for lk in leaks])}
                        for f, a in primaries.items()},
            "best_of_many": {"auc": _mean([b["auc"] for b in bests]),
                             "attacks": [b["attack"] for b in bests],
                             "p_values": [b["p_value"] for b in bests],
                             "n_attacks": max((b["n_attacks"] for b in bests), default=0)},
            "auc": {a: float(np.mean([_auc(r, a) for r in recs])) for a in attacks
                    if all(_auc(r, a) is not None for r in recs)},
        })
    for key in ("utility", "leakage"):  # NaN (no headline AUC) ranks last
        order = sorted(rows, key=lambda r: (not math.isfinite(r[key]), -r[key]))
        for rank, row in enumerate(order, 1):
            row[f"rank_{key}"] = rank
    rows.sort(key=lambda r: r["rank_utility"])
    undefended = [r for r in records if r["defence"] == "none"]
    attacks = [a for a in attacks if not is_blind(a)]  # model-free: nothing to correlate
    corr: dict[str, Any] = {}
    for scope, cells in (("undefended_cells", undefended), ("all_cells", records),
                         ("paradigms", None)):
        if cells is None:
            util = [r["utility"] for r in rows]
            corr[scope] = {"leakage": _spearman(util, [r["leakage"] for r in rows]),
                           **{a: _spearman(util, [r["auc"].get(a) for r in rows])
                              for a in attacks}}
            continue
        util = [r["utility"][UTILITY_KEY] for r in cells]
        corr[scope] = {"leakage": _spearman(util, [leakage(r, head) if head else None
                                                   for r in cells]),
                       **{a: _spearman(util, [_auc(r, a) for r in cells]) for a in attacks}}
    return {"paradigms": rows, "spearman_utility_vs_auc": corr,
            "utility_metric": UTILITY_KEY,
            "leakage": (f"AUC of the headline primary attack {head} ({headline_family} "
                        "family), mean over undefended cells" if head else
                        "no primary attack (no attack family in the study)"),
            "headline_family": headline_family, "headline_attack": head,
            "primary_attacks": dict(primaries),
            "best_of_many": "max AUC over the non-blind attacks (biased upwards), p-value "
                            "against the permutation null of the maximum, per cell"}


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


def _epsilon(record: dict) -> float | None:
    """A cell's DP guarantee (None: no DP, no noise, or only a nominal epsilon)."""
    eps = dp_epsilon(record.get("dp"))
    return eps["epsilon"] if eps else None


def _nominal_notes(cells: list[dict]) -> dict[str, list[str]]:
    """Caveat -> names of the cells whose epsilon is only nominal for that reason."""
    notes: dict[str, list[str]] = defaultdict(list)
    for c in cells:
        eps = dp_epsilon(c.get("dp"))
        if eps and eps["epsilon"] is None and eps["epsilon_nominal"] is not None:
            notes[eps["caveat"] or "not a guarantee"].append(c["name"])
    return notes


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
                    "epsilon": (float(np.mean([_epsilon(r) for r in g]))
                                if all(_epsilon(r) is not None for r in g) else None),
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
    primaries = study.primaries()
    family, _ = study.headline()
    cells = [{**{k: v for k, v in r.items() if k not in ("config",)},
              "leakage_summary": cell_leakage(r, primaries, family)} for r in records]
    config = {**study.to_dict(), "primary_attacks": primaries, "headline_family": family}
    out = to_jsonable({
        "format": STUDY_FORMAT, "name": study.name, "summary": "",
        "leakprobe_version": leakprobe_version(),
        "config": config, "attacks": attacks, "n_cells": len(records),
        "cells": cells, "ranking": _ranking(records, attacks, primaries, family),
        "tradeoffs": _tradeoffs(study, records, attacks),
    })
    out["summary"] = study_summary(out)
    return out


STUDY_ALPHA = 0.05  # the per-cell level of "beats chance" in the study's summary


def study_summary(summary: dict) -> str:
    """The grid's main finding in one sentence (the ``summary`` key of ``study.json``).

    How many cells the headline primary attack finds leaking (its own p-value <= 0.05 in
    each cell; a count, not a family-wise claim), which paradigm leaks most and least
    undefended (the ranking's headline AUC), and whether better encoders leak more (Spearman
    between utility and that AUC over the undefended cells, else all cells). A study.json
    written before the key existed gets it computed.
    """
    if summary.get("summary"):
        return str(summary["summary"])
    cells = summary.get("cells") or []
    if not cells:
        return "The study has no cells"
    leaks = [_cell_leak(c, summary) for c in cells]
    rank = summary.get("ranking") or {}
    head = rank.get("headline_attack") or next(
        (lk["headline_attack"] for lk in leaks if lk.get("headline_attack")), None)
    parts = []
    if head:
        ps = [lk.get("headline_p_value") for lk in leaks]
        aucs = [float(lk["headline_auc"]) for lk in leaks if lk.get("headline_auc") is not None]
        if all(p is not None for p in ps):
            hits = sum(float(p) <= STUDY_ALPHA for p in ps if p is not None)
            parts.append(f"the headline attack {head} beats chance (p <= {STUDY_ALPHA:g}) "
                         f"in {hits} of {len(cells)} cell{'s' if len(cells) != 1 else ''}")
        elif aucs:
            parts.append(f"the headline attack {head} reaches AUC {min(aucs):.2f} to "
                         f"{max(aucs):.2f} over {len(cells)} cells (no p-values: audited "
                         "without permutations)")
    paradigms = [r for r in rank.get("paradigms") or []
                 if isinstance(r.get("leakage"), (int, float)) and math.isfinite(r["leakage"])]
    if len(paradigms) >= 2:
        order = sorted(paradigms, key=lambda r: -r["leakage"])
        parts.append(f"undefended, {order[0]['paradigm']} leaks most (AUC "
                     f"{order[0]['leakage']:.2f}) and {order[-1]['paradigm']} least "
                     f"({order[-1]['leakage']:.2f})")
    elif paradigms:
        parts.append(f"undefended {paradigms[0]['paradigm']} reaches AUC "
                     f"{paradigms[0]['leakage']:.2f}")
    corr = rank.get("spearman_utility_vs_auc") or {}
    for scope, where in (("undefended_cells", "undefended cells"), ("all_cells", "cells")):
        s = (corr.get(scope) or {}).get("leakage") or {}
        if s.get("rho") is None or s.get("p") is None:
            continue
        stats = f"Spearman rho = {s['rho']:.2f}, p = {_p_text(s['p'])}, {s['n']} {where}"
        if s["p"] <= STUDY_ALPHA:
            parts.append(f"better encoders leak {'more' if s['rho'] > 0 else 'less'} "
                         f"({stats})")
        else:
            parts.append(f"no clear link between utility and leakage ({stats})")
        break
    if not parts:
        return f"{len(cells)} cells audited; no headline attack to summarise"
    text = "; ".join(parts)
    return text[0].upper() + text[1:]


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

        handles: list[Patch | Line2D] = [Patch(color=colours[p], label=p) for p in paradigms]
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


def _eps_html(c: dict) -> str:
    """A cell's epsilon: the guarantee, ``none (nominal X, not a guarantee)``, or a dash."""
    if not isinstance(c.get("dp"), dict):
        return fmt(c.get("epsilon"), 2)
    return esc(epsilon_text(c["dp"], detail=False))


def _p_html(p: float | None) -> str:
    return f'<span class="muted">p {esc(_p_text(p))}</span>'


def _leak_cells_html(leak: dict) -> list[str]:
    """The cell's headline primary (AUC, interval, p) and best-of-many (max AUC, p) cells."""
    head = leak["primary"].get(leak["headline_family"]) if leak["headline_family"] else None
    best = leak["best_of_many"]
    title = (f"max AUC over {best['n_attacks']} attacks (at {best['attack']}); p against the "
             "permutation null of the maximum")
    return [f'<td class="num">{fmt(head["auc"])} {fmt_ci(head["auc_ci"])} '
            f'{_p_html(head["p_value"])}</td>' if head and head["auc"] is not None
            else "<td>&mdash;</td>",
            f'<td class="num" title="{esc(title)}">{esc(best_text(best))}</td>']


def _cells_table(summary: dict) -> str:
    """Two tables that fit a 1280-px window: per cell its setting, utility, leakage and
    best-of-many; then per cell each attack's AUC [95% CI], p-value and TPR at 1% FPR in one
    cell (an audit's many attacks would not fit as two columns each)."""
    attacks = summary["attacks"]
    primaries, family = summary_primaries(summary)
    n_best = len([a for a in attacks if not is_blind(a)])
    lead = (f"leakage<br>(primary: {esc(primaries[family])})" if family
            else "leakage<br>(no primary)")
    head = ("<tr><th>cell</th><th>paradigm</th><th>defence</th><th>seed</th><th>epochs</th>"
            "<th>k-NN</th><th>linear probe</th><th>&epsilon;</th>"
            f"<th>{lead}<br>AUC [95% CI]</th><th>best of {n_best}<br>max AUC, p</th></tr>")
    per_attack = ("<tr><th>cell</th>" + "".join(f"<th>{esc(a)}</th>" for a in attacks)
                  + "</tr>")
    rows, attack_rows = [], []
    for c in summary["cells"]:
        link = f"cells/{c['folder']}/audit/report.html"
        name = f'<td><a href="{esc(link)}">{esc(c["name"])}</a></td>'
        cells = [name,
                 f"<td>{esc(c['paradigm'])}</td>", f"<td>{esc(_setting(c))}</td>",
                 f'<td class="num">{fmt(c["seed"])}</td>',
                 f'<td class="num">{fmt(c.get("epochs_trained"))}</td>',
                 f'<td class="num">{fmt(c["utility"]["knn_accuracy"])}</td>',
                 f'<td class="num">{fmt(c["utility"][UTILITY_KEY])}</td>',
                 f'<td class="num">{_eps_html(c)}</td>',
                 *_leak_cells_html(_cell_leak(c, summary))]
        rows.append("<tr>" + "".join(cells) + "</tr>")
        by_name = {a["attack"]: a for a in c["attacks"]}
        cells = [name]
        for a in attacks:
            r = by_name.get(a)
            if r is None:
                cells.append("<td></td>")
                continue
            tpr = r.get("tpr_at_1pct_fpr")
            p = _p_html(r["p_value"]) if r.get("p_value") is not None else ""
            tpr_html = (f'<span class="muted">TPR@1% {fmt(tpr)} '
                        f'{fmt_ci(r.get("tpr_at_1pct_fpr_ci"))}</span>' if tpr is not None else
                        '<span class="muted" title="TPR at 1% FPR needs &gt;= 1,000 '
                        'non-members">TPR@1% n/a</span>')
            cells.append(f'<td class="num">{fmt(r["auc"])} {fmt_ci(r["auc_ci"])} {p}'
                         f"{tpr_html}</td>")
        attack_rows.append("<tr>" + "".join(cells) + "</tr>")
    notes = "".join(f'<div class="warning">epsilon is not a DP guarantee for '
                    f'{esc(", ".join(names))}: {esc(caveat)}</div>'
                    for caveat, names in _nominal_notes(summary["cells"]).items())
    return (f'<table class="metrics">{head}{"".join(rows)}</table>{notes}'
            "<h3>Each attack: AUC [95% CI], p-value and TPR at 1% FPR</h3>"
            f'<table class="metrics wide">{per_attack}{"".join(attack_rows)}</table>')


def _ranking_html(summary: dict) -> str:
    rank = summary["ranking"]
    attack = rank.get("headline_attack")
    lead = f"leakage (primary: {esc(attack)})" if attack else "leakage"
    head = ("<tr><th>paradigm</th><th>undefended cells</th><th>linear probe</th><th>k-NN</th>"
            f"<th>rank by utility</th><th>{lead}</th><th>rank by leakage</th>"
            "<th>best of many (not ranked)</th><th>other primaries</th></tr>")

    def others(r: dict) -> str:
        return ", ".join(f"{p['attack']} {fmt(p['auc'])}" for f, p in
                         (r.get("primary") or {}).items() if f != rank.get("headline_family"))

    body = "".join(
        f"<tr><td>{esc(r['paradigm'])}</td><td class=\"num\">{r['cells']}</td>"
        f'<td class="num">{fmt(r["utility"])}</td><td class="num">{fmt(r["knn_accuracy"])}</td>'
        f'<td class="num">{r["rank_utility"]}</td><td class="num">{fmt(r["leakage"])} '
        + " ".join(_p_html(p) for p in r.get("leakage_p_values") or []) + "</td>"
        f'<td class="num">{r["rank_leakage"]}</td>'
        f'<td class="num">{esc(best_text(r["best_of_many"])) if r.get("best_of_many") else ""}'
        f"</td><td>{others(r)}</td></tr>" for r in rank["paradigms"])
    corr = rank["spearman_utility_vs_auc"]
    names = list(next(iter(corr.values())).keys()) if corr else []
    chead = "<tr><th>scope</th>" + "".join(f"<th>{esc(n)}</th>" for n in names) + "</tr>"
    cbody = "".join(
        f"<tr><td>{esc(scope.replace('_', ' '))}</td>" + "".join(
            f'<td class="num">{fmt(v["rho"])} <span class="muted">(p {fmt(v["p"])}, '
            f'n {v["n"]})</span></td>' for v in block.values()) + "</tr>"
        for scope, block in corr.items())
    why = ("<p>Paradigms are ranked by the AUC of the pre-declared headline primary attack "
           "(mean over undefended cells; p-values per cell). The best AUC over all attacks is "
           "biased upwards (8-9 chance AUCs on 64 + 64 samples have a maximum near 0.6), so it "
           "is shown with its p-value against the permutation null of the maximum (per cell; "
           "n/a without permutations) and not used to rank.</p>")
    return (f'<table class="metrics">{head}{body}</table>{why}'
            "<p>Spearman rank correlation between utility (linear-probe accuracy) and attack "
            "AUC. Positive: better encoders leak more (the LpLA claim).</p>"
            f'<table class="metrics">{chead}{cbody}</table>')


def _figures(images: dict[str, Path], keys: list[str]) -> str:
    figs = "".join(figure_html(images[k], k.replace("_", " ")) for k in keys if k in images)
    return f'<div class="plots">{figs}</div>'


def render_html(summary: dict, images: dict[str, Path]) -> str:
    """The study page (every string from the config or cells is escaped)."""
    cfg = summary["config"]
    primaries, family = summary_primaries(summary)
    facts = {"data": cfg["data"], "image size": cfg["image_size"], "members": cfg["members"],
             "non-members": cfg["nonmembers"], "seeds": cfg["seeds"],
             "knowledge": f"{cfg['knowledge']['setting']}, {cfg['knowledge']['folds']} folds, "
                          f"{cfg['knowledge']['repeats']} repeats, "
                          f"{cfg['knowledge'].get('permutations', 0)} label permutations",
             "utility data": cfg["utility_data"] + (
                 f" (at most {cfg['utility_max_images']} images)"
                 if cfg.get("utility_max_images") else ""),
             "primary attacks": ", ".join(f"{f}: {a}" for f, a in primaries.items())
             + (f" (headline: {family})" if family else ""),
             "cells": summary["n_cells"],
             "leakprobe version": summary["leakprobe_version"]}
    facts_html = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>"
                         for k, v in facts.items())
    warnings_ = sorted({w for c in summary["cells"] for w in c.get("warnings") or []})
    warn_html = "".join(f'<div class="warning">{esc(w)}</div>' for w in warnings_)
    tradeoff_keys = [k for k in images if k.startswith("tradeoff_")]
    title = f"leakprobe study: {summary['name']}"
    body = (
        '<p class="blurb">Each cell trains an encoder (paradigm x defence x seed), audits it '
        "for membership leakage (AUC 0.5 is chance; 95% intervals: a stratified bootstrap, "
        "widened for fitted attacks by their fitting noise under label permutations; "
        "p-values from label permutations) and measures its utility (k-NN / linear probe, "
        "50/50 split of the utility set).</p>"
        f"{warn_html}"
        f'<h2>Cells</h2><div class="scroll">{_cells_table(summary)}</div>'
        f"<h2>Privacy vs utility</h2>{_figures(images, ['privacy_vs_utility'])}"
        f"<h2>Defence trade-offs</h2>{_figures(images, tradeoff_keys)}"
        f"<h2>Do better encoders leak more?</h2>{_ranking_html(summary)}"
        '<details class="config"><summary>Configuration: data, knowledge and primary attacks'
        f'</summary><table class="kv">{facts_html}</table></details>'
    )
    return page_html(title, verdict_html(study_summary(summary)), body)


def write_study_report(summary: dict, out: str | Path) -> dict[str, Path]:
    """Write ``study.json``, the PNGs and ``report.html`` (atomically) into ``out``."""
    out = Path(out)
    paths = {"json": write_json(out / "study.json", summary)}
    images = write_plots(summary, out)
    paths.update(images)
    paths["html"] = write_text(out / "report.html", render_html(summary, images))
    return paths


def table_lines(summary: dict) -> list[str]:
    """The per-cell table as text: utility, epsilon where DP, each attack's AUC, the headline
    primary's AUC (``primary``) and best-of-many (max AUC over the non-blind attacks, with
    its permutation p-value of the maximum; ``n/a`` without permutations)."""
    attacks = summary["attacks"]
    short = [a.replace("encodermi-", "emi-").replace("baseline-", "b-") for a in attacks]
    n_best = len([a for a in attacks if not is_blind(a)])
    head = f"{'cell':28s} {'k-NN':>6s} {'probe':>6s} {'eps':>7s} " + " ".join(
        f"{s:>10s}" for s in short) + f" {'primary':>8s}  best of {n_best} (p)"
    lines = [head]
    for c in summary["cells"]:
        eps = dp_epsilon(c.get("dp"))
        shown = ("" if eps is None else f"{eps['epsilon']:.2f}" if eps["epsilon"] is not None
                 else "inf" if eps["epsilon_nominal"] is None else "none*")
        by_name = {a["attack"]: a["auc"] for a in c["attacks"]}
        lines.append(
            f"{c['name']:28s} {c['utility']['knn_accuracy']:6.3f} "
            f"{c['utility'][UTILITY_KEY]:6.3f} {shown:>7s} "
            + " ".join(f"{by_name[a]:10.3f}" if a in by_name else f"{'':10s}" for a in attacks)
            + " " + _leak_text(_cell_leak(c, summary)))
    nominal = {c["name"]: eps["epsilon_nominal"] for c in summary["cells"]
               if (eps := dp_epsilon(c.get("dp"))) is not None}
    for caveat, names in _nominal_notes(summary["cells"]).items():
        lines.append("* no DP guarantee (nominal epsilon "
                     + ", ".join(f"{n} {nominal[n]:.3g}" for n in names) + f"): {caveat}")
    return lines


def _leak_text(leak: dict) -> str:
    auc = leak.get("headline_auc")
    best = leak["best_of_many"]
    shown = "n/a" if best["auc"] is None or not math.isfinite(best["auc"]) \
        else f"{best['auc']:.3f}"
    return (f"{auc:8.3f}" if auc is not None else f"{'n/a':>8s}") + \
        f"  {shown} (p {_p_text(best['p_value'])})"


def ranking_lines(summary: dict) -> list[str]:
    """The paradigm ranking as text: headline primary AUC, best-of-many beside it."""
    rank = summary["ranking"]
    attack = rank.get("headline_attack")
    if attack is None:
        return []
    lines = [f"leakage = AUC of the primary attack {attack} ({rank.get('headline_family')} "
             "family); best of N = max AUC over the non-blind attacks, p against the "
             "permutation null of the maximum (n/a: no permutations)",
             f"paradigms by leakage (primary: {attack}):"]
    for r in sorted(rank["paradigms"], key=lambda r: r["rank_leakage"]):
        auc = r["leakage"]
        shown = "n/a" if auc is None or not math.isfinite(auc) else f"{auc:.3f}"
        best = best_text(r["best_of_many"]) if r.get("best_of_many") else ""
        lines.append(f"  {r['rank_leakage']}. {r['paradigm']:12s} {shown:>6s}  ({best}; "
                     f"utility rank {r['rank_utility']})")
    return lines


def print_table(summary: dict, echo=print) -> None:
    """Print the study's one-sentence summary (:func:`study_summary`), then
    :func:`table_lines` and the utility-vs-leakage correlation through ``echo``."""
    echo(study_summary(summary))
    for line in table_lines(summary) + ranking_lines(summary):
        echo(line)
    corr = summary["ranking"]["spearman_utility_vs_auc"]
    what = summary["ranking"].get("headline_attack") or "leakage"
    for scope in ("undefended_cells", "all_cells"):
        s = corr.get(scope, {}).get("leakage") or {}
        if s.get("rho") is not None:
            echo(f"Spearman(utility, {what} AUC) over {scope.replace('_', ' ')}: "
                 f"{s['rho']:.3f} (p {s['p']:.3f}, n {s['n']})")
