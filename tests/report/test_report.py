"""Tests of leakprobe.report (schema, plots, HTML)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from leakprobe.errors import LeakprobeError
from leakprobe.report.html import render_reports, write_report
from leakprobe.report.plots import plot_curves
from leakprobe.report.schema import AttackResult, build_report, load_report

N = 120


def _result(name: str, shift: float, seed: int, folds: bool = True) -> AttackResult:
    rng = np.random.default_rng(seed)
    member = np.r_[np.ones(N // 2, bool), np.zeros(N // 2, bool)]
    scores = rng.normal(size=N) + shift * member
    return AttackResult(
        attack=name,
        params={"crops": np.int64(8), "scale": (0.08, 0.2)},
        scores=scores,
        is_member=member,
        ids=[f"img{i:04d}" for i in range(N)],
        folds=(np.arange(N) % 3) if folds else None,
        queries=N * 9,
        seconds=1.25,
    )


def _report(blind_shift: float, **kw) -> dict:
    return build_report(
        "encoder-membership",
        "known-subset",
        0,
        [_result("partcrop", 1.5, 1), _result("blind", blind_shift, 2, folds=False)],
        context={"model": {"arch": "resnet18", "epochs": 5}, "utility": {"probe_acc": 0.7}},
        n_bootstrap=200,
        **kw,
    )


def test_build_report_stable_keys() -> None:
    rep = _report(0.0)
    for key in ("leakprobe_version", "kind", "knowledge", "seed", "results"):
        assert key in rep
    assert rep["kind"] == "encoder-membership" and rep["knowledge"] == "known-subset"
    assert rep["seed"] == 0 and isinstance(rep["leakprobe_version"], str)
    assert "context" in rep and "warnings" in rep
    assert set(rep["context"]["versions"]) >= {"python", "numpy", "torch"}
    r = rep["results"][0]
    for key in (
        "attack",
        "params",
        "n_members",
        "n_nonmembers",
        "metrics",
        "queries",
        "seconds",
        "roc",
        "notes",
        "samples",
    ):
        assert key in r
    for key in ("auc", "auc_ci", "balanced_accuracy", "tpr_at_fpr"):
        assert key in r["metrics"]
    assert set(r["metrics"]["tpr_at_fpr"]) == {"0.1", "0.01", "0.001"}
    assert set(r["samples"]) == {"ids", "is_member", "score", "fold"}
    assert r["samples"]["fold"] == [i % 3 for i in range(N)]
    assert rep["results"][1]["samples"]["fold"] is None
    assert r["params"] == {"crops": 8, "scale": [0.08, 0.2]}
    assert r["n_members"] == N // 2 and r["queries"] == N * 9
    # 60 non-members resolve no FPR level (10% needs 100): the TPRs are null, a note says why.
    assert r["metrics"]["tpr_at_fpr"] == {"0.1": None, "0.01": None, "0.001": None}
    assert r["metrics"]["tpr_at_fpr_ci"] == {"0.1": None, "0.01": None, "0.001": None}
    assert (
        "with 60 non-members TPR at FPR 0.1, 0.01, 0.001 is not reported: it needs >= 10/f = "
        "100, 1,000, 10,000 non-members"
    ) in r["notes"]
    json.dumps(rep, allow_nan=False)


def test_blind_warning_only_when_blind_beats_chance() -> None:
    shifted = _report(2.0)
    assert any("differ in distribution" in w for w in shifted["warnings"])
    assert "vs_blind" in shifted["results"][0]
    clean = _report(0.0)
    assert clean["results"][1]["metrics"]["auc_ci"][0] <= 0.5
    assert not any("differ in distribution" in w for w in clean["warnings"])


def test_build_report_validates_lengths() -> None:
    bad = _result("x", 1.0, 0)
    bad.ids = bad.ids[:-1]
    with pytest.raises(LeakprobeError, match="ids"):
        build_report("encoder-membership", "shadow", 0, [bad], n_bootstrap=10)
    nan = _result("y", 1.0, 0)
    nan.scores[3] = np.nan
    with pytest.raises(LeakprobeError, match="'y'.*not finite"):
        build_report("encoder-membership", "shadow", 0, [nan], n_bootstrap=10)


def test_write_report_files_and_escaping(tmp_path: Path) -> None:
    rep = build_report(
        "encoder-membership",
        "known-subset",
        3,
        [_result("<script>alert(1)</script>", 1.0, 1), _result("blind", 2.0, 2)],
        context={"data": "a & b", "utility": [{"epoch": 1, "acc": 0.5}]},
        n_bootstrap=100,
    )
    paths = write_report(rep, tmp_path / "out")
    for name in ("report.json", "roc.png", "roc_loglog.png", "scores_hist.png", "report.html"):
        f = tmp_path / "out" / name
        assert f.is_file() and f.stat().st_size > 0
    assert set(paths) == {"json", "roc", "roc_loglog", "scores_hist", "html"}
    assert (tmp_path / "out" / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "blind" in page and "distribution-shift floor" in page
    assert "differ in distribution" in page and "Utility" in page
    assert "a &amp; b" in page
    # self-contained: every figure inlined, the PNG files still written beside it
    assert page.count('<img src="data:image/png;base64,') == 3
    for img in ("roc.png", "roc_loglog.png", "scores_hist.png"):
        assert f'src="{img}"' not in page and f"({img})" in page
    assert not list((tmp_path / "out").glob("*.tmp"))
    assert load_report(paths["json"])["results"][0]["attack"] == "<script>alert(1)</script>"


def test_load_report_validation(tmp_path: Path) -> None:
    rep = _report(0.0)
    del rep["results"][0]["metrics"]["auc"]
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(rep))
    with pytest.raises(LeakprobeError, match="auc"):
        load_report(p)
    p.write_text("{not json")
    with pytest.raises(LeakprobeError, match="not valid JSON"):
        load_report(p)
    with pytest.raises(LeakprobeError, match="cannot read"):
        load_report(tmp_path / "missing.json")


def test_render_reports_merges(tmp_path: Path) -> None:
    a = write_report(_report(0.0), tmp_path / "a")["json"]
    steal = tmp_path / "steal.json"
    steal.write_text(
        json.dumps(
            {
                "leakprobe_version": "0.1.0",
                "kind": "encoder-stealing",
                "target_probe_accuracy": 0.71,
                "results": [
                    {
                        "method": "contsteal",
                        "budget": 5000,
                        "queries_used": 5000,
                        "metrics": {"surrogate_probe_accuracy": 0.66, "agreement": 0.83},
                    }
                ],
            }
        )
    )
    out = render_reports([a, steal], tmp_path / "merged")
    page = out["html"].read_text(encoding="utf-8")
    assert "partcrop" in page and "contsteal" in page and "r1_roc.png" in page
    assert (tmp_path / "merged" / "r1_roc_loglog.png").is_file()


def test_plot_curves(tmp_path: Path) -> None:
    p = plot_curves(
        {"auc": ([1, 2, 3], [0.5, 0.6, 0.7])}, "epoch", "AUC", tmp_path / "c.png", title="t"
    )
    assert p.read_bytes()[:4] == b"\x89PNG"


def _page(report: dict, out: Path) -> str:
    return write_report(report, out)["html"].read_text(encoding="utf-8")


def test_notes_and_facts_are_shown_once(tmp_path: Path) -> None:
    rep = _report(2.0)
    rep["context"].update({"knowledge": "known-subset", "target": "enc.pt"})
    page = _page(rep, tmp_path)
    # both attacks carry the unresolved-TPR note: one footnote says it for the table
    assert all(any("is not reported" in n for n in r["notes"]) for r in rep["results"])
    assert "is not reported" not in page
    assert page.count("n/a: TPR at FPR f is reported only with &gt;= 10/f non-members") == 1
    assert "10% FPR needs &gt;= 100 (audit with 60)" in page
    assert page.count("n/a<sup>*</sup>") == 6  # three levels of both attacks
    assert 'title="needs &gt;= 10/f = 1,000 non-members; this audit has 60"' in page
    assert page.count("<th>knowledge") == 1  # the context's copy is dropped
    assert "<th>leakprobe</th>" not in page  # versions: the version row says it
    assert page.count("<th>target</th>") == 1 and "Utility" in page


def test_attack_notes_are_grouped_by_text(tmp_path: Path) -> None:
    rep = _report(0.0)
    for r in rep["results"]:
        r["notes"].append("scores were clipped to [0, 1]")
    rep["results"][0]["notes"].append("only partcrop says this")
    page = _page(rep, tmp_path)
    assert page.count("scores were clipped") == 1
    assert "<strong>partcrop, blind</strong>: scores were clipped" in page
    assert "<strong>partcrop</strong>: only partcrop says this" in page


@pytest.mark.parametrize(
    "kind, blurb",
    [
        ("encoder-membership", "Encoder membership inference."),
        ("image2image-membership", "Image-to-image membership inference."),
        ("captioner-membership", "Captioner membership inference."),
    ],
)
def test_each_membership_kind_opens_with_its_blurb(tmp_path: Path, kind: str, blurb: str) -> None:
    rep = _report(0.0)
    rep["kind"] = kind
    page = _page(rep, tmp_path)
    assert page.count(blurb) == 1
    others = {"Encoder membership inference.", "Image-to-image membership inference.",
              "Captioner membership inference.", "Encoder stealing."} - {blurb}
    assert not any(o in page for o in others)
    assert page.index(blurb) < page.index("Threat model")


def _stealing_report(informative: bool = True) -> dict:
    return {
        "leakprobe_version": "0.1.0",
        "kind": "encoder-stealing",
        "seed": 0,
        "target_probe_accuracy": 0.71 if informative else 0.338,
        "random_init_probe_accuracy": 0.4 if informative else 0.375,
        "probe_informative": informative,
        "probe_informative_margin": 0.03,
        "context": {"target": "enc.pt", "budgets": [100, 200], "probe_test": "digits"},
        "warnings": [] if informative else ["the target's linear probe ... cannot judge theft"],
        "results": [
            {"method": m, "budget": b, "queries_used": b,
             "metrics": {"surrogate_probe_accuracy": acc, "agreement": acc + 0.1}}
            for m, b, acc in (("contsteal", 100, 0.5), ("contsteal", 200, 0.6),
                              ("mse", 100, 0.45), ("mse", 200, 0.5))
        ],
    }


def test_stealing_page_has_its_own_blurb_and_inlined_plots(tmp_path: Path) -> None:
    page = _page(_stealing_report(), tmp_path)
    assert page.count("Encoder stealing.") == 1
    assert "membership inference" not in page and "training member" not in page
    assert page.count('<img src="data:image/png;base64,') == 2
    assert (tmp_path / "steal_surrogate_probe_accuracy.png").is_file()
    assert page.count("<th>target</th>") == 1 and page.count("<th>seed</th>") == 1
    assert "probe_informative" in page and "cannot judge theft" not in page


def test_stealing_page_warns_first_when_the_probe_cannot_judge(tmp_path: Path) -> None:
    page = _page(_stealing_report(informative=False), tmp_path)
    warn = page.index("cannot judge theft")
    verdict = page.index("Theft cannot be judged by probe accuracy")
    # verdict, warning, results; the setting last, collapsed
    assert verdict < warn < page.index("Stealing results") < page.index("<h3>Setting")
    assert page.index("<details") < page.index("<h3>Setting")
    assert "probe accuracy, accuracy ratio and agreement do not show theft" in page


def test_merged_page_has_one_blurb_per_kind(tmp_path: Path) -> None:
    a = write_report(_report(0.0), tmp_path / "a")["json"]
    b = write_report(_report(1.0), tmp_path / "b")["json"]
    s = write_report(_stealing_report(), tmp_path / "s")["json"]
    page = render_reports([a, b, s], tmp_path / "merged")["html"].read_text(encoding="utf-8")
    assert page.count("Encoder membership inference.") == 1
    assert page.count("Encoder stealing.") == 1
    assert page.count('<img src="data:image/png;base64,') == 3 + 3 + 2


def test_defence_and_study_pages_inline_their_figures(tmp_path: Path) -> None:
    from leakprobe.report.defence import write_defence_report
    from leakprobe.study.report import _figures

    def setting(name: str, strength: float, auc: float, probe: float) -> dict:
        return {"name": name, "setting": {"noise": strength}, "strength": strength,
                "dp": True, "epsilon": 8.0 / strength,
                "utility": {"knn_accuracy": probe - 0.05, "linear_probe_accuracy": probe},
                "results": [{"attack": "partcrop",
                             "metrics": {"auc": auc, "auc_ci": [auc - 0.05, auc + 0.05]}}]}

    report = {"kind": "encoder-defence", "defence": "dp", "context": {"seed": 0},
              "warnings": [], "settings": [setting("n1", 1.0, 0.7, 0.8),
                                           setting("n2", 2.0, 0.6, 0.7)]}
    paths = write_defence_report(report, tmp_path / "defence")
    page = paths["html"].read_text(encoding="utf-8")
    verdict = ("Of 2 dp settings, noise=2.0 lowers the strongest attack, partcrop, most: AUC "
               "0.60 against 0.70 at noise=1.0, at a cost of 0.10 linear-probe accuracy "
               "(0.70 vs 0.80)")  # a report without the key gets the sentence computed
    body = page[page.index("</h1>") + 5:]
    assert body.startswith(f'<p class="verdict">{verdict}</p>')
    assert body.index("Defence sweep.") < body.index("<table") < body.index("<details")
    assert page.count('<img src="data:image/png;base64,') == 2
    assert "Defence sweep." in page and 'src="tradeoff.png"' not in page
    assert paths["tradeoff"].is_file() and paths["strength"].is_file()
    figs = _figures({"privacy_vs_utility": paths["tradeoff"]}, ["privacy_vs_utility"])
    assert figs.count('<img src="data:image/png;base64,') == 1


def _resolving_report(n0: int = 1000, n1: int = 300) -> dict:
    rng = np.random.default_rng(5)
    member = np.r_[np.ones(n1, bool), np.zeros(n0, bool)]
    result = AttackResult(
        attack="partcrop",
        params={},
        scores=rng.normal(size=n1 + n0) + 1.5 * member,
        is_member=member,
        ids=[f"img{i:05d}" for i in range(n1 + n0)],
        folds=None,
        queries=n1 + n0,
        seconds=1.0,
    )
    return build_report("encoder-membership", "known-subset", 0, [result], n_bootstrap=100)


def test_reported_tpr_shows_the_threshold_fpr_and_null_says_why(tmp_path: Path) -> None:
    rep = _resolving_report()
    m = rep["results"][0]["metrics"]
    assert m["tpr_at_fpr"]["0.001"] is None and m["tpr_at_fpr"]["0.01"] is not None
    assert m["fpr_expected"]["0.01"] == 10 / 1001 and m["fpr_achieved"]["0.01"] == 9 / 1000
    assert rep["results"][0]["notes"] == [
        "with 1000 non-members TPR at FPR 0.001 is not reported: it needs >= 10/f = 10,000 "
        "non-members"
    ]
    path = tmp_path / "report.json"
    path.write_text(json.dumps(rep))
    assert load_report(path)["results"][0]["metrics"]["tpr_at_fpr"]["0.001"] is None
    page = _page(rep, tmp_path / "html")
    assert "at FPR 0.00999" in page and "at FPR 0.0999" in page  # (k+1)/(n0+1)
    assert page.count("n/a<sup>*</sup>") == 1
    assert "0.1% FPR needs &gt;= 10,000 (audit with 1,000)" in page
    assert "admits on average (k+1)/(n0+1) &lt;= f of new non-members" in page


def test_old_report_with_unresolvable_tpr_renders_na(tmp_path: Path) -> None:
    # Reports written before TPRs became nullable hold numbers at every level.
    rep = _report(0.0)
    for r in rep["results"]:
        r["metrics"]["tpr_at_fpr"] = {"0.1": 0.5, "0.01": 0.2, "0.001": 0.2}
        r["metrics"].pop("fpr_expected")
        r["notes"] = ["with 60 non-members ... is the TPR at zero false positives"]
    page = _page(rep, tmp_path)
    assert page.count("n/a<sup>*</sup>") == 6 and "zero false positives" not in page


def test_loglog_roc_shades_the_unresolvable_region(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leakprobe.report import plots

    spans = []
    save = plots.save_figure

    def x_range(patch) -> tuple[float, float]:
        if hasattr(patch, "get_width"):  # a Rectangle (matplotlib >= 3.9)
            return patch.get_x(), patch.get_x() + patch.get_width()
        xs = np.asarray(patch.get_xy())[:, 0]
        return float(xs.min()), float(xs.max())

    def spy(fig, path):
        ax = fig.axes[0]
        spans.extend(
            (p.get_label(), x_range(p)) for p in ax.patches if "not resolvable" in p.get_label()
        )
        return save(fig, path)

    monkeypatch.setattr(plots, "save_figure", spy)
    rep = _resolving_report(n0=400)
    plots.plot_roc(rep, tmp_path / "lin.png")
    assert spans == []  # the linear plot has no shading
    out = plots.plot_roc(rep, tmp_path / "log.png", loglog=True)
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert len(spans) == 1 and spans[0][0] == "not resolvable (FPR < 10/n0)"
    assert spans[0][1] == pytest.approx((1e-3, 10 / 400))
    spans.clear()
    rep["results"].append(dict(rep["results"][0], n_nonmembers=2000))
    plots.plot_roc(rep, tmp_path / "log2.png", loglog=True)
    assert [s[0] for s in spans] == [
        "not resolvable (FPR < 10/n0, n0=400)",
        "not resolvable (FPR < 10/n0, n0=2,000)",
    ]


def test_study_table_shows_na_for_a_null_tpr() -> None:
    from leakprobe.study.report import _cells_table

    def attack(name: str, tpr: float | None) -> dict:
        return {"attack": name, "auc": 0.6, "auc_ci": [0.5, 0.7], "tpr_at_1pct_fpr": tpr,
                "tpr_at_1pct_fpr_ci": None if tpr is None else [0.1, 0.3]}

    cell = {"name": "c0", "folder": "c0", "paradigm": "simclr", "defence": "none", "seed": 0,
            "epochs_trained": 1, "utility": {"knn_accuracy": 0.3, "linear_probe_accuracy": 0.4},
            "epsilon": None, "attacks": [attack("partcrop", None), attack("blind", 0.2)]}
    table = _cells_table({"attacks": ["partcrop", "blind"], "cells": [cell]})
    assert table.count('title="TPR at 1% FPR needs &gt;= 1,000 non-members">TPR@1% n/a'
                       "</span>") == 1
    assert "0.200" in table and "[0.100, 0.300]" in table


def test_p_values_reach_the_json_the_html_and_the_blind_warning(tmp_path: Path) -> None:
    """Permuted AUCs give a p-value and a widened interval; the blind warning uses its p."""
    fitted = _result("partcrop", 0.0, 5)
    fitted.refitted, fitted.null_aucs = True, np.linspace(0.40, 0.62, 99)
    blind = _result("blind", 0.0, 6, folds=False)
    blind.refitted, blind.null_aucs = True, np.full(99, 0.9)  # observed AUC below all of them
    report = build_report("encoder-membership", "known-subset", 0, [fitted, blind],
                          n_bootstrap=200)
    m = report["results"][0]["metrics"]
    assert m["p_value_method"] == "permutation" and m["permutations"] == 99
    assert 0.0 < m["p_value"] <= 1.0 and len(report["results"][0]["null_aucs"]) == 99
    lo, hi = m["auc_ci"]
    assert lo <= m["auc_ci_bootstrap"][0] and hi >= m["auc_ci_bootstrap"][1]
    assert report["results"][1]["metrics"]["p_value"] == pytest.approx(1.0)
    assert not any("differ in distribution" in w for w in report["warnings"])
    blind.null_aucs = np.full(99, 0.1)  # now nothing permuted reaches the blind AUC
    shifted = build_report("encoder-membership", "known-subset", 0, [fitted, blind],
                           n_bootstrap=200)
    assert any("p = 0.01" in w for w in shifted["warnings"])
    write_report(report, tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert "p-value (no leakage)" in html and "99 permutations; null AUC band" in html


def test_stealing_summary_says_how_much_was_copied(tmp_path: Path) -> None:
    from leakprobe.report.stealing import build_stealing_report, stealing_summary

    rep = _stealing_report()
    assert stealing_summary(rep) == (
        "The stolen copy reaches 85% of the target's probe accuracy (0.60 vs 0.71; an "
        "untrained encoder reaches 0.40) with 200 queries (contsteal)")
    page = _page(rep, tmp_path)
    body = page[page.index("</h1>") + 5:]
    assert body.startswith('<p class="verdict">The stolen copy reaches 85%')
    assert body.index("The stolen copy") < body.index("<table")
    # built by its builder, the report carries the sentence
    built = build_stealing_report(seed=0, results=rep["results"], context={}, warnings=[],
                                  target_probe_accuracy=0.71, random_init_probe_accuracy=0.4,
                                  probe_informative=True, probe_informative_margin=0.03)
    assert built["summary"] == stealing_summary(rep)
    # an answer defence that holds the copy down, with its cost to legitimate users
    defended = dict(rep, defences=[{"defence": "noise:0.1", "target_probe_accuracy": 0.69,
                                    "target_knn_accuracy": 0.6, "probe_accuracy_drop": 0.02}])
    defended["results"] = rep["results"] + [
        {"method": "contsteal", "budget": 200, "queries_used": 200, "defence": "noise:0.1",
         "metrics": {"surrogate_probe_accuracy": 0.45}}]
    assert stealing_summary(defended).endswith(
        "; behind the answer defence noise:0.1 the best copy reaches 63%, at a cost of 0.02 "
        "probe accuracy to legitimate users")
    assert stealing_summary(_stealing_report(informative=False)).startswith(
        "Theft cannot be judged by probe accuracy: the target's probe (0.34) is no better "
        "than an untrained encoder's (0.38)")
    weak = dict(rep, random_init_probe_accuracy=0.65)
    assert stealing_summary(weak).startswith("No theft shown by the probe: the best copy's "
                                             "accuracy (0.60 with 200 queries (contsteal))")
    unjudged = dict(rep, results=[dict(r, metrics={}) for r in rep["results"]])
    assert stealing_summary(unjudged) == (
        "4 surrogates trained (contsteal, mse, up to 200 queries); without probe sets how "
        "much of the target was copied is not measured")


def _defence_setting(name: str, strength: float, auc: float, probe: float | None,
                     p: float = 0.01) -> dict:
    return {"name": name, "setting": {"noise": strength}, "strength": strength, "dp": True,
            "epsilon": 8.0 / strength,
            "utility": None if probe is None else {"knn_accuracy": probe - 0.05,
                                                   "linear_probe_accuracy": probe},
            "results": [{"attack": "partcrop", "metrics": {"auc": auc, "auc_ci": [
                auc - 0.05, auc + 0.05], "p_value": p}},
                        {"attack": "blind", "metrics": {"auc": 0.9, "auc_ci": [0.85, 0.95]}}]}


def test_defence_summary_names_the_setting_that_lowers_the_strongest_attack() -> None:
    from leakprobe.report.defence import build_defence_report, defence_summary

    report = build_defence_report(
        defence="dp", warnings=[], context={},
        settings=[_defence_setting("n0.5", 0.5, 0.74, 0.81),
                  _defence_setting("n1", 1.0, 0.7, 0.8),
                  _defence_setting("n2", 2.0, 0.55, 0.72, p=0.21)])
    # the blind floor (0.9) is not an attack to defend against
    assert report["summary"] == (
        "Of 3 dp settings, noise=2.0 lowers the strongest attack, partcrop, most: AUC 0.55 "
        "(p = 0.21) against 0.74 at noise=0.5, at a cost of 0.09 linear-probe accuracy "
        "(0.72 vs 0.81)")
    one = dict(report, settings=[_defence_setting("n1", 1.0, 0.7, None)])
    assert defence_summary(one) == ("In the one dp setting (noise=1.0) the strongest "
                                    "attack, partcrop, reaches AUC 0.70 (p = 0.01)")


def test_membership_page_reads_verdict_results_figures_notes_then_configuration(
        tmp_path: Path) -> None:
    from leakprobe.report.html import INTERVALS_BRIEF, INTERVALS_NOTE

    rep = _report(0.0)
    rep["results"][0]["notes"].append("a note on partcrop")
    page = _page(rep, tmp_path)
    body = page[page.index("</h1>") + 5:]
    assert body.startswith(f'<p class="verdict leakage">{rep["summary"]}</p>')
    order = [body.index(s) for s in (
        rep["summary"], "Encoder membership inference.", "<h3>Results", '<img src="data:',
        "a note on partcrop", '<details class="config">', "Threat model",
        "Attack parameters")]
    assert order == sorted(order)
    # the intro and the footnote say the same about the intervals: what compute_metrics does
    assert INTERVALS_BRIEF in page and INTERVALS_NOTE.replace("'", "&#x27;") in page
    assert "Intervals are stratified-bootstrap 95% percentile intervals" not in page
    for text in (INTERVALS_BRIEF, INTERVALS_NOTE):
        assert "bootstrap" in text and "widened" in text and "fitting noise" in text


def test_view_recipes_are_listed_once_per_recipe(tmp_path: Path) -> None:
    from demo_like import encoder_report

    rep = encoder_report(n_bootstrap=20)
    assert sum("views" in r["params"] for r in rep["results"]) == 7
    page = _page(rep, tmp_path)
    config = page[page.index('<details class="config">'):]
    assert config.count("blur_sigma") == 2  # byol and byol with crop-scale 0.2:1
    assert ("<tr><td>R1</td><td>views</td><td>encodermi-vector, encodermi-set, "
            "encodermi-threshold</td>") in config
    assert "<td>lpla-p1, lpla-p2, lpla-pinf, baseline-consistency</td>" in config
    assert "n_views=10, variant=vector, epochs=100, views=R1" in config
    assert "crop_scale 0.2&ndash;1" in config  # compact: the JSON keeps the full values
