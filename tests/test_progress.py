"""Progress: a bar on a terminal, periodic lines with rate and time left elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leakprobe import progress


@pytest.fixture
def lines_mode(monkeypatch):
    monkeypatch.setenv("LEAKPROBE_PROGRESS", "1")
    monkeypatch.setenv("LEAKPROBE_QUIET", "0")
    monkeypatch.setenv("LEAKPROBE_PROGRESS_SECONDS", "0")  # a line at every advance
    monkeypatch.setattr(progress, "progress_mode", lambda: "lines")


def test_lines_carry_count_rate_and_time_left(lines_mode, capsys) -> None:
    with progress.task("encodermi-vector: querying", 100, "queries") as t:
        t.advance(40)
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("encodermi-vector: querying: 40/100 queries (40%), ")
    assert "queries/s" in err[0] and "left" in err[0]
    assert err[-1].startswith("encodermi-vector: querying: 40 queries in ")


def test_off_and_quiet_print_nothing(monkeypatch, capsys) -> None:
    monkeypatch.setenv("LEAKPROBE_PROGRESS", "0")
    with progress.task("x", 3) as t:
        t.advance(3)
    monkeypatch.setenv("LEAKPROBE_PROGRESS", "1")
    monkeypatch.setenv("LEAKPROBE_QUIET", "1")
    assert progress.progress_mode() == "off"
    progress.log("hidden")
    assert capsys.readouterr().err == ""


def test_queries_advance_the_innermost_query_task(lines_mode, capsys) -> None:
    from leakprobe.targets.encoder import QueryCounter

    with progress.task("outer", 10, "queries") as outer, \
            progress.task("fitting", 2, "fits") as fits:
        QueryCounter().charge(7)
        assert outer.done == 7 and fits.done == 0


def test_nested_bars_share_one_live_display(monkeypatch) -> None:
    """Shadow training inside an audit inside a study: rich allows one live display."""
    monkeypatch.setattr(progress, "progress_mode", lambda: "bar")
    with progress.task("outer", 2, "queries") as a:
        for _ in progress.track(range(3), "inner", unit="epochs"):
            pass
        a.advance(2)
    assert "progress" not in progress._live


def test_audit_reports_queries_and_cross_fitting(lines_mode, capsys) -> None:
    """The 162 s EncoderMI fit that printed nothing: now its queries and fits are shown."""
    from leakprobe.attacks.membership import create_attack
    from leakprobe.data.synthetic import make_synthetic
    from leakprobe.evaluation.audit import run_audit
    from leakprobe.models import create_model
    from leakprobe.targets.encoder import ModuleEncoder

    torch.manual_seed(0)
    target = ModuleEncoder(create_model("resnet-tiny", input_size=32), device="cpu")
    data = make_synthetic(48, 32, seed=0)
    attack = create_attack("encodermi-vector", n_views=3, epochs=2)
    run_audit([attack], target, data.subset(range(24)), data.subset(range(24, 48)), repeats=1)
    err = capsys.readouterr().err
    assert "encodermi-vector: querying: 144/144 queries (100%)" in err
    assert "encodermi-vector: cross-fitting: 2/2 fits (100%)" in err
    assert np.isfinite(target.queries)
