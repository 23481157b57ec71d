"""The ``leakprobe`` command line: a thin layer over :mod:`leakprobe.workflows`."""

from leakprobe.cli.app import app, main

__all__ = ["app", "main"]
