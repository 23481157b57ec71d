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
    assert progress.rate_text(8256, 6.0, "queries") == "1376 queries/s"  # not 1.38e+03
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


# ---- a slow target through the real query path ------------------------------------------------

BATCH = 8  # images per model call of the slow target


class SlowEncoder(torch.nn.Module):
    """A tiny encoder whose every call (forward or tokens) sleeps ``delay`` seconds, like a
    ViT-S/16 at 224 px on a CPU: mean-pooled 4x4 patches through one fixed projection, so its
    tokens live in its embedding space (PartCrop's token path runs)."""

    tokens_in_embedding_space = True

    def __init__(self, delay: float = 0.05, dim: int = 6, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("proj", torch.randn(3, dim, generator=g))
        self.delay = delay
        self.calls = 0

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        import time

        time.sleep(self.delay)
        self.calls += 1
        patches = torch.nn.functional.avg_pool2d(x, 4).flatten(2).transpose(1, 2)
        return patches @ self.proj  # (B, L, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(x).mean(1)


def _query_lines(err: str) -> dict[str, list[tuple[int, int, str]]]:
    """``{description: [(done, total, line), ...]}`` of every ``queries`` progress line."""
    import re

    out: dict[str, list[tuple[int, int, str]]] = {}
    for line in err.splitlines():
        m = re.match(r"(.+?): (\d+)/(\d+) queries \(", line)
        if m:
            out.setdefault(m.group(1), []).append((int(m.group(2)), int(m.group(3)), line))
    return out


def test_a_slow_target_shows_rate_and_time_left_from_its_first_batch(lines_mode, capsys
                                                                      ) -> None:
    """PartCrop's bar went 64 -> 8256 -> 16512 at 1.37e+03 queries/s while the model ran
    ~45/s; EncoderMI's sat at '- queries/s'. Through the real audit path on a target that
    sleeps 0.05 s per model call, every query line moves by at most one model batch, never
    passes its total, and carries a rate no faster than the model and a time left from the
    first line on."""
    import re

    from leakprobe.attacks.membership import create_attack
    from leakprobe.data.synthetic import make_synthetic
    from leakprobe.evaluation.audit import run_audit
    from leakprobe.targets.encoder import ModuleEncoder

    model = SlowEncoder(delay=0.05)
    target = ModuleEncoder(model, input_size=16, device="cpu", batch_size=BATCH)
    data = make_synthetic(40, 16, seed=0)
    attacks = [create_attack("encodermi-vector", n_views=3, epochs=2),
               create_attack("partcrop", num_parts=6, epochs=2)]
    calls = model.calls
    run_audit(attacks, target, data.subset(range(20)), data.subset(range(20, 40)),
              permutations=0)
    err = capsys.readouterr().err
    lines = _query_lines(err)
    assert set(lines) == {"encodermi-vector: querying", "partcrop: querying", "audit: queries"}
    assert lines["audit: queries"][-1][:2] == (target.queries, target.queries)  # 40*3 + 40*7
    assert target.queries == 40 * 3 + 40 * 7
    assert model.calls - calls == 40 * 3 // BATCH + 40 // BATCH + 40 * 6 // BATCH
    slowest = BATCH / 0.05  # no model call is faster than its sleep
    for name, seen in lines.items():
        counts = [done for done, _, _ in seen]
        assert all(done <= total for done, total, _ in seen), name  # (b) never above total
        steps = [b - a for a, b in zip([0, *counts], counts, strict=False)]
        assert max(steps) <= BATCH, (name, steps)  # (c) one model batch at most
        first = seen[0][2]
        rate = re.search(r", ([0-9.]+) queries/s, (\d+:\d\d) left$", first)
        assert rate, first  # (a) a rate and a time left in the first line
        assert 0 < float(rate.group(1)) <= slowest * 1.05, first  # the model's rate, no jump


def test_the_first_plain_line_comes_after_a_short_warm_up(monkeypatch, capsys) -> None:
    """Default period (10 s): the first line comes at the first update 2 s in, with a rate
    and a time left, then one every period; a step about to end prints no early line."""
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(progress, "progress_mode", lambda: "lines")
    monkeypatch.delenv("LEAKPROBE_PROGRESS_SECONDS", raising=False)
    monkeypatch.setenv("LEAKPROBE_QUIET", "0")
    with progress.task("partcrop: querying", 1000, "queries") as t:
        for _ in range(60):  # one batch of 8 queries every 0.5 s
            clock[0] += 0.5
            t.advance(8)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "partcrop: querying: 32/1000 queries (3%), 16 queries/s, 1:00 left"
    assert err[1].startswith("partcrop: querying: 192/1000 queries")  # 10 s after the first
    assert err[-1] == "partcrop: querying: 480 queries in 0:30"
    with progress.task("short", 10, "fits") as t:
        for _ in range(5):
            clock[0] += 0.5
            t.advance(2)  # 2 s in, it is done: no line
    assert capsys.readouterr().err == ""


def test_a_count_never_passes_its_total(lines_mode) -> None:
    with progress.task("q", 10, "queries") as t:
        progress.count_queries(7)
        progress.count_queries(7)
        assert t.done == 10


def test_a_bound_task_takes_its_own_target_queries_only(lines_mode) -> None:
    from leakprobe.targets.base import QueryCounter

    target, reference = QueryCounter(), QueryCounter()
    with progress.task("audit: queries", 100, "queries", source=target, overall=True) as whole, \
            progress.task("lira: querying", 50, "queries", source=target) as mine:
        reference.charge(30)  # a reference encoder's queries: no task of the target's moves
        assert (whole.done, mine.done) == (0, 0)
        with progress.task("lira: reference 1/2 querying", 30, "queries",
                           source=reference) as ref:
            reference.charge(30)
            target.charge(5)
        assert (whole.done, mine.done, ref.done) == (5, 5, 30)
        with progress.query_task("inner", 10, target) as inner:
            assert inner is mine  # a step inside the target's task does not open another


@pytest.mark.parametrize("statistic", ["encodermi", "infonce"])  # planned; on its own
def test_reference_queries_do_not_inflate_the_target_count(statistic, lines_mode, capsys
                                                           ) -> None:
    """``lira-encodermi: querying: 118840/20000 queries (594%)``: the reference encoders'
    queries went to the target's task. Now each reference has a task of its own, and the
    target's counts exactly the target's queries (candidates, population, InfoNCE's bank)."""
    from leakprobe.attacks.membership import create_attack
    from leakprobe.data.synthetic import make_synthetic
    from leakprobe.evaluation.plan import PlanRunner
    from leakprobe.evaluation.references import ReferenceModels
    from leakprobe.targets.encoder import ModuleEncoder

    def encoder(seed: int) -> ModuleEncoder:
        return ModuleEncoder(SlowEncoder(delay=0.0, seed=seed), input_size=16, device="cpu",
                             batch_size=BATCH)

    target, refs = encoder(0), [encoder(1), encoder(2)]
    data = make_synthetic(32, 16, seed=0)
    population = data.subset(range(24, 32))
    images = data.subset(range(24)).pixels
    attack = create_attack(f"lira-{statistic}", n_views=3)
    attack.prepare(ReferenceModels(refs, [None, None], population))
    runner = PlanRunner([attack], target, images, ids=[str(i) for i in range(24)], order=0)
    feats = runner.features(attack)
    assert feats.shape == (24, 1 + 2 + 2)
    lines = _query_lines(capsys.readouterr().err)
    assert set(lines) == {f"lira-{statistic}: querying", f"lira-{statistic}: reference 1/2 "
                          "querying", f"lira-{statistic}: reference 2/2 querying"}
    for name, model in [("querying", target), ("reference 1/2 querying", refs[0]),
                        ("reference 2/2 querying", refs[1])]:
        seen = lines[f"lira-{statistic}: {name}"]
        assert seen[-1][0] == model.queries >= (24 + 8) * 3  # candidates + population
        assert all(done <= total for done, total, _ in seen)
    if statistic == "encodermi":  # nothing "at most": every planned query is paid
        assert lines["lira-encodermi: querying"][-1][1] == target.queries == (24 + 8) * 3


def test_the_audit_rate_runs_from_its_first_querying_step(monkeypatch, lines_mode,
                                                          capsys) -> None:
    """``audit: queries`` opened before 4 s of blind-floor fits: its rate and time left are
    measured from the step that paid the first query, not from the audit's start."""
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    with progress.task("audit: queries", 100, "queries", overall=True) as whole:
        clock[0] += 4.0  # the blind floor: no query
        with progress.task("lpla: querying", 40, "queries"):
            clock[0] += 2.0
            progress.count_queries(20)
    assert whole.start == 104.0
    assert "audit: queries: 20/100 queries (20%), 10 queries/s, 0:08 left" in \
        capsys.readouterr().err
