"""Run a study's training runs as Ray tasks (``--workers N`` or ``--address ADDR``).

One Ray task = one training run and all of its unfinished cells (the early-stopping cells
of a run share its training, so they never run apart). Each task asks for one CPU (plus
``ray.gpus_per_cell`` GPUs), sets torch to the study's ``threads`` (default 1) and seeds
everything from the cell seed, so its numbers equal an in-process run's. Workers write their
cells under the study folder, which must be visible to them (the local cluster of
``--workers``, or a shared filesystem for a remote cluster); the driver also writes any
``cell.json`` it gets back that is missing on its side.

Ray is imported lazily: without it, studies still run in-process.
"""

from __future__ import annotations

import os
from pathlib import Path

from leakprobe.errors import LeakprobeError
from leakprobe.io import write_json
from leakprobe.progress import log
from leakprobe.study.config import StudyConfig
from leakprobe.study.grid import TrainRun
from leakprobe.study.runner import CellCallback, cell_dir, load_finished, run_train_group


def _ray_task(study: StudyConfig, run: TrainRun, out: str, device: str) -> list[dict]:
    """Body of one Ray task (runs in a worker process)."""
    os.environ.setdefault("LEAKPROBE_PROGRESS", "0")
    return run_train_group(study, run, out, device)


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise LeakprobeError(
            "--workers / --address need Ray, which is not installed: "
            "pip install 'leakprobe[distributed]' (or run without them, in-process)"
        ) from e
    return ray


def run_groups_ray(
    study: StudyConfig,
    runs: list[TrainRun],
    out: Path,
    device: str,
    workers: int | None,
    address: str | None,
    on_cell_done: CellCallback | None = None,
) -> list[dict]:
    """Run ``runs`` as Ray tasks and wait for all of them.

    Args:
        study: the config.
        runs: training runs with unfinished cells.
        out: the study folder.
        device: device each task uses.
        workers: CPUs of a local Ray cluster started here (ignored with ``address``).
        address: address of an existing Ray cluster (``auto``, ``ray://host:10001``...).
        on_cell_done: called in the driver with each cell record as its task finishes.
    Returns:
        All cell records computed.
    """
    ray = _import_ray()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started_here = not ray.is_initialized()
    if started_here:
        env = {k: v for k, v in os.environ.items() if k.startswith("LEAKPROBE_")}
        kwargs = {"runtime_env": {"env_vars": env}, "include_dashboard": False,
                  "logging_level": "ERROR", "log_to_driver": os.environ.get(
                      "LEAKPROBE_QUIET") != "1"}
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=int(workers or 1), object_store_memory=256 * 2**20,
                         **kwargs)
        except Exception as e:  # noqa: BLE001 - Ray raises many kinds; report one line
            where = address or f"a local cluster with {workers} CPUs"
            raise LeakprobeError(f"could not start Ray on {where}: {e}") from e
    log(f"study: {len(runs)} training runs as Ray tasks "
        f"({address or f'local, {workers} workers'})")
    task = ray.remote(num_cpus=1, num_gpus=study.ray.gpus_per_cell, max_retries=0)(_ray_task)
    pending = {task.remote(study, run, str(out), device): run for run in runs}
    records: list[dict] = []
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            run = pending.pop(ready[0])
            try:
                results = ray.get(ready[0])
            except ray.exceptions.RayTaskError as e:
                cause = e.as_instanceof_cause()
                if isinstance(cause, LeakprobeError):
                    raise LeakprobeError(f"{run.name}: {cause}") from e
                raise
            cells = {c.key: c for c in run.cells}
            for rec in results:
                cell = cells[rec["key"]]
                if load_finished(out, cell) is None:
                    write_json(cell_dir(out, cell) / "cell.json", rec)
                if on_cell_done is not None:
                    on_cell_done(rec)
            records += results
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()
    return records
