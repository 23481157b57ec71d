"""Progress bars on stderr (rich), silent when disabled or when stderr is not a terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress_enabled() -> bool:
    """On unless LEAKPROBE_PROGRESS=0; off when stderr is not a terminal."""
    return os.environ.get("LEAKPROBE_PROGRESS", "1") != "0" and sys.stderr.isatty()


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with a progress bar when progress is enabled."""
    if not progress_enabled():
        yield from items
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        yield from bar.track(items, total=total, description=description)


def log(message: str) -> None:
    """A status line on stderr (kept out of stdout, which carries results)."""
    if os.environ.get("LEAKPROBE_QUIET") != "1":
        print(message, file=sys.stderr, flush=True)
