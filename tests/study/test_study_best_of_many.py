"""Best-of-many: the study ranks paradigms by a pre-declared primary attack, and reports the
maximum AUC over attacks only with its p-value against the permutation null of the maximum.

Everything here is built in memory (no training): fake cell records whose attacks' AUCs and
permuted AUCs come from fixed random scores and one shared set of label permutations, as an
audit's attacks do.
"""

from __future__ import annotations

import html

import numpy as np
import pytest

from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.metrics import auc
from leakprobe.evaluation.permutation import null_aucs_of_fixed_scores, permuted_labels
from leakprobe.report.schema import summary_rows as _summarise
from leakprobe.study.config import parse_study_config, primary_attacks
from leakprobe.study.grid import expand_grid
from leakprobe.study.report import (
    best_of_many,
    build_study,
    print_table,
    render_html,
    table_lines,
)

NINE = ["partcrop", "partcrop-cosine", "encodermi-vector", "encodermi-set",
        "encodermi-threshold", "lpla-p1", "lpla-p2", "lpla-pinf", "baseline-norm"]


def base(**overrides) -> dict:
    raw = {"data": "synthetic:40", "members": 20, "nonmembers": 20,
           "paradigms": [{"method": "simclr", "arch": "resnet-tiny", "epochs": 4}]}
    raw.update(overrides)
    return raw


def _row(name: str, auc_value: float, null: list[float] | None = None,
         p: float | None = None) -> dict:
    row = {"attack": name, "auc": float(auc_value), "auc_ci": [auc_value - 0.1,
                                                              auc_value + 0.1],
           "tpr_at_1pct_fpr": None, "tpr_at_1pct_fpr_ci": None}
    if null is not None:
        row.update(p_value=p, null_aucs=[float(v) for v in null], null_auc_band=[0.4, 0.6])
    return row


def _record(name: str, paradigm: str, rows: list[dict], utility: float = 0.5) -> dict:
    return {"name": name, "folder": name, "paradigm": paradigm, "defence": "none",
            "strength_name": "", "strength": None, "seed": 0, "epochs_trained": 4,
            "utility": {"knn_accuracy": utility, "linear_probe_accuracy": utility},
            "attacks": [*rows, _row("blind", 0.5)], "epsilon": None, "dp": None}


def null_cell(rng: np.random.Generator, n: int = 64, attacks: int = 9,
              permutations: int = 100) -> dict:
    """A cell without leakage: each attack scores 64 + 64 images at random (correlated
    attacks, as variants of one method are), labels are independent of the scores, and all
    attacks are re-scored under one shared set of label permutations."""
    y = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    shared = rng.normal(size=2 * n)
    labels = permuted_labels(y, permutations, int(rng.integers(2**31)))
    rows = []
    for name in NINE[:attacks]:
        scores = 0.5 * shared + rng.normal(size=2 * n)
        observed = auc(scores, y)
        null = null_aucs_of_fixed_scores(scores, labels)
        p = float((1 + np.sum(null >= observed - 1e-12)) / (1 + null.size))
        rows.append(_row(name, observed, list(null), p))
    return _record("c", "simclr", rows)


def test_best_of_many_p_value_is_valid_under_no_leakage():
    rng = np.random.default_rng(0)
    cells = [null_cell(rng) for _ in range(400)]
    bests = [best_of_many(c) for c in cells]
    maxima = np.array([b["auc"] for b in bests])
    p = np.array([b["p_value"] for b in bests])
    assert all(b["n_attacks"] == 9 and b["permutations"] == 100 for b in bests)
    # the raw maximum of 9 chance AUCs is well above 0.5 ...
    assert 0.55 < maxima.mean() < 0.62 and np.mean(maxima > 0.58) > 0.25
    # ... and the best attack's own p-value would often call it leakage ...
    own = np.array([min(a["p_value"] for a in c["attacks"] if "p_value" in a) for c in cells])
    assert np.mean(own < 0.05) > 0.2
    # ... but the p-value against the permutation null of the maximum is not small
    assert np.mean(p < 0.05) <= 0.08 and np.mean(p < 0.2) <= 0.26
    assert 0.4 < p.mean() < 0.6  # uniform-ish
    assert np.histogram(p, bins=4, range=(0, 1))[0].min() >= 60


def test_best_of_many_p_value_is_small_under_leakage():
    rng = np.random.default_rng(1)
    cell = null_cell(rng)
    y = np.r_[np.ones(64, bool), np.zeros(64, bool)]
    scores = y + rng.normal(size=128)  # one attack that finds real leakage
    labels = permuted_labels(y, 100, 7)
    cell["attacks"] = [{**a, "null_aucs": list(null_aucs_of_fixed_scores(
        rng.normal(size=128), labels))} for a in cell["attacks"]]
    cell["attacks"][3] = _row("encodermi-set", auc(scores, y),
                              list(null_aucs_of_fixed_scores(scores, labels)), 0.01)
    best = best_of_many(cell)
    assert best["attack"] == "encodermi-set" and best["auc"] > 0.7
    assert best["p_value"] == pytest.approx(1 / 101)


def _two_paradigms(headline: str | None = None):
    """simclr: primary partcrop 0.70, max 0.72; byol: primary 0.55 but lpla-p1 0.80."""
    raw = base(attacks=["partcrop", "lpla"],
               paradigms=[{"method": "simclr"}, {"method": "byol"}])
    if headline:
        raw["headline_family"] = headline
    study = parse_study_config(raw)
    null = list(np.linspace(0.4, 0.6, 100))
    simclr = [_row("partcrop", 0.70, null, 0.01), _row("lpla-p1", 0.60, null, 0.2),
              _row("lpla-p2", 0.72, null, 0.01), _row("lpla-pinf", 0.5, null, 0.5)]
    byol = [_row("partcrop", 0.55, null, 0.3), _row("lpla-p1", 0.80, null, 0.01),
            _row("lpla-p2", 0.52, null, 0.4), _row("lpla-pinf", 0.5, null, 0.5)]
    records = [_record("simclr-none-s0", "simclr", simclr, 0.6),
               _record("byol-none-s0", "byol", byol, 0.7)]
    return build_study(study, records)


def test_ranking_uses_the_headline_primary_not_the_maximum():
    summary = _two_paradigms()
    rank = summary["ranking"]
    assert rank["headline_family"] == "partcrop" and rank["headline_attack"] == "partcrop"
    assert rank["primary_attacks"] == {"partcrop": "partcrop", "lpla": "lpla-p2"}
    rows = {r["paradigm"]: r for r in rank["paradigms"]}
    assert rows["simclr"]["leakage"] == pytest.approx(0.70)
    assert rows["byol"]["leakage"] == pytest.approx(0.55)
    # byol has the higher maximum but the lower primary: it ranks below simclr
    assert rows["byol"]["best_of_many"]["auc"] == pytest.approx(0.80)
    assert rows["byol"]["best_of_many"]["attacks"] == ["lpla-p1"]
    assert rows["simclr"]["rank_leakage"] == 1 and rows["byol"]["rank_leakage"] == 2
    assert rows["byol"]["primary"]["lpla"] == {"attack": "lpla-p2", "auc": 0.52}
    assert summary["config"]["primary_attacks"] == rank["primary_attacks"]
    assert summary["config"]["headline_family"] == "partcrop"
    assert summary["config"]["knowledge"]["permutations"] == 100
    leak = {c["name"]: c["leakage_summary"] for c in summary["cells"]}
    assert leak["byol-none-s0"]["headline_auc"] == pytest.approx(0.55)
    assert leak["byol-none-s0"]["primary"]["lpla"]["attack"] == "lpla-p2"
    best = leak["byol-none-s0"]["best_of_many"]
    assert best["attack"] == "lpla-p1" and best["n_attacks"] == 4
    assert best["p_value"] == pytest.approx(1 / 101)  # 0.80 beats every null maximum (0.6)
    # Spearman over the paradigms uses the primary: utility up, primary AUC down
    assert summary["ranking"]["spearman_utility_vs_auc"]["undefended_cells"]["leakage"]["n"] == 2
    page = render_html(summary, {})
    assert "leakage (primary: partcrop)" in page and "best of 4: 0.800, p = 0.010" in page
    lines = table_lines(summary)
    assert "primary" in lines[0] and "best of 4 (p)" in lines[0]
    assert lines[2].rstrip().endswith("0.550  0.800 (p 0.010)")
    echoed: list[str] = []
    print_table(summary, echoed.append)
    ranked = [line for line in echoed if line.startswith("  ")]
    assert ranked[0].startswith("  1. simclr") and ranked[1].startswith("  2. byol")
    assert "best of 4: 0.800, p = 0.010" in ranked[1]


def test_headline_family_is_configurable():
    rows = {r["paradigm"]: r for r in _two_paradigms("lpla")["ranking"]["paradigms"]}
    assert rows["simclr"]["leakage"] == pytest.approx(0.72)  # lpla-p2 is lpla's primary
    assert rows["simclr"]["rank_leakage"] == 1 and rows["byol"]["rank_leakage"] == 2


def test_old_records_without_permutations_render():
    study = parse_study_config(base(attacks=["partcrop", "encodermi-vector"]))
    old = _record("simclr-none-s0", "simclr",
                  [_row("partcrop", 0.61), _row("encodermi-vector", 0.66)])
    summary = build_study(study, [old])
    leak = summary["cells"][0]["leakage_summary"]
    assert leak["headline_auc"] == pytest.approx(0.61) and leak["headline_p_value"] is None
    assert leak["best_of_many"]["p_value"] is None
    assert leak["best_of_many"]["auc"] == pytest.approx(0.66)
    page = render_html(summary, {})
    assert "best of 2: 0.660, p = n/a" in page
    assert table_lines(summary)[1].rstrip().endswith("0.610  0.660 (p n/a)")
    # a study.json written before leakage summaries existed still renders
    legacy = {**summary, "config": {k: v for k, v in summary["config"].items()
                                    if k not in ("primary_attacks", "headline_family")},
              "cells": [{k: v for k, v in c.items() if k != "leakage_summary"}
                        for c in summary["cells"]],
              "ranking": {"paradigms": [{k: v for k, v in r.items() if k in (
                  "paradigm", "cells", "utility", "knn_accuracy", "leakage", "auc",
                  "rank_utility", "rank_leakage")} for r in summary["ranking"]["paradigms"]],
                  "spearman_utility_vs_auc": {}, "leakage": "max AUC over non-blind attacks"}}
    legacy["config"]["knowledge"] = {"setting": "known-subset", "folds": 2, "repeats": 3}
    assert "leakage<br>(primary: partcrop)" in render_html(legacy, {})
    assert table_lines(legacy)[1].rstrip().endswith("0.610  0.660 (p n/a)")
    echoed: list[str] = []
    print_table(legacy, echoed.append)
    assert echoed


def test_runner_summary_rows_carry_the_permutation_test():
    report = {"results": [{
        "attack": "lpla-p2", "queries": 10, "seconds": 1.0, "null_aucs": [0.5, 0.45],
        "metrics": {"auc": 0.6, "auc_ci": [0.5, 0.7], "tpr_at_fpr": {"0.01": None},
                    "tpr_at_fpr_ci": {"0.01": None}, "balanced_accuracy": 0.55,
                    "p_value": 0.04, "p_value_method": "permutation", "permutations": 2,
                    "null_auc_band": [0.45, 0.5]}}]}
    row = _summarise(report)[0]
    assert row["p_value"] == 0.04 and row["null_auc_band"] == [0.45, 0.5]
    assert row["null_aucs"] == [0.5, 0.45] and row["permutations"] == 2
    assert row["auc"] == 0.6 and row["auc_ci"] == [0.5, 0.7]  # existing keys kept


def test_primary_attack_defaults():
    cfg = parse_study_config(base())
    assert cfg.primary_attacks == {"partcrop": "partcrop", "encodermi": "encodermi-vector",
                                   "lpla": "lpla-p2", "baseline": "baseline-norm"}
    assert cfg.headline_family == "partcrop" and cfg.knowledge.permutations == 100
    cfg = parse_study_config(base(attacks=["lpla-p1", "partcrop-pooled", "baseline"]))
    assert cfg.primary_attacks == {"lpla": "lpla-p1", "partcrop": "partcrop-pooled",
                                   "baseline": "baseline-consistency"}
    assert cfg.headline_family == "lpla"
    cfg = parse_study_config(base(attacks=["partcrop", "encodermi"], headline_family="encodermi",
                                  primary_attacks={"encodermi": "encodermi-set"},
                                  knowledge={"permutations": 0}))
    assert cfg.primaries() == {"partcrop": "partcrop", "encodermi": "encodermi-set"}
    assert cfg.headline() == ("encodermi", "encodermi-set") and cfg.knowledge.permutations == 0
    assert cfg.to_dict()["primary_attacks"] == cfg.primaries()
    assert primary_attacks(["blind", "baseline-norm"]) == {"baseline": "baseline-norm"}


def test_cell_keys_follow_permutations_not_the_primaries():
    def keys(**overrides):
        cfg = parse_study_config(base(attacks=["lpla"], **overrides))
        return [c.key for r in expand_grid(cfg, "0") for c in r.cells]

    assert keys() == keys(primary_attacks={"lpla": "lpla-p1"}, headline_family="lpla")
    assert keys() != keys(knowledge={"permutations": 10})


@pytest.mark.parametrize(("overrides", "message"), [
    ({"primary_attacks": {"dino": "partcrop"}}, "primary_attacks: unknown attack family "
                                                "'dino'; known: partcrop, encodermi, lpla"),
    ({"primary_attacks": {"lpla": "encodermi-set"}},
     "primary_attacks.lpla: 'encodermi-set' is not a lpla attack; lpla attacks: lpla-p1"),
    ({"primary_attacks": {"lpla": "lpla-p3"}}, "'lpla-p3' is not a lpla attack"),
    ({"attacks": ["lpla-p1"], "primary_attacks": {"lpla": "lpla-p2"}},
     "primary_attacks.lpla: 'lpla-p2' is not among the study's attacks (lpla-p1)"),
    ({"attacks": ["lpla"], "primary_attacks": {"partcrop": "partcrop"}},
     "primary_attacks.partcrop: 'partcrop' is not among the study's attacks"),
    ({"primary_attacks": {"lpla": 3}}, "primary_attacks.lpla: expected a non-empty string"),
    ({"primary_attacks": ["lpla-p2"]}, "primary_attacks: expected a mapping"),
    ({"headline_family": "dino"}, "headline_family: must be one of partcrop, encodermi"),
    ({"attacks": ["lpla"], "headline_family": "partcrop"},
     "headline_family: the study runs no partcrop attack; families in the study: lpla"),
    ({"knowledge": {"permutations": -1}}, "knowledge.permutations: must be >= 0"),
    ({"knowledge": {"permutations": 1.5}}, "knowledge.permutations: expected an integer"),
])
def test_primary_attack_validation(overrides, message):
    with pytest.raises(LeakprobeError) as e:
        parse_study_config(base(**overrides))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_study_leads_with_its_main_finding():
    from leakprobe.study.report import study_summary

    summary = _two_paradigms()
    # simclr's partcrop p = 0.01, byol's 0.3; simclr leaks more; 2 cells: no Spearman
    assert summary["summary"] == (
        "The headline attack partcrop beats chance (p <= 0.05) in 1 of 2 cells; undefended, "
        "simclr leaks most (AUC 0.70) and byol least (0.55)")
    assert study_summary({k: v for k, v in summary.items() if k != "summary"}) == \
        summary["summary"]
    page = render_html(summary, {})
    body = page[page.index("</h1>") + 5:]
    assert body.startswith(f'<p class="verdict">{html.escape(summary["summary"])}</p>')
    assert body.index("<h2>Cells") < body.index('<details class="config">')
    echoed: list[str] = []
    print_table(summary, echoed.append)
    assert echoed[0] == summary["summary"] and echoed[1].startswith("cell ")


def test_the_study_summary_reports_the_utility_link_when_it_can():
    from leakprobe.study.report import study_summary

    summary = _two_paradigms()
    corr = summary["ranking"]["spearman_utility_vs_auc"]["undefended_cells"]["leakage"]
    corr.update(rho=0.9, p=0.01, n=12)
    found = study_summary({k: v for k, v in summary.items() if k != "summary"})
    assert found.endswith("; better encoders leak more (Spearman rho = 0.90, p = 0.01, "
                          "12 undefended cells)")
    corr.update(rho=-0.3, p=0.4)
    found = study_summary({k: v for k, v in summary.items() if k != "summary"})
    assert found.endswith("; no clear link between utility and leakage (Spearman rho = -0.30, "
                          "p = 0.40, 12 undefended cells)")
