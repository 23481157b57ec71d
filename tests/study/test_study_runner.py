"""A two-cell study end to end: it runs, is cached, and resumes after being killed between
cells (and after being killed between a cell's training and its audit)."""

from __future__ import annotations

import json

import pytest
import torch
from study_helpers import TWO_CELLS, Killed, numbers

import leakprobe.training.encoder
import leakprobe.workflows.audit
from cli_runner import run_cli as cli
from leakprobe.study import load_study_config, plan, run_study


def count_training(monkeypatch) -> list:
    calls = []
    real = leakprobe.training.encoder.train_target_encoder

    def counted(*args, **kwargs):
        calls.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(leakprobe.training.encoder, "train_target_encoder", counted)
    return calls


def test_two_cell_study_writes_report(first_run):
    out, summary = first_run
    assert [c["name"] for c in summary["cells"]] == ["simclr-none-s0", "simclr-scsr0.5-s0"]
    for c in summary["cells"]:
        assert (out / "cells" / c["folder"] / "cell.json").is_file()
        assert (out / "cells" / c["folder"] / "audit" / "report.json").is_file()
        assert [a["attack"] for a in c["attacks"]] == ["baseline-norm", "blind"]
        assert 0.0 <= c["attacks"][0]["auc"] <= 1.0
        assert c["attacks"][0]["auc_ci"][0] <= c["attacks"][0]["auc"] <= \
            c["attacks"][0]["auc_ci"][1]
        assert 0.0 <= c["utility"]["linear_probe_accuracy"] <= 1.0
        assert c["epochs_trained"] == 2 and c["epsilon"] is None
        # the permutation test reaches the cell (shared permutations -> best-of-many p)
        row = c["attacks"][0]
        assert len(row["null_aucs"]) == 100 and 0.0 < row["p_value"] <= 1.0
        leak = c["leakage_summary"]
        assert leak["headline_attack"] == "baseline-norm"
        assert leak["headline_auc"] == row["auc"] and leak["best_of_many"]["n_attacks"] == 1
        assert leak["best_of_many"]["p_value"] is not None
    on_disk = json.loads((out / "study.json").read_text())
    assert on_disk["n_cells"] == 2 and on_disk["format"] == "leakprobe-study/1"
    assert "scsr" in on_disk["tradeoffs"]
    points = on_disk["tradeoffs"]["scsr"]["paradigms"]["simclr"]
    assert [p["strength"] for p in points] == [0.08, 0.5] and points[0]["undefended"]
    html = (out / "report.html").read_text()
    assert "simclr-scsr0.5-s0" in html and "privacy_vs_utility.png" in html
    assert (out / "privacy_vs_utility.png").stat().st_size > 1000
    # the two cells really differ (different crop range -> different encoder)
    utilities = [c["attacks"][0]["auc"] for c in summary["cells"]]
    assert len(set(utilities)) == 2


def test_second_run_skips_every_cell(first_run, study, monkeypatch):
    out, summary = first_run
    before = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/cell.json")}
    calls = count_training(monkeypatch)

    def no_audit(*a, **k):
        raise AssertionError("a cached cell was audited again")

    monkeypatch.setattr(leakprobe.workflows.audit, "audit_encoder", no_audit)
    again = run_study(study, out)
    assert calls == []
    assert numbers(again) == numbers(summary)
    assert {p: p.stat().st_mtime_ns for p in out.glob("cells/*/cell.json")} == before
    assert all(r["cached"] for r in plan(study, out))


def test_resume_after_kill_between_cells(first_run, study, tmp_path, monkeypatch):
    _, complete = first_run
    out = tmp_path / "study"
    finished = []

    def kill_after_first(record):
        finished.append(record["name"])
        raise Killed

    with pytest.raises(Killed):
        run_study(study, out, on_cell_done=kill_after_first)
    assert finished == ["simclr-none-s0"]
    assert [r["cached"] for r in plan(study, out)] == [True, False]
    first_cell = next(out.glob("cells/simclr-none-s0-*/cell.json"))
    first_bytes = first_cell.read_bytes()
    calls = count_training(monkeypatch)
    resumed = run_study(study, out)
    # only the unfinished cell trained, the finished one was reused unchanged
    assert [c.name.rsplit("-", 1)[0] for c in calls] == ["simclr-scsr0.5-s0"]
    assert first_cell.read_bytes() == first_bytes
    # and the numbers equal an uninterrupted run's
    assert numbers(resumed) == numbers(complete)


def test_killed_between_training_and_audit_retrains_nothing(first_run, study, tmp_path,
                                                            monkeypatch):
    import shutil

    src, complete = first_run
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    for cell in out.glob("cells/*/cell.json"):
        cell.unlink()  # trained, audit not finished
    calls = count_training(monkeypatch)
    assert not any(r["cached"] for r in plan(study, out))
    again = run_study(study, out)
    assert calls == []
    assert numbers(again) == numbers(complete)


def test_killed_mid_training_resumes_from_checkpoint(study, tmp_path, monkeypatch):
    """A run killed after its first epoch continues at epoch 2 and matches a fresh run."""
    from leakprobe.training.trainer import Trainer

    out = tmp_path / "killed"
    real_save = Trainer._save_checkpoint

    def save_then_die(self, optimizer, schedule, g, epoch):
        real_save(self, optimizer, schedule, g, epoch)
        if epoch == 1:
            raise Killed

    monkeypatch.setattr(Trainer, "_save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        run_study(study, out)
    monkeypatch.setattr(Trainer, "_save_checkpoint", real_save)
    ckpt = next(out.glob("train/simclr-none-s0-*/checkpoints/checkpoint.pt"))
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    fresh = run_study(study, tmp_path / "fresh", report=False)
    resumed = run_study(study, out, report=False)
    assert numbers(resumed) == numbers(fresh)




def test_cli_study_dry_run_run_and_errors(first_run, tmp_path):
    import shutil

    import yaml

    src, _ = first_run
    out = tmp_path / "cli"
    shutil.copytree(src, out)
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({**TWO_CELLS, "out": str(out)}))
    assert load_study_config(config).out == str(out)
    code, stdout, _ = cli("study", "--config", str(config), "--dry-run")
    assert code == 0
    assert "2 cells, 2 cached" in stdout and "cached  simclr-none-s0" in stdout
    code, stdout, _ = cli("study", "--config", str(config))  # everything cached: fast
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0] == json.loads((out / "study.json").read_text())["summary"]  # the verdict
    assert lines[1].split()[:3] == ["cell", "k-NN", "probe"]
    assert lines[2].startswith("simclr-none-s0") and lines[3].startswith("simclr-scsr0.5-s0")
    assert f"report: {out / 'report.html'}" in stdout
    config.write_text(yaml.safe_dump({**TWO_CELLS, "defences": [{"kind": "dp"}]}))
    code, _, stderr = cli("study", "--config", str(config), "--out", str(tmp_path / "x"))
    assert code == 2 and stderr.startswith("error: defences[0]: dp needs exactly one of")
    config.write_text(yaml.safe_dump(TWO_CELLS))
    code, _, stderr = cli("study", "--config", str(config))
    assert code == 2 and "no output folder" in stderr


@pytest.mark.slow
def test_real_sigkill_between_cells_then_resume(tmp_path):
    """``leakprobe study`` killed with SIGKILL once its first cell is written, then re-run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    config = tmp_path / "study.yaml"
    # a longer second training run, so the kill lands before the second cell finishes
    slow = {**TWO_CELLS, "defences": ["none", {"kind": "scsr", "crop_min": [0.5],
                                               "train": {"epochs": 40}}]}
    config.write_text(yaml.safe_dump(slow))
    out = tmp_path / "out"
    env = {**os.environ, "LEAKPROBE_PROGRESS": "0", "LEAKPROBE_QUIET": "1"}
    cmd = [sys.executable, "-m", "leakprobe.cli", "study", "--config", str(config),
           "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not list(out.glob("cells/*/cell.json")) and time.time() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    cells = list(out.glob("cells/*/cell.json"))
    assert [p.parent.name.rsplit("-", 1)[0] for p in cells] == ["simclr-none-s0"]
    first = cells[0].read_bytes()
    done = subprocess.run([*cmd], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert cells[0].read_bytes() == first
    assert len(list(out.glob("cells/*/cell.json"))) == 2
    assert "simclr-scsr0.5-s0" in done.stdout
