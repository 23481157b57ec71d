"""Train a target encoder and record its utility beside it (``leakprobe train encoder``).

An audit of the trained folder reports that utility (:func:`recorded_utility`) unless it
is given labelled data of its own to measure it on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from leakprobe.data.splits import Split
from leakprobe.io import write_json
from leakprobe.training.encoder import EncoderRecipe, train_target_encoder
from leakprobe.training.trainer import TrainConfig


def train_encoder(
    split: Split,
    recipe: EncoderRecipe,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train an SSL encoder on ``split.members`` and save it; record its utility when labelled.

    With labelled images, k-NN and linear-probe accuracy of the trained encoder on the
    non-member split (:func:`~leakprobe.workflows.audit.encoder_utility`, seeded with
    ``config.seed``) are written into ``model.json`` as ``"utility"``.

    Args:
        split: members (trained on) and non-members.
        recipe: SSL method, backbone and augmentation.
        config: optimisation settings (device, seed, DP-SGD...).
        out_dir: folder of the weights, TorchScript, ``model.json`` and ``split.json``.
        resume: continue from ``out_dir/checkpoints``.
    Returns:
        ``(paths, model)``: the paths of
        :func:`~leakprobe.training.encoder.train_target_encoder` and the content of
        ``model.json`` (``"utility"`` when measured, ``"dp"`` under DP-SGD).
    """
    paths = train_target_encoder(split, recipe, config, out_dir, resume=resume)
    if split.nonmembers.labels is not None:
        from leakprobe.targets.loading import load_encoder
        from leakprobe.workflows.audit import encoder_utility

        target = load_encoder(str(paths["weights"]), device=config.device)
        record_utility(paths["model"], encoder_utility(target, split.nonmembers, config.seed))
    return paths, json.loads(Path(paths["model"]).read_text())


def record_utility(model_json: str | Path, utility: dict[str, Any]) -> None:
    """Add ``"utility"`` to a trained model's ``model.json`` (the other keys are kept)."""
    path = Path(model_json)
    write_json(path, {**json.loads(path.read_text()), "utility": utility})


def recorded_utility(model: str | Path) -> dict[str, Any] | None:
    """The utility :func:`train_encoder` recorded in ``model.json`` next to ``model``, if any.

    Args:
        model: a trained folder or a file in it (any other model reference gives None).
    Returns:
        The recorded utility with ``"source"`` (the ``model.json`` path), or None.
    """
    path = Path(model)
    meta = (path if path.is_dir() else path.parent) / "model.json"
    if not path.exists() or not meta.is_file():
        return None
    try:
        recorded = json.loads(meta.read_text()).get("utility")
    except (json.JSONDecodeError, OSError, AttributeError):
        return None
    return {**recorded, "source": str(meta)} if isinstance(recorded, dict) else None
