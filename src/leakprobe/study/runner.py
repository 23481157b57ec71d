"""Run a study: train -> audit -> utility per cell, cached, resumable, in-process or on Ray.

Caching. A cell is finished iff ``OUT/cells/<name>-<key8>/cell.json`` exists and records the
cell's key; ``cell.json`` is written atomically and *last*, after the audit report, so an
interruption at any point leaves the cell unfinished and it is recomputed (its training run
resumes from the last epoch checkpoint). A training run is finished iff its ``train.json``
(written last, atomically) records the run's key; re-running a study skips finished cells,
and a training run whose cells are all finished is not even loaded.

Determinism. Every cell seeds torch, numpy and ``random`` from its seed, and runs with
``threads`` torch threads (default 1), so a cell computed in-process and one computed in a
Ray worker give the same numbers (CPU float results depend on the thread count, so bitwise
equality needs equal ``threads``). Device and threads are recorded in ``cell.json`` but are
not part of the key.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from leakprobe.errors import LeakprobeError
from leakprobe.io import write_json
from leakprobe.progress import log
from leakprobe.study.config import StudyConfig
from leakprobe.study.grid import Cell, TrainRun, all_cells, expand_grid

if TYPE_CHECKING:
    from leakprobe.data.images import ImageSet
    from leakprobe.data.splits import Split

CELL_FORMAT = "leakprobe-study-cell/1"
CellCallback = Callable[[dict], None]


def cell_dir(out: str | Path, cell: Cell) -> Path:
    """``OUT/cells/<name>-<key8>``."""
    return Path(out) / "cells" / cell.folder


def train_dir(out: str | Path, run: TrainRun) -> Path:
    """``OUT/train/<name>-<key8>``."""
    return Path(out) / "train" / run.name


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def load_finished(out: str | Path, cell: Cell) -> dict | None:
    """The cell's ``cell.json`` when the cell is finished (file present, key matching)."""
    record = _read_json(cell_dir(out, cell) / "cell.json")
    return record if record is not None and record.get("key") == cell.key else None


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global generator and ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _train_config(run: TrainRun, device: str):
    from leakprobe.training.dp import DPConfig
    from leakprobe.training.trainer import TrainConfig

    t = dict(run.config["train"])
    dp = t.pop("dp")
    dp_config = DPConfig(**dp) if dp else None
    return TrainConfig(**t, seed=run.seed, device=device, dp=dp_config,
                       snapshot_epochs=run.snapshot_epochs)


def _recipe(run: TrainRun):
    from leakprobe.training.encoder import EncoderRecipe

    r = run.config["recipe"]
    return EncoderRecipe(r["method"], r["arch"], dict(r["arch_kwargs"]), tuple(r["crop_scale"]),
                         dict(r["method_kwargs"]))


def ensure_trained(run: TrainRun, split, out: Path, device: str) -> dict:
    """Train the run (resuming from its checkpoints) unless its ``train.json`` is current.

    Returns:
        The ``train.json`` record: ``{"key", "weights", "snapshots": {epoch: weights},
        "dp", "epochs_trained", "train_seconds", "final_loss"}`` (paths relative to ``out``).
    """
    from leakprobe.training.encoder import train_target_encoder

    folder = train_dir(out, run)
    record = _read_json(folder / "train.json")
    if record is not None and record.get("key") == run.key:
        return record
    recipe = _recipe(run)
    config = _train_config(run, device)
    log(f"study: training {run.name}")
    paths = train_target_encoder(split, recipe, config, folder, resume=True)
    snapshots = {int(e): Path(snap) / "encoder.safetensors"
                 for e, snap in (paths.get("snapshots") or {}).items()
                 if int(e) in run.snapshot_epochs}
    meta = _read_json(Path(paths["model"])) or {}
    dp = meta.get("dp")
    history = meta.get("loss_history") or []
    record = {
        "key": run.key, "name": run.name, "config": run.config,
        "weights": str(Path(paths["weights"]).relative_to(out)),
        "snapshots": {str(e): str(p.relative_to(out)) for e, p in snapshots.items()},
        "dp": dp, "epochs_trained": len(history),
        "final_loss": history[-1] if history else None,
        "train_seconds": meta.get("train_seconds"),
    }
    write_json(folder / "train.json", record)
    return record


def run_cell(study: StudyConfig, cell: Cell, train_record: dict, split, utility_set,
             out: Path, device: str) -> dict:
    """Audit and measure one cell's encoder; write its audit report and ``cell.json`` (last).

    Returns:
        The ``cell.json`` record.
    """
    from leakprobe.report.schema import summary_rows
    from leakprobe.targets.loading import load_encoder
    from leakprobe.workflows.audit import audit_encoder, encoder_utility

    t0 = time.time()
    seed_everything(cell.seed)
    rel = train_record["weights"] if cell.stop_epoch is None \
        else train_record["snapshots"][str(cell.stop_epoch)]
    target = load_encoder(str(out / rel), device=device)
    utility = encoder_utility(target, utility_set, cell.seed)
    folder = cell_dir(out, cell)
    kn = study.knowledge
    report = audit_encoder(
        target, split.members, split.nonmembers, attacks=list(study.attacks), knowledge=kn.setting,
        folds=kn.folds, seed=cell.seed, out_dir=folder / "audit", utility=utility,
        repeats=kn.repeats, permutations=kn.permutations,
        context={"study": study.name, "cell": cell.name, "model": rel},
        **study.attack_options,
    )
    dp = train_record.get("dp") if cell.defence == "dp" else None
    from leakprobe.training.dp_record import dp_epsilon

    eps = dp_epsilon(dp) or {}  # epsilon: a DP guarantee or None; nominal + caveat otherwise
    record = {
        "format": CELL_FORMAT, "key": cell.key, "name": cell.name, "folder": cell.folder,
        "paradigm": cell.paradigm, "defence": cell.defence,
        "strength_name": cell.strength_name, "strength": cell.strength, "seed": cell.seed,
        "epochs_trained": cell.stop_epoch or train_record.get("epochs_trained"),
        "utility": {k: utility[k] for k in ("knn_accuracy", "linear_probe_accuracy", "chance",
                                            "n_images")},
        "attacks": summary_rows(report),  # null_aucs kept: the best-of-many test needs them
        "epsilon": eps.get("epsilon"), "epsilon_nominal": eps.get("epsilon_nominal"),
        "epsilon_caveat": eps.get("caveat"), "dp": dp,
        "warnings": report.get("warnings", []),
        "model": rel, "train_run": cell.train_run,
        "train_seconds": train_record.get("train_seconds"),
        "audit_seconds": round(time.time() - t0, 2),
        "config": cell.config, "leakprobe_version": report["leakprobe_version"],
        "ran": {"host": platform.node(), "pid": os.getpid(), "device": str(target.device)
                if hasattr(target, "device") else device, "threads": torch.get_num_threads()},
    }
    write_json(folder / "cell.json", record)
    return record


def rest_images(data: ImageSet, split: Split) -> ImageSet:
    """The images of ``data`` on neither side of ``split``, in data order, by content.

    An image is left out when its content equals a member's or a non-member's, and only the
    first of identical images is kept, so the result is disjoint from both sides by content
    (as ``make_split`` makes the sides disjoint from each other).

    Args:
        data: the whole data set the split was drawn from.
        split: its member / non-member split.
    Returns:
        The remaining images (possibly empty), with their ids and labels.
    """
    used = set(split.members.content_hashes()) | set(split.nonmembers.content_hashes())
    keep = []
    for pos, h in enumerate(data.content_hashes()):
        if h not in used:
            used.add(h)
            keep.append(pos)
    return data.subset(torch.tensor(keep, dtype=torch.long))


def utility_images(study: StudyConfig, data: ImageSet, split: Split, seed: int) -> ImageSet:
    """The labelled images a cell's utility is measured on (see ``utility`` in the config).

    Args:
        study: the config (``utility_data``, ``utility_max_images``).
        data: the study's data set.
        split: the cell's member / non-member split of ``data``.
        seed: the cell's seed (draws the ``max_images`` sample).
    Returns:
        The labelled ImageSet.
    Raises:
        LeakprobeError: ``rest`` leaves fewer than 2 images, or the set has no labels.
    """
    from leakprobe.data.loaders import load_dataset

    source = study.utility_data
    if source == "nonmembers":
        images = split.nonmembers
    elif source == "rest":
        images = rest_images(data, split)
        if len(images) < 2:
            raise LeakprobeError(
                f"utility: rest leaves {len(images)} images of {study.data!r} outside the "
                f"{study.members} members and {study.nonmembers} non-members; use fewer "
                "members/non-members, a larger data set or another utility.data")
    else:
        images = load_dataset(source, study.image_size, study.data_seed)
    if images.labels is None:
        what = study.data if source in ("nonmembers", "rest") else source
        raise LeakprobeError(f"utility: {what!r} has no labels; set utility.data to a labelled "
                             "data spec")
    cap = study.utility_max_images
    if cap is not None and len(images) > cap:
        gen = torch.Generator().manual_seed(int(seed))
        images = images.subset(torch.randperm(len(images), generator=gen)[:cap])
    return images


def _load_split(study: StudyConfig, seed: int):
    from leakprobe.data.loaders import load_dataset
    from leakprobe.data.splits import make_split

    data = load_dataset(study.data, study.image_size, study.data_seed)
    split = make_split(data, study.members, study.nonmembers, seed=seed)
    return split, utility_images(study, data, split, seed)


def run_train_group(study: StudyConfig, run: TrainRun, out: str | Path, device: str,
                    on_cell_done: CellCallback | None = None) -> list[dict]:
    """Train (or reuse) one run and compute its unfinished cells, in-process.

    Args:
        study: the config.
        run: the training run and its cells.
        out: the study folder.
        device: ``auto``, ``cpu``, ``cuda``...
        on_cell_done: called with each new ``cell.json`` record after it is written.
    Returns:
        The records of the cells computed now (finished cells are skipped).
    """
    out = Path(out)
    todo = [c for c in run.cells if load_finished(out, c) is None]
    if not todo:
        return []
    done = []
    with _torch_threads(study.threads):
        seed_everything(run.seed)
        split, utility_set = _load_split(study, run.seed)
        record = ensure_trained(run, split, out, device)
        for cell in todo:
            log(f"study: auditing {cell.name}")
            result = run_cell(study, cell, record, split, utility_set, out, device)
            done.append(result)
            if on_cell_done is not None:
                on_cell_done(result)
    return done


def plan(study: StudyConfig, out: str | Path | None) -> list[dict]:
    """Every cell with its folder and whether it is finished in ``out`` (``--dry-run``)."""
    rows = []
    for run in expand_grid(study):
        for c in run.cells:
            cached = out is not None and load_finished(out, c) is not None
            rows.append({"name": c.name, "folder": c.folder, "train_run": run.name,
                         "key": c.key, "cached": cached})
    return rows


def run_study(
    study: StudyConfig,
    out: str | Path | None = None,
    workers: int | None = None,
    address: str | None = None,
    device: str | None = None,
    on_cell_done: CellCallback | None = None,
    report: bool = True,
) -> dict:
    """Run every unfinished cell of the study and write ``study.json`` and ``report.html``.

    Args:
        study: the validated config.
        out: the study folder (default: the config's ``out``).
        workers: run cells as Ray tasks on a local Ray cluster with this many CPUs.
        address: run cells as Ray tasks on the Ray cluster at this address.
        device: overrides the config's device.
        on_cell_done: called with each newly computed cell record (in the driver).
        report: write ``study.json``, ``report.html`` and plots at the end.
    Returns:
        The study summary (the content of ``study.json``).
    """
    folder = out if out is not None else study.out
    if folder is None:
        raise LeakprobeError("no output folder: pass --out or set 'out' in the study config")
    out = Path(folder)
    device = device or study.device
    workers = workers if workers is not None else study.ray.workers
    address = address if address is not None else study.ray.address
    runs = expand_grid(study)
    write_json(out / "study_config.json", study.to_dict())
    todo = [r for r in runs if any(load_finished(out, c) is None for c in r.cells)]
    n_cells = len(all_cells(runs))
    n_todo = sum(load_finished(out, c) is None for r in todo for c in r.cells)
    log(f"study {study.name}: {n_cells} cells, {n_cells - n_todo} cached, {n_todo} to run "
        f"({len(todo)} training runs)")
    t0 = time.time()
    if todo and (workers or address):
        from leakprobe.study.distributed import run_groups_ray

        run_groups_ray(study, todo, out, device, workers, address, on_cell_done)
    else:
        for run in todo:
            run_train_group(study, run, out, device, on_cell_done)
    log(f"study {study.name}: cells done in {time.time() - t0:.0f}s")
    records = []
    for c in all_cells(runs):
        rec = load_finished(out, c)
        if rec is None:
            raise LeakprobeError(f"cell {c.name} did not finish (no current cell.json)")
        records.append(rec)
    from leakprobe.study.report import build_study, write_study_report

    summary = build_study(study, records)
    if report:
        write_study_report(summary, out)
    return summary
