"""Train a self-supervised target encoder on the member side of a split and save it."""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from leakprobe.augment import SSLAugmentation
from leakprobe.data.splits import Split, save_manifest
from leakprobe.data.stream import Images
from leakprobe.errors import LeakprobeError
from leakprobe.io import write_json
from leakprobe.models import create_model
from leakprobe.models.registry import int_attribute
from leakprobe.models.serialization import export_torchscript, save_weights
from leakprobe.progress import log
from leakprobe.targets.loading import is_factory_arch
from leakprobe.training.backbone import build_backbone
from leakprobe.training.dp import batchnorm_modules, check_dp_compatible, replace_batchnorm
from leakprobe.training.ssl.base import SSLMethod, create_method
from leakprobe.training.trainer import EpochCallback, TrainConfig, Trainer


@dataclass
class EncoderRecipe:
    """How a target encoder is trained (recorded next to the weights).

    Attributes:
        method: SSL method name (``simclr``...).
        arch: registered backbone name, or ``file.py:factory`` / ``package.module:factory``
            (a fresh module, images (B, 3, H, W) -> embeddings (B, D);
            :mod:`leakprobe.training.backbone`).
        arch_kwargs: backbone overrides (``width``, ``norm``...; registered names only).
        crop_scale: random-resized-crop area range (SCSR narrows it).
        method_kwargs: SSL method overrides (``temperature``...).
        init: weights the backbone starts from (a train folder, ``.safetensors``, published
            checkpoint, TorchScript file or entry point); None: random initialisation.
    """

    method: str = "simclr"
    arch: str = "resnet-tiny"
    arch_kwargs: dict = field(default_factory=dict)
    crop_scale: tuple[float, float] = (0.08, 1.0)
    method_kwargs: dict = field(default_factory=dict)
    init: str | None = None


def dp_recipe(recipe: EncoderRecipe, input_size: int = 32) -> EncoderRecipe:
    """The recipe to train under DP-SGD: ``norm="group"`` when the backbone has BatchNorm.

    The ResNets take ``norm``; a backbone without BatchNorm (ViT) is unchanged. A recipe that
    asks for ``norm="batch"`` explicitly is kept (and rejected when training starts).
    """
    if "norm" in recipe.arch_kwargs or is_factory_arch(recipe.arch):
        return recipe  # a factory's own layers: check_dp_compatible names any BatchNorm
    probe = create_model(recipe.arch, input_size=input_size, **recipe.arch_kwargs)
    if not batchnorm_modules(probe):
        return recipe
    kwargs = {**recipe.arch_kwargs, "norm": "group"}
    try:
        create_model(recipe.arch, input_size=input_size, **kwargs)
    except LeakprobeError:
        return recipe  # no norm option: check_dp_compatible names the layers
    return replace(recipe, arch_kwargs=kwargs)


def export_backbone(method: torch.nn.Module) -> torch.nn.Module:
    """The encoder a method hands out: ``method.export_backbone()`` if defined (e.g. a
    teacher), else ``method.backbone``."""
    export = getattr(method, "export_backbone", None)
    if callable(export):
        return export()
    backbone = method.backbone
    if not isinstance(backbone, torch.nn.Module):
        raise LeakprobeError(f"{type(method).__name__}.backbone is not a module")
    return backbone


def build_ssl_method(recipe: EncoderRecipe, input_size: int, dp: bool = False) -> SSLMethod:
    """The SSL method of ``recipe`` around a fresh backbone (not seeded here; ``recipe.init``'s
    weights when given: :func:`~leakprobe.training.backbone.build_backbone`).

    With ``dp``, BatchNorm layers outside the backbone (projection/prediction heads) become
    GroupNorm; the backbone itself must already be BatchNorm-free (see :func:`dp_recipe`).
    """
    backbone = build_backbone(recipe, input_size)
    low, high = recipe.crop_scale
    augmentation = SSLAugmentation(size=input_size, crop_scale=(low, high))
    if dp:
        check_dp_compatible(backbone)
    method = create_method(recipe.method, backbone, augmentation, **recipe.method_kwargs)
    if dp:
        replace_batchnorm(method)  # in place (a method is not itself a BatchNorm)
    return method


def _ssl_trainer(
    images: Images,
    recipe: EncoderRecipe,
    config: TrainConfig,
    checkpoint_dir: str | Path | None,
    callbacks: list[EpochCallback] | None,
    description: str = "encoder training",
) -> tuple[EncoderRecipe, SSLMethod, Trainer]:
    size = images.shape[-1]
    dp = config.dp is not None
    if dp:
        recipe = dp_recipe(recipe, size)
    torch.manual_seed(config.seed)
    method = build_ssl_method(recipe, size, dp)
    return recipe, method, Trainer(method, config, checkpoint_dir, list(callbacks or []),
                                   description=description)


def train_ssl_encoder(
    images: Images,
    recipe: EncoderRecipe,
    config: TrainConfig,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: list[EpochCallback] | None = None,
    description: str = "encoder training",
) -> tuple[torch.nn.Module, list[float]]:
    """Train a backbone with an SSL method on ``images`` (N, 3, H, W) in [0, 1] (a tensor or
    a :class:`~leakprobe.data.stream.LazyImages`, read one batch per step).

    With ``config.dp`` the backbone is built with GroupNorm (:func:`dp_recipe`) and trained
    with DP-SGD. ``description`` names the training's progress task (``shadow training``).

    Returns:
        The trained backbone (eval mode, on the training device) and the loss per epoch.
    """
    _, method, trainer = _ssl_trainer(images, recipe, config, checkpoint_dir, callbacks,
                                      description)
    history = trainer.fit(images, method.loss, resume=resume)
    return export_backbone(method).eval(), history


def save_encoder(
    backbone: torch.nn.Module, recipe: EncoderRecipe, out_dir: str | Path, info: dict
) -> dict[str, Path]:
    """Write ``encoder.safetensors``, ``encoder.torchscript.pt`` and ``model.json``.

    A factory's backbone (``recipe.arch`` ``file.py:factory``) gets no TorchScript export (user
    code need not script): its safetensors record the factory, which loading names again.
    """
    out = Path(out_dir)
    input_size = int(int_attribute(backbone, "input_size"))
    kwargs = {"input_size": input_size, **recipe.arch_kwargs}
    paths = {
        "weights": save_weights(backbone, out / "encoder.safetensors", recipe.arch, kwargs)}
    if not is_factory_arch(recipe.arch):
        paths["torchscript"] = export_torchscript(backbone, out / "encoder.torchscript.pt")
    meta = {"kind": "encoder", "arch": recipe.arch, "arch_kwargs": kwargs,
            "input_size": input_size, "embed_dim": int(int_attribute(backbone, "embed_dim")),
            "recipe": {**recipe.__dict__, "crop_scale": list(recipe.crop_scale)}, **info}
    paths["model"] = write_json(out / "model.json", json.loads(json.dumps(meta, default=str)))
    return paths


def snapshot_dir(out_dir: str | Path, epoch: int) -> Path:
    """Where :func:`train_target_encoder` saves the encoder of ``epoch``."""
    return Path(out_dir) / "snapshots" / f"epoch_{epoch:04d}"


def train_target_encoder(
    split: Split,
    recipe: EncoderRecipe,
    config: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    callbacks: list[EpochCallback] | None = None,
) -> dict:
    """Train on ``split.members`` and save the encoder, its export and the split manifest.

    Every epoch in ``config.snapshot_epochs`` is also saved whole (weights, TorchScript,
    ``model.json`` with the recipe, the epoch and, under DP, epsilon at that epoch, and a
    copy of ``split.json``) to ``out_dir/snapshots/epoch_EEEE/``. Under DP ``model.json``
    records ``"dp"`` (:meth:`leakprobe.training.dp.DPSGD.summary`): epsilon (the guarantee;
    None when the method's per-image sensitivity is not bounded by C, or without noise),
    epsilon_nominal (the accountant's number), caveat, delta, noise_multiplier,
    max_grad_norm, steps, sample_rate, expected_batch_size, accountant, clipping_unit,
    exact_per_image, sampling (``poisson``), noise_seed (not recorded).

    Returns:
        ``{"weights", "torchscript", "model", "split"}`` -> paths, and ``"snapshots"`` ->
        ``{epoch: folder}`` when snapshots were asked for.
    """
    out = Path(out_dir)
    t0 = time.time()
    manifest = save_manifest(split, out / "split.json", seed=config.seed)
    images = split.members.pixels  # streamed sets are read one batch per step
    recipe, method, trainer = _ssl_trainer(images, recipe, config, out / "checkpoints",
                                           callbacks)
    common = {"n_members": len(split.members), "n_nonmembers": len(split.nonmembers),
              "data": split.members.source}

    def dp_info(epoch: int | None = None) -> dict:
        engine = trainer.dp_engine
        if engine is None:
            return {}
        steps = None if epoch is None else epoch * trainer.steps_per_epoch
        return {"dp": engine.summary(steps)}

    def snapshot(epoch: int, _model: torch.nn.Module) -> bool:
        if epoch in config.snapshot_epochs:
            folder = snapshot_dir(out, epoch)
            backbone = copy.deepcopy(export_backbone(method)).cpu().eval()
            info = {"train": config.to_dict(), "epoch": epoch,
                    "loss_history": list(trainer.history), **common, **dp_info(epoch)}
            save_encoder(backbone, recipe, folder, info)
            shutil.copyfile(manifest, folder / "split.json")
            log(f"snapshot of epoch {epoch} saved to {folder}")
        return False

    if config.snapshot_epochs:
        trainer.callbacks.insert(0, snapshot)
    history = trainer.fit(images, method.loss, resume=resume)
    backbone = export_backbone(method).eval()
    info = {"train": config.to_dict(), "epoch": len(history), "loss_history": history,
            **common, "train_seconds": round(time.time() - t0, 2), **dp_info()}
    paths: dict = save_encoder(backbone.cpu(), recipe, out, info)
    paths["split"] = manifest
    if config.snapshot_epochs:
        paths["snapshots"] = {e: snapshot_dir(out, e) for e in config.snapshot_epochs
                              if (snapshot_dir(out, e) / "model.json").is_file()}
    engine = trainer.dp_engine
    if engine is not None:
        log(f"DP-SGD: epsilon {engine.epsilon_text(detail=False)} at delta {engine.config.delta:g} "
            f"(noise {engine.noise_multiplier:.3g}, {engine.steps} steps)")
        if engine.caveat and engine.noise_multiplier > 0:
            log(f"DP-SGD: not a guarantee: {engine.caveat}")
    log(f"saved encoder to {out} ({time.time() - t0:.0f}s)")
    return paths

