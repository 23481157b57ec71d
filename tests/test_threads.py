"""--threads: chosen from free cores, scorer fits on one thread, numbers independent of it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cli_runner import run_cli
from leakprobe import threads
from leakprobe.attacks.membership._common import NeuralScorer
from leakprobe.errors import LeakprobeError


def test_auto_takes_free_cores(monkeypatch) -> None:
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "busy_cores", lambda: 0)
    assert threads.parse_threads("auto") == 2  # idle 2-core machine
    monkeypatch.setattr(threads, "busy_cores", lambda: 1)
    assert threads.parse_threads("auto") == 1  # one other CPU-bound process
    monkeypatch.setattr(threads, "busy_cores", lambda: 7)
    assert threads.parse_threads(None) == 1  # never fewer than one
    assert threads.parse_threads("3") == 3
    for bad in ("0", "-1", "many"):
        with pytest.raises(LeakprobeError, match="--threads must be 'auto' or a positive"):
            threads.parse_threads(bad)


def test_single_threaded_restores() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with threads.single_threaded():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_scorer_fit_runs_on_one_thread(monkeypatch) -> None:
    """The attacker MLP's fit (146 s with 2 threads vs 9 s with 1 on a busy 2-core machine)."""
    from leakprobe.attacks.membership import _batched

    seen: list[int] = []
    real = _batched._forward

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(_batched, "_forward", spy)
    try:
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(40, 5)), np.r_[np.ones(20), np.zeros(20)]
        NeuralScorer(epochs=2).fit(x, y).score(x)
    finally:
        monkeypatch.undo()
        torch.set_num_threads(before)
    assert seen and set(seen) == {1}


def _audit(tmp_path, n_threads: str, model: str, members: str, nonmembers: str) -> dict:
    out = tmp_path / f"audit_t{n_threads}"
    code, _, err = run_cli("audit", "encoder", "--model", model, "--members", members,
                           "--nonmembers", nonmembers, "--attacks",
                           "encodermi-vector,encodermi-threshold,baseline-norm",
                           "--n-views", "4", "--repeats", "1", "--threads", n_threads,
                           "--device", "cpu", "--out", str(out))
    assert code == 0, err
    return json.loads((out / "report.json").read_text())


def test_numbers_do_not_depend_on_threads(tmp_path) -> None:
    """The same audit with 1 and 2 threads: identical AUCs; the report records the threads."""
    from leakprobe.models import create_model
    from leakprobe.models.serialization import export_torchscript

    torch.manual_seed(0)
    model = create_model("resnet-tiny", input_size=32).eval()
    path = export_torchscript(model, tmp_path / "enc.torchscript.pt")
    one = _audit(tmp_path, "1", str(path), "synthetic:24:1", "synthetic:24:2")
    two = _audit(tmp_path, "2", str(path), "synthetic:24:1", "synthetic:24:2")
    assert one["context"]["threads"] == 1 and two["context"]["threads"] == 2
    assert one["context"]["scorer_threads"] == 1
    for a, b in zip(one["results"], two["results"], strict=True):
        assert a["attack"] == b["attack"]
        assert a["metrics"]["auc"] == pytest.approx(b["metrics"]["auc"], abs=1e-9)


def test_threads_env_and_bad_value(tmp_path, monkeypatch) -> None:
    code, _, err = run_cli("audit", "encoder", "--model", "x.pt", "--members", "synthetic:24",
                           "--nonmembers", "synthetic:24:3", "--threads", "zero",
                           "--out", str(tmp_path / "o"))
    assert code == 2 and "--threads must be 'auto' or a positive integer" in err
    monkeypatch.setenv("LEAKPROBE_THREADS", "nope")
    code, _, err = run_cli("serve", "encoder", "--model", "x.pt")
    assert code == 2 and "'nope'" in err


def test_busy_cores_from_cpu_times(monkeypatch) -> None:
    samples = iter([(100, 1000), (100 + 180, 1000 + 200)])  # 90% busy over the window
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    assert threads.busy_cores(window=0) == 2


def test_a_busy_process_takes_a_core_from_auto() -> None:
    """One CPU-bound process beside: `auto` leaves its core alone (the measured slowdown)."""
    import subprocess
    import sys
    import time

    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert threads.busy_cores() >= 1
        assert threads.auto_threads() <= max(threads.available_cores() - 1, 1)
    finally:
        burner.kill()
        burner.wait()
