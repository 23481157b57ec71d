"""Image-to-image targets: build task pairs, train a translator / segmenter, save it.

A task turns a set of images into (input, ground-truth output) pairs; the ImageSet returned
by :func:`make_task_pairs` holds the model *inputs* in ``images`` and the ground truth in
``extras["targets"]`` (images in [0, 1]) or ``extras["masks"]`` (class indices).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from leakprobe.data.images import ImageSet, concat
from leakprobe.data.paired import save_paired_folder
from leakprobe.data.splits import Split, save_manifest
from leakprobe.errors import LeakprobeError
from leakprobe.io import write_json
from leakprobe.models import create_model
from leakprobe.models import unet as _unet  # noqa: F401  (registers unet-small)
from leakprobe.models.serialization import export_torchscript, save_weights
from leakprobe.progress import log
from leakprobe.training.trainer import TrainConfig, Trainer

# output channels per task (None: the number of segmentation classes)
TASKS: dict[str, int | None] = {"colorize": 3, "denoise": 3, "edges2image": 3, "segment": None}
DENOISE_SIGMA = 0.2
_LUMA = (0.299, 0.587, 0.114)


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise LeakprobeError(f"unknown image-to-image task {task!r}; known: {', '.join(TASKS)}")


def luminance(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) luminance (ITU-R BT.601 weights)."""
    w = torch.tensor(_LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * w).sum(dim=1, keepdim=True)


def edge_map(images: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of the luminance, divided by each image's maximum.

    Args:
        images: (B, 3, H, W) in [0, 1].
    Returns:
        (B, 3, H, W) in [0, 1], the edge map replicated to 3 channels (a flat image gives 0).
    """
    gray = F.pad(luminance(images), [1, 1, 1, 1], mode="replicate")
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    w = torch.stack([kx, kx.t()])[:, None].to(gray)
    g = F.conv2d(gray, w)
    mag = g.pow(2).sum(dim=1, keepdim=True).sqrt()
    top = mag.amax(dim=(2, 3), keepdim=True)
    return (mag / top.clamp_min(1e-8)).clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


def num_classes_of(data: ImageSet, num_classes: int | None = None) -> int:
    """The segmentation class count: ``num_classes`` checked against the masks, or max + 1."""
    masks = data.extras.get("masks")
    if not isinstance(masks, torch.Tensor):
        raise LeakprobeError("the segment task needs per-pixel masks (extras['masks'])")
    top = int(masks.max()) if masks.numel() else 0
    if int(masks.min()) < 0:
        raise LeakprobeError("masks hold negative class indices")
    if num_classes is None:
        return top + 1
    if top >= num_classes:
        raise LeakprobeError(f"masks hold class {top} but num_classes is {num_classes}")
    return num_classes


def make_task_pairs(data: ImageSet, task: str, seed: int = 0) -> ImageSet:
    """Turn images into (input, ground truth) pairs for an image-to-image task.

    Tasks: ``colorize`` (input: the luminance replicated to 3 channels), ``denoise`` (input:
    the image plus Gaussian noise of sigma 0.2 from a seeded generator, clamped to [0, 1]),
    ``edges2image`` (input: :func:`edge_map`) - all three with the image as the target - and
    ``segment`` (input: the image; target: ``extras["masks"]``).

    Args:
        data: the images (with ``extras["masks"]`` for ``segment``).
        task: one of :data:`TASKS`.
        seed: seed of the denoising noise.
    Returns:
        An ImageSet with the same ids, labels and source, ``images`` = the inputs and
        ``extras`` = ``{"targets": (N,3,H,W)}`` or ``{"masks": (N,H,W) int64}``.
    """
    _check_task(task)
    x = data.images
    if task == "segment":
        num_classes_of(data)
        masks = data.extras["masks"].long()
        if tuple(masks.shape) != (x.shape[0], *x.shape[2:]):
            raise LeakprobeError(
                f"masks of shape {tuple(masks.shape)} do not match images {tuple(x.shape)}"
            )
        return ImageSet(x, list(data.ids), data.labels, {"masks": masks}, data.source)
    if task == "colorize":
        inputs = luminance(x).clamp(0, 1).expand(-1, 3, -1, -1).contiguous()
    elif task == "denoise":
        g = torch.Generator().manual_seed(int(seed))
        noise = torch.randn(x.shape, generator=g, dtype=x.dtype).to(x.device)
        inputs = (x + DENOISE_SIGMA * noise).clamp(0, 1)
    else:
        inputs = edge_map(x)
    return ImageSet(inputs, list(data.ids), data.labels, {"targets": x.clone()}, data.source)


def _out_channels(pairs: ImageSet, task: str, num_classes: int | None) -> int:
    return num_classes_of(pairs, num_classes) if task == "segment" else int(TASKS[task] or 3)


def train_image2image(
    pairs: ImageSet,
    task: str,
    arch: str,
    config: TrainConfig,
    num_classes: int | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    arch_kwargs: dict | None = None,
) -> tuple[torch.nn.Module, list[float]]:
    """Train an image-to-image model on task pairs.

    Image tasks minimise the L1 distance between the sigmoid output and the target;
    ``segment`` minimises the NLL of ``log(p + 1e-8)`` of the softmax class probabilities.

    Args:
        pairs: from :func:`make_task_pairs`.
        task: one of :data:`TASKS`.
        arch: registered architecture (``unet-small``) taking ``in_channels``,
            ``out_channels``, ``output`` and ``input_size``.
        config: optimisation settings.
        num_classes: segmentation classes (None: masks' max + 1).
        checkpoint_dir: where the Trainer checkpoints (None: no checkpoints).
        resume: continue from the checkpoint.
        arch_kwargs: architecture overrides (``width``, ``norm``...).
    Returns:
        The trained model (eval mode, on the training device) and the loss per epoch.
    """
    _check_task(task)
    segment = task == "segment"
    key = "masks" if segment else "targets"
    if key not in pairs.extras:
        raise LeakprobeError(
            f"task {task!r} needs extras[{key!r}]: build the pairs with make_task_pairs"
        )
    out_channels = _out_channels(pairs, task, num_classes)
    size = pairs.image_size
    torch.manual_seed(config.seed)
    kwargs = {"in_channels": 3, "out_channels": out_channels,
              "output": "softmax" if segment else "sigmoid", "input_size": size,
              **(arch_kwargs or {})}
    model = create_model(arch, **kwargs)
    trainer = Trainer(model, config, checkpoint_dir, description=f"{task} model training")
    device = trainer.device
    inputs = pairs.images.to(device)
    truth = pairs.extras[key].to(device)
    truth = truth.long() if segment else truth.float()

    def loss_fn(idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        idx = idx.to(device)
        out = model(inputs[idx])
        if segment:
            return F.nll_loss(torch.log(out.float() + 1e-8), truth[idx])
        return (out.float() - truth[idx]).abs().mean()

    history = trainer.fit(torch.arange(len(pairs)), loss_fn, resume=resume)
    return model.eval(), history


def train_target_image2image(
    split: Split,
    task: str,
    arch: str,
    config: TrainConfig,
    out_dir: str | Path,
    num_classes: int | None = None,
    resume: bool = False,
    arch_kwargs: dict | None = None,
) -> dict[str, Path]:
    """Train an image-to-image target on ``split.members`` and save everything an audit needs.

    The task pairs are built once over the whole split (members then non-members, so the
    denoising noise of both sides comes from one seeded stream). Writes
    ``translator.safetensors``, ``translator.torchscript.pt``, ``model.json`` (kind
    ``image2image``), ``split.json``, and the pairs as paired folders ``members/`` and
    ``nonmembers/`` (``inputs/`` + ``targets/``).

    Args:
        split: members (trained on) and non-members.
        task: one of :data:`TASKS`.
        arch: registered image-to-image architecture (``unet-small``).
        config: optimisation settings (``config.seed`` also seeds the task pairs).
        out_dir: output folder.
        num_classes: segmentation classes (None: max over the whole split's masks + 1).
        resume: continue from ``out_dir/checkpoints``.
        arch_kwargs: architecture overrides.
    Returns:
        Paths keyed ``weights``, ``torchscript``, ``model``, ``split``, ``members``,
        ``nonmembers``.
    """
    _check_task(task)
    out = Path(out_dir)
    t0 = time.time()
    manifest = save_manifest(split, out / "split.json", seed=config.seed)
    n_members = len(split.members)
    pairs = make_task_pairs(concat([split.members, split.nonmembers]), task, seed=config.seed)
    if task == "segment":
        num_classes = num_classes_of(pairs, num_classes)
    members = pairs.subset(range(n_members))
    nonmembers = pairs.subset(range(n_members, len(pairs)))
    model, history = train_image2image(
        members, task, arch, config, num_classes, out / "checkpoints", resume, arch_kwargs
    )
    model = model.cpu().eval()
    out_channels = _out_channels(pairs, task, num_classes)
    kwargs = {"in_channels": 3, "out_channels": out_channels,
              "output": "softmax" if task == "segment" else "sigmoid",
              "input_size": pairs.image_size, **(arch_kwargs or {})}
    paths = {
        "weights": save_weights(model, out / "translator.safetensors", arch, kwargs),
        "torchscript": export_torchscript(model, out / "translator.torchscript.pt"),
    }
    meta = {"kind": "image2image", "task": task, "num_classes": num_classes, "arch": arch,
            "arch_kwargs": kwargs, "input_size": pairs.image_size,
            "out_channels": out_channels, "output": kwargs["output"],
            "loss_history": history, "train": config.to_dict(), "n_members": n_members,
            "n_nonmembers": len(nonmembers), "data": split.members.source,
            "train_seconds": round(time.time() - t0, 2)}
    paths["model"] = write_json(out / "model.json", json.loads(json.dumps(meta, default=str)))
    paths["split"] = manifest
    paths["members"] = save_paired_folder(members, out / "members", overwrite=True)
    paths["nonmembers"] = save_paired_folder(nonmembers, out / "nonmembers", overwrite=True)
    log(f"saved {task} translator to {out} ({time.time() - t0:.0f}s)")
    return paths
