"""Self-contained HTML report: one file with inline CSS and the plots inlined as PNG data URIs.

The PNG files are written beside ``report.html`` too, for whoever wants them on their own;
the page needs none of them, so it can be sent as one file.

A page is laid out for a newcomer: the report's verdict (its ``summary``) is the first line
under the title, then what the kind of report measures, the results table, the figures and
the per-attack notes; the configuration (threat model, each view recipe once with the
attacks that use it, attack parameters) comes last, collapsed in ``<details>``. Tables wrap
instead of scrolling, so a 1280-px window shows every column (tests/report/
test_html_browser.py measures it in Chromium); the JSON keeps the full numbers.

Every string taken from a report (attack names, parameters, context, warnings, notes) is
HTML-escaped: reports may carry names chosen by whoever supplied the model or data.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from leakprobe.errors import LeakprobeError
from leakprobe.io import write_json, write_text
from leakprobe.report.plots import plot_curves, plot_histograms, plot_roc, png_data_uri
from leakprobe.report.schema import (
    OWNERSHIP_KIND,
    STEALING_KIND,
    MembershipKind,
    is_blind,
    load_report,
)

__all__ = ["INTERVALS_BRIEF", "INTERVALS_NOTE", "KIND_BLURBS", "RENDERERS", "SectionRenderer",
           "figure_html", "kind_blurb", "page_html", "render_reports", "renderer_for",
           "report_summary", "verdict_html", "write_report"]

PAGE_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem auto;
max-width:1150px;padding:0 1rem;color:#1d2430;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.3rem;margin-top:2rem;
border-bottom:2px solid #e3e7ee;padding-bottom:.2rem}h3{font-size:1.05rem;margin-top:1.3rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.86rem;max-width:100%}
th,td{border:1px solid #d6dbe3;padding:.25rem .45rem;text-align:left;vertical-align:top;
overflow-wrap:anywhere}
th{background:#f3f5f9;font-weight:600;overflow-wrap:break-word}
table.metrics td.num{text-align:right;font-variant-numeric:tabular-nums;
overflow-wrap:normal}
table.metrics td.num .muted{display:block;font-size:.78rem}
.ci{white-space:nowrap}
table.wide{font-size:.76rem}table.wide .ci{white-space:normal}
.scroll{overflow-x:auto;max-width:100%}
p.verdict{font-size:1.1rem;font-weight:600;margin:.5rem 0 .9rem;padding:.5rem .8rem;
background:#f6f8fa;border-left:6px solid #98a2b3;border-radius:4px;max-width:70rem}
p.verdict.leakage{border-left-color:#b42318;background:#fef3f2}
p.verdict.no-leakage{border-left-color:#2e7d32;background:#f3faf3}
p.verdict.split-differs{border-left-color:#e08a00;background:#fff8ec}
ol.verdicts{margin:.4rem 0 1rem;padding-left:1.4rem}ol.verdicts li{margin:.25rem 0}
p.blurb{margin:.3rem 0 .8rem;max-width:60rem}
p.foot{margin:.2rem 0;color:#667085;font-size:.82rem;max-width:60rem}
table.metrics tr.blind td{background:#f7f7f7;color:#555;font-style:italic}
table.kv table.kv{margin:0;font-size:.95em}
.tag{display:inline-block;font-size:.72rem;font-style:normal;background:#e9ecf2;
border-radius:3px;padding:0 .35rem;margin-left:.35rem;color:#333}
.warning{background:#fff4e5;border:1px solid #f0b45a;border-left:6px solid #e08a00;
padding:.6rem .9rem;margin:.6rem 0;border-radius:4px}
.muted{color:#667085;font-size:.85rem}
details.config{margin:1.6rem 0;border:1px solid #e3e7ee;border-radius:4px;padding:.3rem .8rem}
details.config>summary{cursor:pointer;font-weight:600;padding:.2rem 0}
.plots{display:flex;flex-wrap:wrap;gap:1rem;margin-top:.6rem}
.plots figure{margin:0;flex:1 1 460px;max-width:100%;min-width:0}
.plots img{max-width:100%;height:auto;border:1px solid #e3e7ee;border-radius:4px}
pre{background:#f6f8fa;padding:.5rem;white-space:pre-wrap;overflow-wrap:anywhere;
font-size:.8rem}
"""

_PLOT_FILES = {
    "roc": "roc.png",
    "roc_loglog": "roc_loglog.png",
    "scores_hist": "scores_hist.png",
}
_MAX_DEPTH = 6

# How the intervals of a membership report are computed (metrics.compute_metrics): the
# blurb says it briefly, the table's footnote in full; both from these words.
INTERVALS_BRIEF = (
    "Intervals are 95%: a stratified bootstrap of the audited images, widened for attacks "
    "fitted on the audited labels by their fitting noise under label permutations (details "
    "under the table)."
)
INTERVALS_NOTE = (
    "Intervals: the AUC interval is the stratified-bootstrap 95% percentile interval (members "
    "and non-members resampled separately); for an attack fitted on the audited labels whose "
    "permutation test ran, it is widened by how far the same attack's AUC strays from 0.5 "
    "when the labels are permuted (its fitting noise), so it is never narrower than the "
    "bootstrap one. TPR intervals come from the same bootstrap, with the threshold's "
    "false-positive rate drawn from its exact distribution."
)
_SCORES_NOTE = (
    "Higher attack scores mean &ldquo;more likely a training member&rdquo;; AUC 0.5 is chance, "
    "and the TPR at a low FPR is the share of members exposed while few non-members are "
    "accused. " + INTERVALS_BRIEF
)
# The opening paragraph of each kind of report: what it measures (trusted HTML).
KIND_BLURBS = {
    "encoder-membership": (
        "<strong>Encoder membership inference.</strong> Can an attacker who queries the "
        "encoder's embeddings tell the images it was trained on (members) from images it never "
        "saw (non-members)? " + _SCORES_NOTE
    ),
    "image2image-membership": (
        "<strong>Image-to-image membership inference.</strong> Can an attacker who sends inputs "
        "to the model and sees its outputs tell its training pairs from unseen ones, by how "
        "well it reconstructs them? " + _SCORES_NOTE
    ),
    "captioner-membership": (
        "<strong>Captioner membership inference.</strong> Can an attacker who sees only the "
        "captions the model writes (trained on a shadow captioner of its own) tell the images "
        "it was trained on from unseen ones? " + _SCORES_NOTE
    ),
    "image-text-membership": (
        "<strong>Image-text membership inference.</strong> Can an attacker who queries both "
        "towers of a CLIP-style model (image and text embeddings) tell the image-caption pairs "
        "it was trained on from unseen ones, by how well it aligns each image with its own "
        "caption? " + _SCORES_NOTE
    ),
    "encoder-stealing": (
        "<strong>Encoder stealing.</strong> How much of the target encoder an attacker copies "
        "by training a surrogate on the target's embeddings of the attacker's own images, for "
        "the queries it pays. A linear probe on labelled images judges each surrogate: its "
        "accuracy against the target's and against an untrained (random-init) surrogate's, "
        "and the agreement of its predictions with the target probe's. The judgement holds "
        "only where the target's probe clearly beats the random-init one."
    ),
    "encoder-ownership": (
        "<strong>Encoder ownership.</strong> Is the suspect encoder derived from the owner's "
        "(stolen by queries, fine-tuned from its weights)? Each test compares the suspect with "
        "reference encoders that never saw the owner's data: how much more consistently it "
        "embeds augmented views of the owner's training images than of held-out ones, image by "
        "image against the references; how close its embeddings are to the victim's; and, with "
        "enough images, dataset inference. The tests run are combined by Holm-Bonferroni, a "
        "rule fixed before the data is seen."
    ),
    "encoder-defence": (
        "<strong>Defence sweep.</strong> Membership attack AUC (0.5 is chance; 95% intervals "
        "from each setting's audit: a stratified bootstrap, widened for fitted attacks by "
        "their fitting noise under label permutations) against utility (k-NN and "
        "linear-probe accuracy on the non-member split) for each strength of the defence. "
        "epsilon is DP-SGD's at the recorded delta."
    ),
}
_ZERO_FP_NOTE = "the TPR at zero false positives"  # older reports' note
# build_report's note on TPRs the audit cannot resolve; the table's footnote says it instead.
_UNRESOLVED_NOTE = "is not reported: it needs >= 10/f"
_MIN_FALSE_POSITIVES = 10  # leakprobe.evaluation.metrics.MIN_NONMEMBER_FALSE_POSITIVES


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 3) -> str:
    """Format a scalar for display (escaped)."""
    if value is None:
        return "&mdash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "&mdash;"
        if value != 0 and abs(value) < 10 ** (-digits):
            return esc(f"{value:.2e}")
        return esc(f"{value:.{digits}f}")
    return esc(value)


def kind_blurb(kind: str) -> str:
    """The opening paragraph of a report of ``kind`` (what it measures), as HTML."""
    text = KIND_BLURBS.get(str(kind))
    if text is None:
        text = f"<strong>{esc(kind)}</strong> report."
    return f'<p class="blurb">{text}</p>'


def figure_html(path: str | Path, caption: str) -> str:
    """A ``<figure>`` with the PNG at ``path`` inlined (data URI) and a caption naming its file."""
    path = Path(path)
    return (
        f'<figure><img src="{png_data_uri(path)}" alt="{esc(caption)}">'
        f'<figcaption class="muted">{esc(caption)} ({esc(path.name)})</figcaption></figure>'
    )


def fmt_ci(ci: Any, digits: int = 3) -> str:
    """An interval ``[lo, hi]`` as a muted span (empty when ``ci`` is not a pair)."""
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        return f'<span class="muted ci">[{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]</span>'
    return ""


def _value_html(value: Any, depth: int = 0) -> str:
    """Render a JSON value: dicts as key/value sub-tables, lists of dicts as tables."""
    if depth > _MAX_DEPTH:
        return f"<pre>{esc(json.dumps(value, default=str)[:2000])}</pre>"
    if isinstance(value, dict):
        if not value:
            return "&mdash;"
        rows = "".join(
            f"<tr><th>{esc(k)}</th><td>{_value_html(v, depth + 1)}</td></tr>"
            for k, v in value.items()
        )
        return f'<table class="kv">{rows}</table>'
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, dict) for v in value):
            cols: list[str] = []
            for v in value:
                cols.extend(k for k in v if k not in cols)
            head = "".join(f"<th>{esc(c)}</th>" for c in cols)
            body = "".join(
                "<tr>"
                + "".join(f"<td>{_value_html(v.get(c), depth + 1)}</td>" for c in cols)
                + "</tr>"
                for v in value
            )
            return f'<table class="kv"><tr>{head}</tr>{body}</table>'
        if len(value) > 50:
            shown = ", ".join(_value_html(v, depth + 1) for v in value[:50])
            return f"{shown}, &hellip; ({len(value)} items)"
        return ", ".join(_value_html(v, depth + 1) for v in value) or "&mdash;"
    return fmt(value)


def _fpr_label(key: str) -> str:
    try:
        return f"{float(key) * 100:g}%"
    except ValueError:
        return esc(key)


def _warnings_html(report: dict[str, Any]) -> str:
    return "".join(
        f'<div class="warning"><strong>Warning:</strong> {esc(w)}</div>'
        for w in report.get("warnings") or []
    )


def _queries_per_image(result: dict[str, Any]) -> float:
    n = int(result.get("n_members") or 0) + int(result.get("n_nonmembers") or 0)
    return int(result.get("queries") or 0) / max(1, n)


def _context_facts(report: dict[str, Any], shown: dict[str, Any]) -> list[tuple[str, Any]]:
    """The report's context as (key, value) rows, less what ``shown`` already states."""
    context = dict(report.get("context") or {})
    context.pop("utility", None)  # its own section
    for key, value in shown.items():
        if key in context and context[key] == value:
            del context[key]
    versions = context.get("versions")
    if isinstance(versions, dict) and versions.get("leakprobe") == report.get("leakprobe_version"):
        context["versions"] = {k: v for k, v in versions.items() if k != "leakprobe"}
    return list(context.items())


def _card_html(report: dict[str, Any]) -> str:
    """The threat model and setting: knowledge, seed, version, totals and the context (less
    the per-attack view recipes, which :func:`_recipes_html` shows once per recipe)."""
    results = report.get("results") or []
    context = report.get("context") or {}
    rows: list[tuple[str, Any]] = [
        ("knowledge setting", report.get("knowledge")),
        ("seed", report.get("seed")),
        ("leakprobe version", report.get("leakprobe_version")),
    ]
    if "total_queries" not in context:
        rows.append(("total_queries", sum(int(r.get("queries") or 0) for r in results)))
    if "total_attack_seconds" not in context:
        seconds = sum(float(r.get("seconds") or 0.0) for r in results)
        rows.append(("total_attack_seconds", seconds))
    facts = _context_facts(report, {"knowledge": report.get("knowledge"),
                                    "seed": report.get("seed")})
    rows += [(k, v) for k, v in facts if not (k == "views" and _per_attack_recipes(v))]
    body = "".join(f"<tr><th>{esc(k)}</th><td>{_value_html(v)}</td></tr>" for k, v in rows)
    return f'<h3>Threat model</h3><table class="kv card">{body}</table>'


def _per_attack_recipes(value: Any) -> bool:
    """Whether a context value is ``{attack: recipe dict}`` (the audit's ``views``)."""
    return isinstance(value, dict) and bool(value) and all(
        isinstance(v, dict) for v in value.values())


def _compact(value: Any) -> str:
    """A parameter value in few characters (escaped): 3 significant digits, ranges as
    ``lo&ndash;hi``, dicts as ``key value; ...`` (the JSON keeps the full values)."""
    if isinstance(value, bool) or value is None:
        return fmt(value)
    if isinstance(value, float):
        return esc(f"{value:.3g}")
    if isinstance(value, (list, tuple)):
        if len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                   for v in value):
            return f"{_compact(value[0])}&ndash;{_compact(value[1])}"
        return "[" + ", ".join(_compact(v) for v in value) + "]"
    if isinstance(value, dict):
        return "; ".join(f"{esc(k)} {_compact(v)}" for k, v in value.items()) or "&mdash;"
    return esc(value)


def _recipes_html(report: dict[str, Any]) -> str:
    """Attack parameters, each recipe (a dict-valued parameter such as the view recipe, and
    the context's per-attack ``views``) once with the attacks that use it, and attacks with
    the same remaining parameters on one row."""
    results = report.get("results") or []
    views = (report.get("context") or {}).get("views")
    context_views: dict[str, Any] = views if isinstance(views, dict) and _per_attack_recipes(
        views) else {}
    recipes: dict[tuple[str, str], list[str]] = {}  # (parameter, canonical JSON) -> attacks
    recipe_values: dict[tuple[str, str], Any] = {}
    rows: dict[str, list[str]] = {}  # the attack's own parameters (HTML) -> attacks
    for r in results:
        name = str(r.get("attack"))
        params = dict(r.get("params") or {})
        found: dict[str, Any] = {k: v for k, v in params.items() if isinstance(v, dict)}
        if isinstance(context_views.get(name), dict):
            found["views"] = context_views[name]  # the resolved recipe of a named preset
        keys = []
        for key, value in found.items():
            ident = (str(key), json.dumps(value, sort_keys=True, default=str))
            recipes.setdefault(ident, [])
            recipe_values.setdefault(ident, value)
            if name not in recipes[ident]:
                recipes[ident].append(name)
            keys.append(ident)
        own = [f"{esc(k)}={_compact(v)}" for k, v in params.items() if k not in found]
        labels = {ident: f"R{i}" for i, ident in enumerate(recipes, start=1)}
        own += [f"{esc(ident[0])}={labels[ident]}" for ident in keys]
        rows.setdefault(", ".join(own) or "&mdash;", []).append(name)
    if not rows:
        return ""
    out = ""
    if recipes:
        body = "".join(
            f"<tr><td>R{i}</td><td>{esc(ident[0])}</td><td>{esc(', '.join(names))}</td>"
            f"<td>{_compact(recipe_values[ident])}</td></tr>"
            for i, (ident, names) in enumerate(recipes.items(), start=1))
        out += ('<h3>Recipes</h3><p class="foot">Each distinct recipe once, with the attacks '
                "that use it (full values in report.json).</p>"
                '<table class="kv"><tr><th>recipe</th><th>parameter</th><th>used by</th>'
                f"<th>values</th></tr>{body}</table>")
    body = "".join(f"<tr><td>{esc(', '.join(names))}</td><td>{text}</td></tr>"
                   for text, names in rows.items())
    return (out + '<h3>Attack parameters</h3><table class="kv"><tr><th>attacks</th>'
            f"<th>parameters</th></tr>{body}</table>")


def _config_html(inner: str, label: str = "Configuration") -> str:
    """``inner`` collapsed under a ``<details>`` toggle (closed by default)."""
    return (f'<details class="config"><summary>{esc(label)}</summary>{inner}</details>'
            if inner else "")


def _metrics_html(report: dict[str, Any]) -> str:
    """The results table (one row per attack) and the footnotes that explain it."""
    results = report.get("results") or []
    fpr_keys: list[str] = []
    for r in results:
        for k in (r.get("metrics") or {}).get("tpr_at_fpr") or {}:
            if k not in fpr_keys:
                fpr_keys.append(k)
    head = (
        "<tr><th>attack</th><th>AUC [95% CI]</th><th>p-value (no leakage)</th>"
        '<th title="balanced accuracy, threshold chosen on other folds">bal. acc.</th>'
        '<th title="balanced accuracy at the best threshold: optimistic">bal. acc. '
        "(best threshold)</th>"
        + "".join(f"<th>TPR at {_fpr_label(k)} FPR</th>" for k in fpr_keys)
        + "<th>members / non-members</th><th>queries (per image)</th><th>time (s)</th></tr>"
    )
    rows = []
    unresolved: dict[str, list[int]] = {}  # FPR key -> non-member counts that cannot resolve it
    has_blind = False
    for r in results:
        m = r.get("metrics") or {}
        blind = is_blind(str(r.get("attack", "")))
        has_blind = has_blind or blind
        n1 = int(r.get("n_members") or 0)
        n0 = int(r.get("n_nonmembers") or 0)
        name = esc(r.get("attack", "?"))
        if blind:
            name += '<span class="tag">distribution-shift floor</span>'
        if r.get("vs_blind"):
            name += (
                f'<br><span class="muted">AUC &minus; blind: '
                f"{fmt(r['vs_blind'].get('auc_minus_blind'))}</span>"
            )
        cells = [
            f"<td>{name}</td>",
            f'<td class="num">{fmt(m.get("auc"))} {fmt_ci(m.get("auc_ci"), 2)}</td>',
            _p_cell(m),
            f'<td class="num">{fmt(m.get("balanced_accuracy"))}</td>',
            f'<td class="num">{fmt(m.get("balanced_accuracy_best"))}</td>',
        ]
        for k in fpr_keys:
            cells.append(_tpr_cell(m, k, n0, unresolved))
        queries = int(r.get("queries") or 0)
        cells += [
            f'<td class="num">{fmt(n1)} / {fmt(n0)}</td>',
            f'<td class="num">{fmt(queries)} <span class="muted">'
            f"({fmt(_queries_per_image(r), 1)})</span></td>",
            f'<td class="num">{fmt(float(r.get("seconds") or 0.0), 1)}</td>',
        ]
        rows.append(f'<tr class="{"blind" if blind else "attack"}">{"".join(cells)}</tr>')
    notes = []
    if unresolved:
        # one footnote for the table, not one note per attack
        parts = [
            f"{_fpr_label(k)} FPR needs >= {_needed_nonmembers(k):,} "
            f"(audit{'s' if len(n0s) > 1 else ''} with {', '.join(f'{n:,}' for n in n0s)})"
            for k, n0s in unresolved.items()
        ]
        notes.append(
            f"n/a: TPR at FPR f is reported only with >= 10/f non-members (n0 f >= "
            f"{_MIN_FALSE_POSITIVES} expected false positives): {'; '.join(parts)}."
        )
    if any((r.get("metrics") or {}).get("fpr_expected") for r in results):
        notes.append(
            "TPR at FPR f: the threshold is the (k+1)-th largest non-member score, k = "
            "floor(f (n0+1)) - 1, so that it admits on average (k+1)/(n0+1) <= f of new "
            "non-members (the FPR shown under each value); its interval accounts for the "
            "threshold being estimated."
        )
    notes.append(INTERVALS_NOTE)
    if any("p_value" in (r.get("metrics") or {}) for r in results):
        notes.append(
            "p-value: the chance of an AUC at least this high if the model did not leak, "
            "from label permutations that refit the whole attack (add-one estimate, so never "
            "below 1/(permutations+1)), or the one-sided Mann-Whitney test for scores fitted "
            "on nothing audited; n/a: a fitted attack run without permutations. The null "
            "band holds an AUC of a model that did not leak with probability >= 95% (order "
            "statistics of the permuted AUCs). The verdict above corrects for the number of "
            "attacks."
        )
    if has_blind:
        notes.append(
            "The blind attack sees only the images, never the model: its AUC is the floor "
            "set by distribution differences between members and non-members. An attack "
            "shows leakage only to the extent that it exceeds this floor."
        )
    notes.append(
        "bal. acc.: balanced accuracy at a threshold chosen on other folds (cross-fit); the "
        "best-threshold value is fitted on the evaluated scores and therefore optimistic. "
        "queries (per image): target queries the attack spent, and per audited image."
    )
    foot = "".join(f'<p class="foot">{esc(n)}</p>' for n in notes)
    return (
        f'<h3>Results</h3><div class="scroll"><table class="metrics">{head}'
        f'{"".join(rows)}</table></div>{foot}'
    )


def _p_cell(m: dict[str, Any]) -> str:
    """The p-value with its method and, for permutation tests, the null band (a tooltip)."""
    p = m.get("p_value")
    if p is None:
        return '<td class="num">n/a</td>'
    method = str(m.get("p_value_method") or "")
    band = m.get("null_auc_band")
    if method == "permutation":
        how = f"{m.get('permutations')} permutations"
        if band:
            how += f"; null AUC band [{float(band[0]):.3f}, {float(band[1]):.3f}]"
    else:
        how = method.replace("-", " ")
    shown = (f"{m.get('permutations')} permutations" if method == "permutation"
             else "Mann-Whitney" if method.startswith("mann-whitney") else how)
    return (f'<td class="num" title="{esc(how)}">{esc(f"{float(p):.2g}")}'
            f'<span class="muted">{esc(shown)}</span></td>')


def _needed_nonmembers(key: str) -> int:
    """Non-members an audit needs to resolve the TPR at FPR ``key`` (10 / f)."""
    f = float(key)
    return math.ceil(_MIN_FALSE_POSITIVES / f - 1e-6) if f > 0 else 0


def _tpr_cell(m: dict[str, Any], key: str, n0: int, unresolved: dict[str, list[int]]) -> str:
    """One TPR-at-FPR cell: value, interval and the threshold's FPR, or n/a with the reason.

    A TPR is n/a where it is null (not resolvable) or, in reports written before leakprobe
    reported null, where ``n0 * f < 10``; ``unresolved`` collects those for the footnote.
    """
    value = (m.get("tpr_at_fpr") or {}).get(key)
    try:
        f = float(key)
    except ValueError:
        return f'<td class="num">{fmt(value)}</td>'
    if value is None or (n0 and n0 * f + 1e-9 < _MIN_FALSE_POSITIVES):
        n0s = unresolved.setdefault(key, [])
        if n0 and n0 not in n0s:
            n0s.append(n0)
        why = f"needs >= 10/f = {_needed_nonmembers(key):,} non-members"
        if n0:
            why += f"; this audit has {n0:,}"
        return f'<td class="num" title="{esc(why)}">n/a<sup>*</sup></td>'
    ci = fmt_ci((m.get("tpr_at_fpr_ci") or {}).get(key), 2)
    expected = (m.get("fpr_expected") or {}).get(key)
    achieved = (m.get("fpr_achieved") or {}).get(key)
    at = ""
    if isinstance(expected, (int, float)):
        tip = f"expected FPR of the threshold on new non-members {expected:.4g}"
        if isinstance(achieved, (int, float)):
            tip += f"; share of this audit's non-members above it {achieved:.4g}"
        at = f'<span class="muted" title="{esc(tip)}">at FPR {expected:.3g}</span>'
    return f'<td class="num">{fmt(value)} {ci}{at}</td>'


def _attack_notes_html(results: list[dict[str, Any]]) -> str:
    """The attacks' notes, each text once with the attacks it concerns.

    The note on unresolved TPRs (and older reports' zero-false-positive note) is left out:
    the table's footnote says it.
    """
    by_text: dict[str, list[str]] = {}
    for r in results:
        for n in r.get("notes") or []:
            if _ZERO_FP_NOTE in str(n) or _UNRESOLVED_NOTE in str(n):
                continue
            names = by_text.setdefault(str(n), [])
            if str(r.get("attack")) not in names:
                names.append(str(r.get("attack")))
    if not by_text:
        return ""
    items = "".join(
        f"<li><strong>{esc(', '.join(names))}</strong>: {esc(text)}</li>"
        for text, names in by_text.items()
    )
    return f"<h3>Notes</h3><ul>{items}</ul>"


def _utility_html(report: dict[str, Any]) -> str:
    context = report.get("context") or {}
    if "utility" not in context:
        return ""
    return f"<h3>Utility</h3>{_value_html(context['utility'])}"


def _plots_html(images: dict[str, Path]) -> str:
    captions = {
        "roc": "ROC",
        "roc_loglog": "ROC, log-log (low-FPR regime)",
        "scores_hist": "Score distributions",
        "surrogate_probe_accuracy": "Surrogate linear-probe accuracy vs queries",
        "agreement": "Agreement with the target's probe vs queries",
    }
    figs = "".join(figure_html(p, captions.get(k, k)) for k, p in images.items())
    return f'<h3>Plots</h3><div class="plots">{figs}</div>' if figs else ""


_STEALING_FACTS = ("target_probe_accuracy", "target_knn_accuracy",
                   "random_init_probe_accuracy",
                   "random_init_procrustes_cosine", "probe_informative",
                   "probe_informative_margin", "seed", "leakprobe_version")
# short column headers of the stealing metrics (the JSON keeps the full names)
_STEALING_HEADERS = {
    "target_probe_accuracy": "target probe acc.",
    "surrogate_probe_accuracy": "copy probe acc.",
    "accuracy_ratio": "acc. ratio (copy / target)",
    "agreement": "agreement with target",
    "procrustes_cosine": "Procrustes cosine",
    "raw_cosine": "raw cosine",
}


def _stealing_results_html(report: dict[str, Any]) -> str:
    """The stealing results table, its footnote and what each defence costs."""
    results = report.get("results") or []
    metric_keys: list[str] = []
    for r in results:
        metric_keys.extend(k for k in (r.get("metrics") or {}) if k not in metric_keys)
    head = (
        "<tr><th>method</th><th>defence</th><th>budget</th><th>queries used</th>"
        + "".join(f'<th title="{esc(k)}">{esc(_STEALING_HEADERS.get(k, k))}</th>'
                  for k in metric_keys)
        + "<th>seconds</th></tr>"
    )
    rows = "".join(
        "<tr>"
        f"<td>{esc(r.get('method', '?'))}</td>"
        f"<td>{esc(r.get('defence') or 'none')}</td>"
        f'<td class="num">{fmt(r.get("budget"))}</td>'
        f'<td class="num">{fmt(r.get("queries_used"))}</td>'
        + "".join(
            f'<td class="num">{_value_html((r.get("metrics") or {}).get(k))}</td>'
            for k in metric_keys
        )
        + f'<td class="num">{fmt(r.get("seconds"), 1)}</td>'
        + "</tr>"
        for r in results
    )
    costs = ""
    if report.get("defences"):
        cost_rows = "".join(
            f"<tr><td>{esc(d.get('defence'))}</td>"
            f'<td class="num">{_value_html(d.get("target_probe_accuracy"))}</td>'
            f'<td class="num">{_value_html(d.get("target_knn_accuracy"))}</td>'
            f'<td class="num">{_value_html(d.get("probe_accuracy_drop"))}</td></tr>'
            for d in report["defences"])
        costs = ("<h3>What each defence costs a legitimate user</h3>"
                 '<table class="metrics"><tr><th>defence</th><th>target probe accuracy</th>'
                 "<th>target k-NN accuracy</th><th>probe accuracy drop</th></tr>"
                 f"{cost_rows}</table>")
    foot = ""
    if report.get("probe_informative") is False:
        foot = ('<p class="foot">The target&rsquo;s probe is no better than a random-init '
                "encoder&rsquo;s (see the warning): probe accuracy, accuracy ratio and "
                "agreement do not show theft here; procrustes_cosine compares the embeddings "
                "directly.</p>")
    return (
        f'<h3>Stealing results</h3><div class="scroll"><table class="metrics">{head}{rows}'
        f"</table></div>{foot}{costs}"
    )


def _stealing_setting_html(report: dict[str, Any]) -> str:
    """Every fact once: the probe verdict first, then the context, then any other key."""
    facts: list[tuple[str, Any]] = [(k, report[k]) for k in _STEALING_FACTS if k in report]
    facts += _context_facts(report, dict(facts))
    skip = {"kind", "results", "warnings", "context", "defences", "summary", *_STEALING_FACTS}
    facts += [(k, v) for k, v in report.items() if k not in skip]
    body = "".join(f"<tr><th>{esc(k)}</th><td>{_value_html(v)}</td></tr>" for k, v in facts)
    return f'<h3>Setting</h3><table class="kv card">{body}</table>'


def _stealing_plots(report: dict[str, Any], out_dir: Path, prefix: str) -> dict[str, Path]:
    """Stolen accuracy and agreement against queries spent, one curve per method."""
    images: dict[str, Path] = {}
    for key, label in (("surrogate_probe_accuracy", "linear-probe accuracy"),
                       ("agreement", "agreement with the target")):
        series: dict[str, tuple[list, list]] = {}
        for r in report.get("results") or []:
            value = (r.get("metrics") or {}).get(key)
            if value is not None:
                defence = r.get("defence") or "none"
                curve = str(r.get("method")) + ("" if defence == "none" else f" [{defence}]")
                xs, ys = series.setdefault(curve, ([], []))
                xs.append(r.get("queries_used") or r.get("budget"))
                ys.append(value)
        if not series:
            continue
        budgets = sorted({x for xs, _ in series.values() for x in xs})
        if key == "surrogate_probe_accuracy":
            for ref, ref_key in (("target", "target_probe_accuracy"),
                                 ("random-init surrogate", "random_init_probe_accuracy")):
                if report.get(ref_key) is not None:
                    series[ref] = (budgets, [report[ref_key]] * len(budgets))
        curves: dict[str, tuple[Sequence[float], Sequence[float]]] = {}
        for name, v in series.items():  # each curve in increasing query order
            sorted_xs, sorted_ys = zip(*sorted(zip(*v, strict=True)), strict=True)
            curves[name] = (sorted_xs, sorted_ys)
        images[key] = plot_curves(curves, "queries spent", label,
                                  out_dir / f"{prefix}steal_{key}.png",
                                  title=f"stolen {label} vs queries", logx=True)
    return images


def _membership_plots(report: dict[str, Any], out_dir: Path, prefix: str) -> dict[str, Path]:
    """ROC, log-log ROC and score histograms of a membership report."""
    if not report.get("results"):
        return {}
    return {
        "roc": plot_roc(report, out_dir / f"{prefix}{_PLOT_FILES['roc']}", loglog=False),
        "roc_loglog": plot_roc(
            report, out_dir / f"{prefix}{_PLOT_FILES['roc_loglog']}", loglog=True
        ),
        "scores_hist": plot_histograms(report, out_dir / f"{prefix}{_PLOT_FILES['scores_hist']}"),
    }


def _membership_body(report: dict[str, Any], images: dict[str, Path]) -> str:
    """Results, utility, figures, per-attack notes; then the configuration, collapsed."""
    results = report.get("results") or []
    return (_metrics_html(report) + _utility_html(report) + _plots_html(images)
            + _attack_notes_html(results)
            + _config_html(_card_html(report) + _recipes_html(report),
                           "Configuration: threat model, recipes and attack parameters"))


def _stealing_body(report: dict[str, Any], images: dict[str, Path]) -> str:
    return (_stealing_results_html(report) + _plots_html(images)
            + _config_html(_stealing_setting_html(report), "Configuration: the setting"))


@dataclass(frozen=True)
class SectionRenderer:
    """How one kind of report is drawn on a page.

    Attributes:
        plots: ``(report, out_dir, prefix) -> {name: png path}``: writes the PNGs.
        body: ``(report, images) -> html``: the section's content after its verdict and
            warnings.
    """

    plots: Callable[[dict[str, Any], Path, str], dict[str, Path]]
    body: Callable[[dict[str, Any], dict[str, Path]], str]


def _no_plots(report: dict[str, Any], out_dir: Path, prefix: str) -> dict[str, Path]:
    return {}


def _ownership_body(report: dict[str, Any], images: dict[str, Path]) -> str:
    from leakprobe.report.ownership import ownership_details_html

    return ownership_details_html(report)


_MEMBERSHIP = SectionRenderer(_membership_plots, _membership_body)
# kind -> its renderer (the sections of write_report / render_reports)
RENDERERS: dict[str, SectionRenderer] = {
    **{kind: _MEMBERSHIP for kind in get_args(MembershipKind)},
    STEALING_KIND: SectionRenderer(_stealing_plots, _stealing_body),
    OWNERSHIP_KIND: SectionRenderer(_no_plots, _ownership_body),
}


def renderer_for(report: dict[str, Any]) -> SectionRenderer:
    """The renderer of the report's kind; a kind not in :data:`RENDERERS` is drawn (and
    validated by :func:`~leakprobe.report.schema.load_report`) as a membership report."""
    return RENDERERS.get(str(report.get("kind", "")), _MEMBERSHIP)


def report_summary(report: dict[str, Any]) -> str:
    """The report's one-sentence verdict: its ``summary`` key, or (a report written before
    the key existed) the sentence computed from it as its builder would."""
    if report.get("summary"):
        return str(report["summary"])
    kind = str(report.get("kind", ""))
    if kind == STEALING_KIND:
        from leakprobe.report.stealing import stealing_summary

        return stealing_summary(report)
    if kind == OWNERSHIP_KIND:
        from leakprobe.report.ownership import verdict_line

        return verdict_line(report)
    from leakprobe.report.summary import membership_summary

    return membership_summary(report)


# the verdict's first words -> its CSS class (colour)
_VERDICT_CLASSES = (("Leakage detected", "leakage"), ("No leakage shown", "no-leakage"),
                    ("Inconclusive", "split-differs"), ("derived", "leakage"),
                    ("not shown", "no-leakage"))


def verdict_html(sentence: str) -> str:
    """The verdict sentence as the page's lead paragraph (escaped; coloured by outcome)."""
    css = next((" " + c for start, c in _VERDICT_CLASSES if sentence.startswith(start)), "")
    return f'<p class="verdict{css}">{esc(sentence)}</p>'


def _section_html(report: dict[str, Any], images: dict[str, Path], heading: str,
                  source: str | None = None, *, verdict: bool = True,
                  blurb: str = "") -> str:
    """One report's section: heading, source, verdict, blurb, warnings, then its body."""
    parts = [f"<section><h2>{esc(heading)}</h2>"]
    if source is not None:
        parts.append(f'<p class="muted">source: {esc(source)}</p>')
    if verdict:
        parts.append(verdict_html(report_summary(report)))
    parts.append(blurb)
    parts.append(_warnings_html(report))
    parts.append(renderer_for(report).body(report, images))
    parts.append("</section>")
    return "".join(parts)


def page_html(title: str, lead: str, body: str) -> str:
    """A complete page: the title, then ``lead`` (the verdict), then ``body`` (trusted HTML)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{PAGE_CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1>{lead}{body}</body></html>\n"
    )


def _heading(report: dict[str, Any]) -> str:
    kind = str(report.get("kind", "report"))
    knowledge = report.get("knowledge")
    return f"{kind} ({knowledge})" if knowledge else kind


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json``, the ROC / log-log ROC / histogram PNGs and ``report.html``.

    The page opens with the report's verdict (its ``summary``), then what the kind of report
    measures, the results, the figures and notes; the configuration comes last, collapsed.
    ``report.html`` inlines the PNGs (data URIs): it is complete on its own.

    Args:
        report: a report dict (see :func:`leakprobe.report.schema.build_report`).
        out_dir: destination folder (created when missing); files are written atomically.
    Returns:
        ``{"json", "roc", "roc_loglog", "scores_hist", "html"}`` -> paths (plots only for
        membership reports).
    """
    out = Path(out_dir)
    paths: dict[str, Path] = {"json": write_json(out / "report.json", report)}
    images = renderer_for(report).plots(report, out, "")
    paths.update(images)
    title = f"leakprobe report: {report.get('kind', '')}"
    section = _section_html(report, images, _heading(report), verdict=False,
                            blurb=kind_blurb(str(report.get("kind", ""))))
    page = page_html(title, verdict_html(report_summary(report)), section)
    paths["html"] = write_text(out / "report.html", page)
    return paths


def render_reports(paths: Sequence[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """Merge several ``report.json`` files into one HTML page.

    The page opens with every report's verdict (numbered as the sections); each report then
    gets its own section (verdict, the blurb of its kind where that kind first appears,
    results, its own plots ``r1_roc.png``..., inlined as in :func:`write_report`).

    Args:
        paths: report JSON files (validated with :func:`load_report`).
        out_dir: destination folder of ``report.html`` and the plots.
    Returns:
        ``{"html": path, "r1_roc": path, ...}``.
    Raises:
        LeakprobeError: no paths, or a file that is not a valid report.
    """
    if not paths:
        raise LeakprobeError("no report files to render")
    out = Path(out_dir)
    reports = [load_report(p) for p in paths]
    written: dict[str, Path] = {}
    sections = []
    verdicts = []
    seen_kinds: set[str] = set()
    for i, (src, report) in enumerate(zip(paths, reports, strict=True), start=1):
        images = renderer_for(report).plots(report, out, f"r{i}_")
        written.update({f"r{i}_{k}": v for k, v in images.items()})
        kind = str(report.get("kind", ""))
        blurb = "" if kind in seen_kinds else kind_blurb(kind)
        seen_kinds.add(kind)
        heading = f"{i}. {_heading(report)}"
        sections.append(_section_html(report, images, heading, str(src),
                                      verdict=len(reports) > 1, blurb=blurb))
        verdicts.append(f"<li><strong>{esc(_heading(report))}</strong>: "
                        f"{esc(report_summary(report))}</li>")
    kinds = sorted({str(r.get("kind", "")) for r in reports})
    title = f"leakprobe report: {len(reports)} audit{'s' if len(reports) != 1 else ''}"
    if len(kinds) == 1:
        title += f" ({kinds[0]})"
    lead = (verdict_html(report_summary(reports[0])) if len(reports) == 1
            else f'<ol class="verdicts">{"".join(verdicts)}</ol>')
    page = page_html(title, lead, "".join(sections))
    written["html"] = write_text(out / "report.html", page)
    return written
