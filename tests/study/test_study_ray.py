"""Cells run as Ray tasks give exactly the in-process numbers (local 2-CPU cluster)."""

from __future__ import annotations

import pytest
from study_helpers import numbers

from leakprobe.errors import LeakprobeError
from leakprobe.study import plan, run_study

# one local Ray cluster at a time under pytest-xdist
pytestmark = pytest.mark.xdist_group("ray")

pytest.importorskip("ray")


def test_ray_cells_equal_in_process_cells(study, first_run, tmp_path):
    _, in_process = first_run
    out = tmp_path / "ray"
    seen = []
    on_ray = run_study(study, out, workers=2, on_cell_done=lambda r: seen.append(r["name"]))
    assert sorted(seen) == ["simclr-none-s0", "simclr-scsr0.5-s0"]
    assert all(r["cached"] for r in plan(study, out))
    assert {c["ran"]["threads"] for c in on_ray["cells"]} == {1}
    # different processes than this one
    import os

    assert all(c["ran"]["pid"] != os.getpid() for c in on_ray["cells"])
    assert numbers(on_ray) == numbers(in_process)


def test_missing_ray_is_a_clear_error(study, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(LeakprobeError, match="need Ray, which is not installed"):
        run_study(study, tmp_path / "noray", workers=2)
