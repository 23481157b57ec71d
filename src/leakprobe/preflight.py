"""Cheap checks that every command and API entry runs before it trains or queries anything.

A wrong option should cost the user a second, not the minutes of a shadow training or the
queries of a paid budget: output folders, devices, attack names, data sets and query budgets
are checked first (see docs/reference/errors.md).
"""

from __future__ import annotations

import os
from pathlib import Path

from leakprobe.errors import LeakprobeError


def check_out_dir(path: str | Path | None, option: str = "--out") -> Path | None:
    """Refuse an output folder that cannot be written, without creating anything.

    Args:
        path: the folder (None: nothing will be written; accepted).
        option: how the user named it, for the message.
    Returns:
        The path (None when ``path`` is None).
    Raises:
        LeakprobeError: ``path`` is an existing file, lies under a file, or its first
            existing ancestor is not writable.
    """
    if path is None:
        return None
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise LeakprobeError(f"{option} {out}: an existing file, not a folder; pass a folder")
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise LeakprobeError(f"{option} {out}: cannot create the folder, {probe} is a file")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == out else f" ({probe} is not writable)"
        raise LeakprobeError(f"{option} {out}: cannot write there{where}")
    return out


def remaining_queries(target) -> int | None:
    """Queries the target still allows: its own budget and its server's, whichever is lower.

    Local targets count against ``target.counter.budget`` (or a ``budget`` attribute); HTTP
    targets also report the server's ``max_queries`` and ``queries_used``, and, behind API
    keys, the key's ``remaining`` when ``/v1/info`` was read (less what was sent since).
    None: unlimited.
    """
    limits = []
    counter = getattr(target, "counter", None)
    budget = getattr(counter, "budget", None) if counter is not None else \
        getattr(target, "budget", None)
    if isinstance(budget, int) and not isinstance(budget, bool):
        limits.append(budget - int(getattr(target, "queries", 0) or 0))
    info = getattr(target, "info", None)
    if isinstance(info, dict) and isinstance(info.get("max_queries"), int):
        used = getattr(target, "server_queries_used", None)
        used = info.get("queries_used") if used is None else used
        limits.append(int(info["max_queries"]) - int(used or 0))
    own = info.get("client") if isinstance(info, dict) else None
    if isinstance(own, dict) and isinstance(own.get("remaining"), int):
        limits.append(int(own["remaining"]) - int(getattr(target, "queries", 0) or 0))
    return max(min(limits), 0) if limits else None


def check_query_budget(target, needed: int, what: str, hint: str) -> None:
    """Refuse a run that would exhaust the target's budget, before its first query.

    Args:
        target: the queried model.
        needed: queries the run will make.
        what: the run and how ``needed`` adds up, e.g. ``"this audit needs 1920 queries
            (...)"``.
        hint: how to need fewer.
    Raises:
        LeakprobeError: ``"{what}; the target's budget allows N: {hint}"``.
    """
    left = remaining_queries(target)
    if left is None or needed <= left:
        return
    raise LeakprobeError(f"{what}; the target's budget allows {left}: {hint}")
