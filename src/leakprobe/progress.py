"""What a long step is doing, on stderr: a live bar on a terminal, periodic lines elsewhere.

Every step that can take more than a few seconds -- attack queries, scorer fitting and
cross-fitting, shadow / reference / surrogate training, the M4I extractor -- runs inside a
:func:`task`. On a terminal it is a bar with the count, the rate and the time left; when
stderr is not a terminal (a log file, CI) the same facts come as one plain line every
``LEAKPROBE_PROGRESS_SECONDS`` (default 10) while the step runs, and one when it ends.
``LEAKPROBE_PROGRESS=0`` turns both off; ``LEAKPROBE_QUIET=1`` silences every status line.
stdout carries results only.

Every task with a known total shows its rate and the time left, both from the work done
since the task began (``done / elapsed``; the time left is ``(total - done) / rate``), the
same in the bar and in the lines; before the first unit is done they read ``-``.

Queries are counted where they are answered: a target charges its budget for a whole call
up front, then calls :func:`count_queries` as each model chunk completes, which advances
the innermost open task whose unit is ``queries`` (so a PartCrop step's 8192 part crops
move the bar chunk by chunk, not in one jump).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

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
    """``12.3 queries/s`` (work done since the task began), ``- queries/s`` before any."""
    rate = done / elapsed if elapsed > 0 else 0.0
    return f"{rate:.3g} {unit}/s" if done > 0 and rate > 0 else f"- {unit}/s"


def left_text(done: float, total: float | None, elapsed: float) -> str:
    """``0:07 left`` at the task's average rate, ``-:-- left`` before any work; '' without
    a total."""
    if not total:
        return ""
    if done >= total:
        return "0:00 left"
    if done <= 0 or elapsed <= 0:
        return "-:-- left"
    return f"{_duration((total - done) * elapsed / done)} left"


class Task:
    """One step with a known (or unknown) amount of work; see :func:`task`."""

    def __init__(self, description: str, total: int | None, unit: str, mode: str) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.mode = mode
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
            self._bar_id = bar.add_task(description, total=total, unit=unit)

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

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.mode == "bar" and self._bar_id is not None:
            _live["progress"].update(self._bar_id, completed=self.done)
        elif self.mode == "lines":
            now = time.monotonic()
            if now - self._last_line >= _interval():
                self._last_line = now
                self._lines += 1
                print(self.status(), file=sys.stderr, flush=True)

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

    class RateColumn(ProgressColumn):
        """Items per second in the task's own unit, averaged since the task began."""

        def render(self, task) -> Text:
            return Text(rate_text(task.completed, task.elapsed or 0.0,
                                  task.fields.get("unit", "")), style="progress.data.speed")

    class LeftColumn(ProgressColumn):
        """Time left at that rate; the time taken so far when the total is unknown."""

        def render(self, task) -> Text:
            elapsed = task.elapsed or 0.0
            text = left_text(task.completed, task.total, elapsed)
            return Text(text or f"{_duration(elapsed)} taken", style="progress.remaining")

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
        LeftColumn(), console=console or Console(stderr=True), transient=True,
    )


@contextmanager
def task(description: str, total: int | None = None, unit: str = "steps") -> Iterator[Task]:
    """A progress task for the enclosed step; ``advance`` it as work completes."""
    t = Task(description, total, unit, progress_mode())
    _tasks.append(t)
    try:
        yield t
    finally:
        _tasks.remove(t)
        t.close()


def track(items: Iterable[T], description: str, total: int | None = None,
          unit: str = "steps") -> Iterator[T]:
    """Iterate ``items`` inside a :func:`task` advanced once per item."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with task(description, total, unit) as t:
        for item in items:
            yield item
            t.advance()


def count_queries(n: int) -> None:
    """``n`` images were answered by a target: advance the innermost open ``queries`` task."""
    for t in reversed(_tasks):
        if t.unit == "queries":
            t.advance(n)
            return


def log(message: str) -> None:
    """A status line on stderr (kept out of stdout, which carries results)."""
    if not _quiet():
        print(message, file=sys.stderr, flush=True)
