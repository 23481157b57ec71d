"""What a long step is doing, on stderr: a live bar on a terminal, periodic lines elsewhere.

Every step that can take more than a few seconds -- attack queries, scorer fitting and
cross-fitting, shadow / reference / surrogate training, the M4I extractor -- runs inside a
:func:`task`. On a terminal it is a bar with the count, the rate and the time left; when
stderr is not a terminal (a log file, CI) the same facts come as one plain line every
``LEAKPROBE_PROGRESS_SECONDS`` (default 10) while the step runs, and one when it ends.
``LEAKPROBE_PROGRESS=0`` turns both off; ``LEAKPROBE_QUIET=1`` silences every status line.
stdout carries results only.

Queries are counted where they are paid: a target's query counter calls
:func:`count_queries`, which advances the innermost open task whose unit is ``queries``.
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
        rate = self.rate()
        count = f"{self.done}/{self.total}" if self.total else f"{self.done}"
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        left = ""
        if self.total and rate > 0 and self.done < self.total:
            left = f", {_duration((self.total - self.done) / rate)} left"
        return f"{self.description}: {count} {self.unit}{pct}, {rate:.3g} {self.unit}/s{left}"

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


def _new_bar():
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Items per second in the task's own unit."""

        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            unit = task.fields.get("unit", "")
            return Text(f"{speed:.3g} {unit}/s" if speed else f"- {unit}/s",
                        style="progress.data.speed")

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
        TimeRemainingColumn(), console=Console(stderr=True), transient=True,
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
    """``n`` images were sent to a target: advance the innermost open ``queries`` task."""
    for t in reversed(_tasks):
        if t.unit == "queries":
            t.advance(n)
            return


def log(message: str) -> None:
    """A status line on stderr (kept out of stdout, which carries results)."""
    if not _quiet():
        print(message, file=sys.stderr, flush=True)
