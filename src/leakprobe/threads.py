"""How many CPU threads torch uses, chosen deliberately.

Two rules, measured on a busy 2-core machine where OpenMP threads spin-wait for each other:

- *Small* work (the attackers' scorer fits: MLPs of a few hundred samples, DeepSets, the
  M4I classifiers) always runs on one thread (:func:`single_threaded`). With two torch
  threads the EncoderMI attacker's 100-epoch fit on 154 samples took 146 s, with one 9 s.
- *Large* work (training and querying models) uses ``--threads``; ``auto`` takes the cores
  this process may run on minus the cores other processes keep busy (measured over 0.2 s
  from /proc/stat at start-up), at least one. On an idle 2-core machine that is 2; with one
  other CPU-bound process running it is 1.

Numbers do not depend on the choice: scorer fits always run on one thread, and forward passes
differ only in float summation order. The report records the threads used.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from leakprobe.errors import LeakprobeError


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat (None off Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(window: float = 0.2) -> int:
    """Cores other processes keep busy now, rounded.

    Measured over ``window`` seconds from /proc/stat (this process sleeps meanwhile, so it
    is not counted); elsewhere the 1-minute load average, which lags: it still counts a job
    that ended a minute ago.
    """
    before = _cpu_times()
    if before is not None:
        time.sleep(window)
        after = _cpu_times()
        if after is not None and after[1] > before[1]:
            share = (after[0] - before[0]) / (after[1] - before[1])
            return int(round(share * (os.cpu_count() or 1)))
    try:
        return int(round(os.getloadavg()[0]))
    except (AttributeError, OSError):
        return 0


def auto_threads() -> int:
    """Free cores: available cores minus busy ones, at least 1."""
    return max(available_cores() - busy_cores(), 1)


def parse_threads(value: str | int | None) -> int:
    """``auto``/None -> :func:`auto_threads`; a positive integer as given; else an error."""
    if value is None or value == "auto":
        return auto_threads()
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise LeakprobeError(f"--threads must be 'auto' or a positive integer, got {value!r}")
    return n


def set_threads(value: str | int | None = "auto") -> int:
    """Set torch's intra-op threads from ``--threads`` and return the number set."""
    n = parse_threads(value)
    torch.set_num_threads(n)
    return n


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run the block on one thread -- torch's and the BLAS under numpy / scikit-learn --
    for small models and scorer fits, then restore the previous settings."""
    if _single_depth[0]:  # nested (a scorer fit inside cross-fitting): already one thread
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    _single_depth[0] += 1
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        _single_depth[0] -= 1
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


_single_depth = [0]  # how many single_threaded blocks are open in this process
