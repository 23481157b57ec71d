"""Expand a study config into grid cells and the training runs they share.

A **cell** is one (paradigm, defence setting, seed): one encoder audited and measured. Its
key is the SHA-256 of its fully resolved config (data, split sizes, seed, SSL recipe,
training settings, DP settings, which model of the run is evaluated, attacks, knowledge,
utility data and cap) plus the leakprobe version, so any change that could change its numbers gives
a new key, and nothing else does. Its folder is ``OUT/cells/<readable-name>-<key[:8]>/``.

A **training run** is one trained encoder. Cells that evaluate the same training share it:
the early-stopping cells of a paradigm and seed evaluate snapshots (after ``e`` epochs) of
the undefended run, so the grid trains once per (paradigm, seed) for all of them. A run's
key adds the snapshot epochs it must save; its folder is ``OUT/train/<name>-<key[:8]>/``.
Device and thread count are not part of any key: they are how a cell is computed, not what.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from leakprobe.defences.setting import DefenceOptions, DefenceSetting, defence_setting
from leakprobe.study.config import TRAIN_KEYS, Defence, Paradigm, StudyConfig
from leakprobe.training.encoder import EncoderRecipe
from leakprobe.training.trainer import TrainConfig


@dataclass(frozen=True)
class Cell:
    """One grid cell.

    Attributes:
        name: readable name, e.g. ``simclr-dp-nm1-s0``.
        key: SHA-256 hex of the resolved config and leakprobe version.
        paradigm: the paradigm's name.
        defence: the defence kind.
        strength_name: what ``strength`` measures (``epochs``, ``noise_multiplier``...).
        strength: the defence's value (None for ``none``).
        seed: split / training / attack seed.
        stop_epoch: for early stopping, the epoch whose snapshot is evaluated.
        train_run: name of the training run this cell evaluates.
        config: the resolved config that ``key`` hashes.
    """

    name: str
    key: str
    paradigm: str
    defence: str
    strength_name: str
    strength: float | int | None
    seed: int
    stop_epoch: int | None
    train_run: str
    config: dict

    @property
    def folder(self) -> str:
        """Folder name under ``OUT/cells``."""
        return f"{self.name}-{self.key[:8]}"


@dataclass(frozen=True)
class TrainRun:
    """One training run and the cells that evaluate it.

    Attributes:
        name: readable name plus ``-<key[:8]>`` (its folder under ``OUT/train``).
        key: SHA-256 hex of the training config, snapshot epochs and version.
        seed: the split and training seed.
        config: ``{"data", "seed", "recipe", "train", "snapshot_epochs"}``.
        cells: the cells evaluating this run, in grid order.
    """

    name: str
    key: str
    seed: int
    config: dict
    cells: tuple[Cell, ...]

    @property
    def snapshot_epochs(self) -> tuple[int, ...]:
        return tuple(self.config["snapshot_epochs"])


def stable_hash(obj: Any) -> str:
    """SHA-256 hex of the canonical JSON of ``obj`` (sorted keys, no whitespace)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _applies(defence: Defence, paradigm: Paradigm) -> bool:
    return not defence.paradigms or paradigm.name in defence.paradigms


def _requested_train(paradigm: Paradigm, defence: Defence) -> dict:
    """The paradigm's training settings with the defence's overrides (``TRAIN_KEYS``)."""
    return {**asdict(paradigm.train), **defence.train}


def cell_setting(paradigm: Paradigm, defence: Defence, value: Any, seed: int) -> DefenceSetting:
    """The defence setting of one cell: the paradigm's recipe and training settings (with the
    defence's ``train`` and ``arch_kwargs`` overrides) through
    :func:`leakprobe.defences.setting.defence_setting`, as ``leakprobe defend encoder`` does.

    Early stopping's run is the paradigm's undefended run (its full schedule) with a snapshot
    at ``value``.
    """
    low, high = paradigm.crop_scale
    recipe = EncoderRecipe(paradigm.method, paradigm.arch,
                           {**paradigm.arch_kwargs, **defence.arch_kwargs},
                           (low, high), dict(paradigm.method_kwargs))
    config = TrainConfig(**_requested_train(paradigm, defence), seed=seed)
    return defence_setting(defence.kind, value, recipe, config,
                           strength_name=defence.strength or None,
                           options=DefenceOptions(**defence.options))


def _training(study: StudyConfig, paradigm: Paradigm, defence: Defence,
              setting: DefenceSetting, seed: int) -> dict:
    """The resolved training of one cell (what a trained encoder depends on).

    Snapshot epochs are not part of it (they belong to the run: :class:`TrainRun`), and
    ``amp`` is the requested one: DP-SGD ignores it (the per-image pass runs in float32), so a
    key does not depend on whether :func:`~leakprobe.defences.dp_sgd.dp_train_config` turned it
    off.
    """
    recipe, config = setting.recipe, setting.config
    dp = None
    if config.dp is not None:
        dp = {"noise_multiplier": config.dp.noise_multiplier,
              "target_epsilon": config.dp.target_epsilon,
              "max_grad_norm": config.dp.max_grad_norm, "delta": config.dp.delta,
              "accountant": config.dp.accountant}
    train = {key: getattr(config, key) for key in TRAIN_KEYS}
    train["amp"] = _requested_train(paradigm, defence)["amp"]
    return {
        "data": {"spec": study.data, "data_seed": study.data_seed,
                 "image_size": study.image_size, "members": study.members,
                 "nonmembers": study.nonmembers},
        "seed": seed,
        "recipe": {"method": recipe.method, "arch": recipe.arch,
                   "arch_kwargs": dict(recipe.arch_kwargs),
                   "crop_scale": list(recipe.crop_scale),
                   "method_kwargs": dict(recipe.method_kwargs)},
        "train": {**train, "dp": dp},
    }


def expand_grid(study: StudyConfig, version: str | None = None) -> list[TrainRun]:
    """All training runs of the study, each with its cells, in grid order.

    Grid order: paradigms (as listed) x defences (as listed) x values x seeds.

    Args:
        study: the validated config.
        version: leakprobe version folded into every key (default: the installed one).
    Returns:
        The training runs; ``[c for r in runs for c in r.cells]`` lists every cell once.
    """
    from leakprobe.report.schema import leakprobe_version

    version = version or leakprobe_version()
    evaluation: dict[str, Any] = {
        "attacks": list(study.attacks), "attack_options": dict(study.attack_options),
        "knowledge": asdict(study.knowledge), "utility_data": study.utility_data}
    if study.utility_max_images is not None:  # only when set: older keys stay valid
        evaluation["utility_max_images"] = study.utility_max_images
    groups: dict[str, dict] = {}
    order: list[str] = []
    for p in study.paradigms:
        for d in study.defences:
            if not _applies(d, p):
                continue
            for value in d.values:
                for seed in study.seeds:
                    setting = cell_setting(p, d, value, seed)
                    training = _training(study, p, d, setting, seed)
                    stop = setting.evaluate_epoch
                    config = {"paradigm": p.name, "defence": d.kind,
                              "strength": {d.strength: value} if d.strength else {},
                              "training": training, "evaluate_epoch": stop, **evaluation}
                    key = stable_hash({"cell": config, "leakprobe_version": version})
                    base = stable_hash(training)
                    if base not in groups:
                        # early stopping evaluates snapshots of the undefended run
                        run_label = "none" if stop is not None else setting.label
                        groups[base] = {"label": f"{p.name}-{run_label}-s{seed}",
                                        "training": training, "seed": seed, "cells": []}
                        order.append(base)
                    groups[base]["cells"].append(dict(
                        name=f"{p.name}-{setting.label}-s{seed}", key=key, paradigm=p.name,
                        defence=d.kind, strength_name=d.strength, strength=value, seed=seed,
                        stop_epoch=stop, config=config))
    runs = []
    for base in order:
        g = groups[base]
        snapshots = sorted({c["stop_epoch"] for c in g["cells"] if c["stop_epoch"] is not None})
        config = {**g["training"], "snapshot_epochs": snapshots}
        key = stable_hash({"train": config, "leakprobe_version": version})
        name = f"{g['label']}-{key[:8]}"
        cells = tuple(Cell(train_run=name, **c) for c in g["cells"])
        runs.append(TrainRun(name, key, g["seed"], config, cells))
    return runs


def all_cells(runs: list[TrainRun]) -> list[Cell]:
    """The cells of ``runs`` in grid order."""
    return [c for r in runs for c in r.cells]
