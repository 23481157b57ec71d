"""What a long step is doing, on stderr: a live bar on a terminal, periodic lines elsewhere.

Every step that can take more than a few seconds runs inside a :func:`task` with a total:
attack queries (``queries``), scorer cross-fitting (``fits``) and the scorer networks' training
(``epochs``), the training of the target, shadow, reference and surrogate models (``steps``,
the epoch in the description), the M4I extractor (``steps``), reference querying under
``--knowledge reference`` (``queries``, one task per reference) and the decoding of an image
folder read whole (``images``). An audit also runs an outer ``audit: queries`` task over its
whole query plan, so the total time left is on screen from the first answer.

**On a terminal** it is a rich bar with the count, the rate and the time left.
**Elsewhere** (stderr is a log file, CI) a task prints a plain line
``DESCRIPTION: 40/128 queries (31%), 12.3 queries/s, 0:07 left``:

- the first at the first update at least :data:`WARMUP_SECONDS` (2 s) after the task
  began, when its time left is at least that long too (a step about to end prints nothing
  early) -- so the first line already carries a rate and a time left;
- then one at the first update every ``LEAKPROBE_PROGRESS_SECONDS`` (default 10);
- and, for a task that printed any, one when it ends (``DESCRIPTION: 128 queries in 0:11``).

A step shorter than the warm-up prints nothing. With ``LEAKPROBE_PROGRESS_SECONDS`` below 2 the
warm-up is that value (0: a line at every update). ``LEAKPROBE_PROGRESS=0`` turns bars and
lines off; ``LEAKPROBE_QUIET=1`` silences every status line. stdout carries results only.

Every task with a known total shows its rate and the time left, both from the work done since
the task began (``done / elapsed``; the time left is ``(total - done) / rate``), the same in the
bar and in the lines; before the first unit is done they read ``-``. A count never exceeds its
total: :meth:`Task.advance` stops at the total.

Queries are counted where they are answered: a target charges its budget for a whole call up
front, then calls :func:`count_queries` as each model batch (``batch_size`` images, the batch
the model runs) completes, so a bar moves batch by batch and its rate is the model's. A
query task may be bound to the target whose queries it counts (``source``: the target's
:class:`~leakprobe.targets.base.QueryCounter`, :func:`source_of`): it then ignores the queries
of other models (reference encoders, a shadow target), which advance their own tasks. The
queries advance the innermost open ``queries`` task that accepts them, and every enclosing
``overall`` task that does (``audit: queries``). An overall task's rate runs from the start of
the step that paid its first query (what came before, e.g. the blind floor's fits, does not
slow it); the fits between later queries do count, so its time left includes them. Queries
answered by Ray workers (``--workers``) are counted as each request chunk comes back.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

#: Seconds a task runs before its first plain line (the rate has settled by then).
WARMUP_SECONDS = 2.0

_tasks: list[Task] = []
_live: dict[str, Any] = {}  # the one rich Progress shared by nested bars


def _quiet() -> bool:
    return os.environ.get("LEAKPROBE_QUIET") == "1"


def progress_mode() -> str:
    """``bar`` (stderr is a terminal), ``lines`` (it is not) or ``off``."""
    if _quiet() or os.environ.get("LEAKPROBE_PROGRESS", "1") == "0":
        return "off"
    return "bar" if sys.stderr.isatty() else "lines"


def _interval() -> float:
    try:
        return max(float(os.environ.get("LEAKPROBE_PROGRESS_SECONDS", "10")), 0.0)
    except ValueError:
        return 10.0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def rate_text(done: float, elapsed: float, unit: str) -> str:
    """``12.3 queries/s`` (work done since the task began; ``1370 queries/s`` from 100 up,
    never in exponent form), ``- queries/s`` before any."""
    rate = done / elapsed if elapsed > 0 else 0.0
    if done <= 0 or rate <= 0:
        return f"- {unit}/s"
    return f"{rate:.0f} {unit}/s" if rate >= 100 else f"{rate:.3g} {unit}/s"


def seconds_left(done: float, total: float | None, elapsed: float) -> float | None:
    """Seconds left at the task's average rate (None: no total, or no work done yet)."""
    if not total:
        return None
    if done >= total:
        return 0.0
    if done <= 0 or elapsed <= 0:
        return None
    return (total - done) * elapsed / done


def left_text(done: float, total: float | None, elapsed: float) -> str:
    """``0:07 left`` at the task's average rate, ``-:-- left`` before any work; '' without
    a total."""
    if not total:
        return ""
    left = seconds_left(done, total, elapsed)
    return "-:-- left" if left is None else f"{_duration(left)} left"


def source_of(target: object) -> object | None:
    """What counts ``target``'s queries (its ``counter``), to bind a query task to; None when
    it has none (the task then takes any model's queries)."""
    return getattr(target, "counter", None)


class Task:
    """One step with a known (or unknown) amount of work; see :func:`task`.

    Attributes:
        description: what the step is (shown before the count; :meth:`describe` changes it).
        total: the work it will do (None: unknown; no time left is shown).
        unit: what is counted (``queries``, ``fits``, ``epochs``, ``steps``, ``images``).
        done: the work done so far (never above ``total``).
        source: for a ``queries`` task, the counter whose queries it takes (None: any).
        overall: an outer task that takes its source's queries beside the inner one.
    """

    def __init__(self, description: str, total: int | None, unit: str, mode: str, *,
                 source: object | None = None, overall: bool = False) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.mode = mode
        self.source = source
        self.overall = overall
        self.done = 0
        self.start = time.monotonic()
        self._last_line = self.start
        self._lines = 0
        self._bar_id = None
        if mode == "bar":
            bar = _live.get("progress")
            if bar is None:
                bar = _new_bar()
                bar.start()
                _live["progress"] = bar
            self._bar_id = bar.add_task(description, total=total, unit=unit, began=self.start)

    def accepts(self, source: object | None) -> bool:
        """Whether queries counted by ``source`` advance this task (``queries`` tasks)."""
        return self.unit == "queries" and (
            self.source is None or source is None or self.source is source)

    def rate(self) -> float:
        elapsed = time.monotonic() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def status(self) -> str:
        """``description: 40/128 queries (31%), 12.3 queries/s, 0:07 left``."""
        elapsed = time.monotonic() - self.start
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        left = left_text(self.done, self.total, elapsed)
        return (f"{self.description}: {count} {self.unit}{pct}, "
                f"{rate_text(self.done, elapsed, self.unit)}{', ' + left if left else ''}")

    def restart_clock(self, start: float) -> None:
        """Measure the rate from ``start`` (a ``time.monotonic`` instant) instead."""
        self.start = self._last_line = start
        if self.mode == "bar" and self._bar_id is not None:
            _live["progress"].update(self._bar_id, began=start)

    def describe(self, description: str) -> None:
        """Change what the step is called (e.g. the epoch a training is in)."""
        self.description = description
        if self.mode == "bar" and self._bar_id is not None:
            _live["progress"].update(self._bar_id, description=description)

    def advance(self, n: int = 1) -> None:
        """``n`` more units done (the count stops at the total)."""
        self.done += n
        if self.total is not None and self.done > self.total:
            self.done = self.total
        if self.mode == "bar" and self._bar_id is not None:
            _live["progress"].update(self._bar_id, completed=self.done)
        elif self.mode == "lines" and self._line_due():
            self._last_line = time.monotonic()
            self._lines += 1
            print(self.status(), file=sys.stderr, flush=True)

    def _line_due(self) -> bool:
        """Whether a plain line is due now (see the module docstring)."""
        if self.done <= 0:
            return False
        now = time.monotonic()
        interval = _interval()
        if now - self._last_line >= interval:
            return True
        if self._lines:
            return False
        warmup = min(WARMUP_SECONDS, interval)
        elapsed = now - self.start
        if elapsed < warmup:
            return False
        if self.total is None:
            return True
        left = seconds_left(self.done, self.total, elapsed)
        return left is not None and left >= warmup

    def close(self) -> None:
        if self.mode == "bar" and self._bar_id is not None:
            bar = _live["progress"]
            bar.remove_task(self._bar_id)
            if not bar.tasks:
                bar.stop()
                _live.pop("progress", None)
        elif self.mode == "lines" and self._lines:  # a long step also says when it ended
            elapsed = time.monotonic() - self.start
            print(f"{self.description}: {self.done} {self.unit} in {_duration(elapsed)}",
                  file=sys.stderr, flush=True)


def _new_bar(console: Any = None):
    """The rich bar: description, bar, count, rate and time left (or time taken, without a
    total), the last two as :func:`rate_text` / :func:`left_text` compute them."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
    from rich.text import Text

    def elapsed(task) -> float:
        """Seconds since the :class:`Task` began (its ``began`` field), else rich's own."""
        began = task.fields.get("began")
        return time.monotonic() - began if began is not None else task.elapsed or 0.0

    class RateColumn(ProgressColumn):
        """Items per second in the task's own unit, averaged since the task began."""

        def render(self, task) -> Text:
            return Text(rate_text(task.completed, elapsed(task), task.fields.get("unit", "")),
                        style="progress.data.speed")

    class LeftColumn(ProgressColumn):
        """Time left at that rate; the time taken so far when the total is unknown."""

        def render(self, task) -> Text:
            taken = elapsed(task)
            text = left_text(task.completed, task.total, taken)
            return Text(text or f"{_duration(taken)} taken", style="progress.remaining")

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
        LeftColumn(), console=console or Console(stderr=True), transient=True,
    )


@contextmanager
def task(description: str, total: int | None = None, unit: str = "steps", *,
         source: object | None = None, overall: bool = False) -> Iterator[Task]:
    """A progress task for the enclosed step; ``advance`` it as work completes.

    Args:
        description: what the step is (``partcrop: querying``).
        total: the work it will do (None or 0: unknown).
        unit: what is counted; a ``queries`` task is advanced by :func:`count_queries`.
        source: a ``queries`` task's counter (:func:`source_of` the target): the task then
            takes that target's queries only.
        overall: an outer ``queries`` task advanced beside the innermost one.
    """
    t = Task(description, total or None, unit, progress_mode(), source=source,
             overall=overall)
    _tasks.append(t)
    try:
        yield t
    finally:
        _tasks.remove(t)
        t.close()


def counting(source: object | None) -> Task | None:
    """The innermost open (not overall) ``queries`` task bound to ``source``, if any: a step
    inside it need not open its own."""
    if source is None:
        return None
    for t in reversed(_tasks):
        if t.unit == "queries" and not t.overall and t.source is source:
            return t
    return None


@contextmanager
def query_task(description: str, total: int | None, source: object | None
               ) -> Iterator[Task]:
    """A ``queries`` :func:`task` bound to ``source``, unless one is already open for it
    (a reference's statistic computed inside its ``reference i/R querying`` task): then
    that one."""
    open_task = counting(source)
    if open_task is not None:
        yield open_task
        return
    with task(description, total, "queries", source=source) as t:
        yield t


def track(items: Iterable[T], description: str, total: int | None = None,
          unit: str = "steps") -> Iterator[T]:
    """Iterate ``items`` inside a :func:`task` advanced once per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with task(description, total, unit) as t:
        for item in items:
            yield item
            t.advance()


def count_queries(n: int, source: object | None = None) -> None:
    """``n`` images were answered by the target counted by ``source``: advance the innermost
    open ``queries`` task that accepts them, and every enclosing overall one that does."""
    inner: Task | None = None
    for t in reversed(_tasks):
        if not t.accepts(source):
            continue
        if t.overall:
            if t.done == 0 and inner is not None and inner.start > t.start:
                t.restart_clock(inner.start)  # its rate runs from the first querying step
            t.advance(n)
        elif inner is None:
            t.advance(n)
            inner = t


def log(message: str) -> None:
    """A status line on stderr (kept out of stdout, which carries results)."""
    if not _quiet():
        print(message, file=sys.stderr, flush=True)
