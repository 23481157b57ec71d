"""Run the ``leakprobe`` command in the test process (faster than a subprocess).

Importable from every test folder: pytest puts ``tests/`` on ``sys.path`` for its conftest.
"""

from __future__ import annotations

import contextlib
import io
import sys
import traceback


def run_cli(*args: str) -> tuple[int, str, str]:
    """``leakprobe ARGS`` in this process: (exit status, stdout, stderr)."""
    from leakprobe.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = ["leakprobe", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Exception:  # what a real process does with an uncaught exception
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved
    return code, out.getvalue(), err.getvalue()
