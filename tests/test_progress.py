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


def test_the_bar_advances_per_model_chunk_as_each_is_answered(lines_mode, capsys) -> None:
    """PartCrop's bar went 64 -> 8256 in one jump: the budget is still charged up front, but
    the bar now moves as each chunk of the model's answers completes."""
    from leakprobe.targets.encoder import ModuleEncoder

    bars: list[progress.Task] = []

    class Mean(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.seen_done: list[int] = []

        def forward(self, x):
            if bars:
                self.seen_done.append(bars[0].done)  # the bar when this chunk starts
            return x.mean(dim=(2, 3))

    model = Mean()
    target = ModuleEncoder(model, input_size=8, device="cpu", batch_size=4, budget=10)
    with progress.task("partcrop: querying", 10, "queries") as bar:
        bars.append(bar)
        target.embed(torch.rand(10, 3, 8, 8))
        assert target.queries == 10  # paid in full before the first chunk
        assert model.seen_done == [0, 4, 8] and bar.done == 10
    lines = [line for line in capsys.readouterr().err.splitlines() if "/10 queries" in line]
    counts = [line.removeprefix("partcrop: querying: ").split(" ")[0] for line in lines]
    assert counts == ["4/10", "8/10", "10/10"]
    for line in lines:  # every step shows a rate and the time left
        assert "queries/s" in line and "- queries/s" not in line and " left" in line


def test_a_refused_budget_moves_no_bar(lines_mode) -> None:
    from leakprobe.errors import BudgetExceededError
    from leakprobe.targets.encoder import ModuleEncoder

    target = ModuleEncoder(torch.nn.Flatten(), input_size=2, device="cpu", budget=3)
    with progress.task("q", 5, "queries") as bar:
        with pytest.raises(BudgetExceededError):
            target.embed(torch.rand(5, 3, 2, 2))
        assert bar.done == 0 and target.queries == 0


def test_rate_and_time_left_before_during_and_after(lines_mode) -> None:
    assert progress.rate_text(0, 3.0, "queries") == "- queries/s"
    assert progress.rate_text(40, 4.0, "queries") == "10 queries/s"
    assert progress.left_text(0, 100, 3.0) == "-:-- left"
    assert progress.left_text(40, 100, 4.0) == "0:06 left"  # 60 more at 10/s
    assert progress.left_text(100, 100, 4.0) == "0:00 left"
    assert progress.left_text(40, None, 4.0) == ""  # no total: no time left
    with progress.task("fitting", 3, "fits") as t:
        assert t.status().endswith("3 fits (0%), - fits/s, -:-- left")


def test_the_terminal_bar_shows_rate_and_time_left(monkeypatch) -> None:
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), force_terminal=True, width=160)
    bar = progress._new_bar(console)
    first = bar.add_task("partcrop: querying", total=100, unit="queries")
    bar.update(first, completed=40)
    bar.add_task("reference training", total=None, unit="epochs")
    console.print(bar.make_tasks_table(bar.tasks))
    text = console.file.getvalue()
    assert "40/100" in text and "queries/s" in text and " left" in text
    assert "- epochs/s" in text and "taken" in text  # no total: the time taken instead
