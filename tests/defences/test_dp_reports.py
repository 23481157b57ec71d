"""Every printed epsilon is a guarantee or says it is not: defence and study reports."""

from __future__ import annotations

import html

from leakprobe.report.defence import defence_rows, write_defence_report
from leakprobe.study.report import _cells_table, _epsilon, table_lines
from leakprobe.training.dp_record import LEGACY_CAVEAT

CAVEAT = ("SimCLR: each image is a negative in every other image's loss term, so its "
          "sensitivity exceeds C; epsilon_nominal is the accountant's number for clipped "
          "per-image terms, not a guarantee")


def _dp(epsilon, nominal, caveat=None) -> dict:
    return {"epsilon": epsilon, "epsilon_nominal": nominal, "caveat": caveat, "delta": 1e-5,
            "noise_multiplier": 1.0, "max_grad_norm": 1.0, "steps": 4, "sample_rate": 0.5,
            "accountant": "rdp", "clipping_unit": "image",
            "exact_per_image": caveat is None, "sampling": "poisson"}


RECORDS = {
    "none": None,
    "byol": _dp(2.5, 2.5),
    "simclr": _dp(None, 6.78, CAVEAT),
    "free": _dp(None, None),
    "legacy": {"epsilon": 68.1, "delta": 1e-5, "noise_multiplier": 1.0, "steps": 200},
}


def _cell(name: str, dp) -> dict:
    auc = {"attack": "partcrop", "auc": 0.6, "auc_ci": [0.5, 0.7], "tpr_at_1pct_fpr": 0.02,
           "tpr_at_1pct_fpr_ci": [0.0, 0.05]}
    return {"name": name, "folder": name, "paradigm": "simclr",
            "defence": "none" if dp is None else "dp", "strength_name": "noise_multiplier",
            "strength": 1.0, "seed": 0, "epochs_trained": 2,
            "utility": {"knn_accuracy": 0.3, "linear_probe_accuracy": 0.4},
            "attacks": [auc], "epsilon": 68.1 if name == "legacy" else None, "dp": dp}


def test_study_tables_show_a_number_only_for_guarantees():
    summary = {"attacks": ["partcrop"], "cells": [_cell(n, d) for n, d in RECORDS.items()]}
    lines = table_lines(summary)
    by_name = {line.split()[0]: line for line in lines[1:]}
    assert " 2.50 " in by_name["byol"]
    assert "none*" in by_name["simclr"] and "6.78" not in by_name["simclr"]
    assert "none*" in by_name["legacy"] and "68.1" not in by_name["legacy"]
    assert "inf" in by_name["free"]
    notes = [line for line in lines if line.startswith("* ")]
    assert notes == [f"* no DP guarantee (nominal epsilon simclr 6.78): {CAVEAT}",
                     f"* no DP guarantee (nominal epsilon legacy 68.1): {LEGACY_CAVEAT}"]
    page = _cells_table(summary)
    assert "none (nominal 6.78, not a guarantee)" in page and ">2.5<" in page
    assert "none (nominal 68.1, not a guarantee)" in page
    assert "epsilon is not a DP guarantee for simclr: SimCLR: each image" in page
    assert [_epsilon(c) for c in summary["cells"]] == [None, 2.5, None, None, None]


def test_defence_report_shows_nominal_epsilons_with_their_caveat(tmp_path):
    def setting(name, dp):
        return {"name": name, "setting": {"noise_multiplier": 1.0}, "strength": 1.0,
                "dp": dp, "epsilon": dp.get("epsilon") if dp else None, "utility": None,
                "results": [{"attack": "partcrop", "metrics": {"auc": 0.6}}]}

    report = {"kind": "encoder-defence", "defence": "dp", "context": {}, "warnings": [],
              "settings": [setting(n, d) for n, d in RECORDS.items()]}
    _, rows = defence_rows(report)
    assert [r["epsilon_text"] for r in rows] == [
        "-", "2.5", "none (nominal 6.78, not a guarantee)", "inf (no noise)",
        "none (nominal 68.1, not a guarantee)"]
    assert [r["epsilon"] for r in rows] == [None, 2.5, None, None, None]
    page = write_defence_report(report, tmp_path)["html"].read_text()
    assert "none (nominal 6.78, not a guarantee)" in page
    assert f"epsilon is not a DP guarantee here: {html.escape(CAVEAT)}" in page
    assert "68.1</td>" not in page
