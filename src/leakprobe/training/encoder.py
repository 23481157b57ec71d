"""Train a self-supervised target encoder on the member side of a split and save it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from leakprobe.augment import SSLAugmentation
from leakprobe.data.images import ImageSet
from leakprobe.data.splits import Split, save_manifest
from leakprobe.io import write_json
from leakprobe.models import create_model
from leakprobe.models.serialization import export_torchscript, save_weights
from leakprobe.progress import log
from leakprobe.training.ssl.base import create_method
from leakprobe.training.trainer import EpochCallback, TrainConfig, Trainer


@dataclass
class EncoderRecipe:
    """How a target encoder is trained (recorded next to the weights).

    Attributes:
        method: SSL method name (``simclr``...).
        arch: registered backbone name.
        arch_kwargs: backbone overrides (``width``, ``norm``...).
        crop_scale: random-resized-crop area range (SCSR narrows it).
        method_kwargs: SSL method overrides (``temperature``...).
    """

    method: str = "simclr"
    arch: str = "resnet-tiny"
    arch_kwargs: dict = field(default_factory=dict)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    method_kwargs: dict = field(default_factory=dict)


def train_ssl_encoder(
    images: torch.Tensor,
    recipe: EncoderRecipe,
    config: TrainConfig,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: list[EpochCallback] | None = None,
) -> tuple[torch.nn.Module, list[float]]:
    """Train a backbone with an SSL method on ``images`` (N, 3, H, W) in [0, 1].

    Returns:
        The trained backbone (eval mode, on the training device) and the loss per epoch.
    """
    torch.manual_seed(config.seed)
    size = images.shape[-1]
    backbone = create_model(recipe.arch, input_size=size, **recipe.arch_kwargs)
    augmentation = SSLAugmentation(size=size, crop_scale=tuple(recipe.crop_scale))
    method = create_method(recipe.method, backbone, augmentation, **recipe.method_kwargs)
    trainer = Trainer(method, config, checkpoint_dir, callbacks)
    history = trainer.fit(images, method.loss, resume=resume)
    return method.backbone.eval(), history


def save_encoder(
    backbone: torch.nn.Module, recipe: EncoderRecipe, out_dir: str | Path, info: dict
) -> dict[str, Path]:
    """Write ``encoder.safetensors``, ``encoder.torchscript.pt`` and ``model.json``."""
    out = Path(out_dir)
    kwargs = {"input_size": int(backbone.input_size), **recipe.arch_kwargs}
    paths = {
        "weights": save_weights(backbone, out / "encoder.safetensors", recipe.arch, kwargs),
        "torchscript": export_torchscript(backbone, out / "encoder.torchscript.pt"),
    }
    meta = {"kind": "encoder", "arch": recipe.arch, "arch_kwargs": kwargs,
            "input_size": int(backbone.input_size), "embed_dim": int(backbone.embed_dim),
            "recipe": {**recipe.__dict__, "crop_scale": list(recipe.crop_scale)}, **info}
    paths["model"] = write_json(out / "model.json", json.loads(json.dumps(meta, default=str)))
    return paths


def train_target_encoder(
    split: Split,
    recipe: EncoderRecipe,
    config: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    callbacks: list[EpochCallback] | None = None,
) -> dict[str, Path]:
    """Train on ``split.members`` and save the encoder, its export and the split manifest."""
    out = Path(out_dir)
    t0 = time.time()
    manifest = save_manifest(split, out / "split.json", seed=config.seed)
    backbone, history = train_ssl_encoder(
        split.members.images, recipe, config, out / "checkpoints", resume, callbacks
    )
    info = {"train": config.to_dict(), "loss_history": history, "n_members": len(split.members),
            "n_nonmembers": len(split.nonmembers), "data": split.members.source,
            "train_seconds": round(time.time() - t0, 2)}
    paths = save_encoder(backbone.cpu(), recipe, out, info)
    paths["split"] = manifest
    log(f"saved encoder to {out} ({time.time() - t0:.0f}s)")
    return paths


def embed_all(backbone: torch.nn.Module, data: ImageSet, batch: int = 512) -> torch.Tensor:
    """Embeddings of a whole set with a local backbone (utility evaluation)."""
    device = next(backbone.parameters()).device
    backbone.eval()
    with torch.inference_mode():
        return torch.cat([backbone(x.to(device)).float().cpu() for x in data.images.split(batch)])
