"""Paired image folders for image-to-image models: ``inputs/`` and ``targets/`` side by side.

Layout::

    DIR/inputs/cat.jpg      the model's input
    DIR/targets/cat.png     its ground-truth output (an image, or a label map)

Files are matched by stem (the extension may differ). Inputs are read exactly like
:func:`~leakprobe.data.loaders.load_image_folder` reads images (8-bit RGB, bicubic resize);
targets are either images (same preprocessing) or, for segmentation, PNG label maps (mode
``L`` or ``P``, pixel value = class index, nearest-neighbour resize).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from leakprobe.data.decode import read_image
from leakprobe.data.images import ImageSet
from leakprobe.data.loaders import (
    check_image_size,
    images_in,
    remove_images,
    safe_name,
)
from leakprobe.errors import LeakprobeError
from leakprobe.io import atomic_write

LABEL_MODES = ("L", "P")


def _list(folder: Path, what: str) -> dict[str, Path]:
    """stem -> file for the images of a folder; duplicate stems are an error."""
    if not folder.is_dir():
        raise LeakprobeError(f"paired folder has no {what}/ sub-folder: {folder} is missing")
    found: dict[str, Path] = {}
    for p in images_in(folder):
        if p.stem in found:
            raise LeakprobeError(
                f"{folder}: two files share the name {p.stem!r} ({found[p.stem].name}, {p.name})"
            )
        found[p.stem] = p
    if not found:
        raise LeakprobeError(f"{folder} holds no images")
    return found


def _names(items: list[str]) -> str:
    more = f" and {len(items) - 5} more" if len(items) > 5 else ""
    return ", ".join(items[:5]) + more


def _read_label_map(path: Path, image_size: int, num_classes: int) -> np.ndarray:
    """A mode L/P PNG -> (S, S) int64 class indices (nearest-neighbour resize)."""
    try:
        with Image.open(path) as img:
            img.verify()
        with Image.open(path) as img:
            img.load()
            if img.mode not in LABEL_MODES:
                raise LeakprobeError(
                    f"{path}: a label map must be a mode L or P image (pixel value = class "
                    f"index), got mode {img.mode}"
                )
            resized = img.resize((image_size, image_size), Image.Resampling.NEAREST)
            labels = np.asarray(resized, dtype=np.int64).copy()
    except LeakprobeError:
        raise
    except Image.DecompressionBombError as exc:
        raise LeakprobeError(f"{path}: image too large to load safely ({exc})") from exc
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError ...
        raise LeakprobeError(f"{path}: unreadable or truncated label map ({exc})") from exc
    top = int(labels.max())
    if top >= num_classes:
        raise LeakprobeError(
            f"{path}: label value {top} is not a class index below num_classes={num_classes}"
        )
    return labels


def load_paired_folder(
    path: str | Path, image_size: int, num_classes: int | None = None
) -> ImageSet:
    """Load ``path/inputs/`` and ``path/targets/`` as input images plus ground truth.

    Args:
        path: the folder holding ``inputs/`` and ``targets/``.
        image_size: side of the square output tensors.
        num_classes: None for image targets; the number of classes for label-map targets.
    Returns:
        An ImageSet (ids = file stems, sorted) whose ``images`` are the inputs and whose
        extras hold ``targets`` (N, 3, S, S) float in [0, 1], or ``masks`` (N, S, S) int64
        when ``num_classes`` is given. ``source`` is ``"paired:<path>"``.
    Raises:
        LeakprobeError: a missing or empty sub-folder, names present on one side only,
            an unreadable image, a label map that is not mode L/P, or a label value
            >= ``num_classes``.
    """
    check_image_size(image_size)
    if num_classes is not None and (
        not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1
    ):
        raise LeakprobeError(f"num_classes must be a positive integer, got {num_classes!r}")
    root = Path(path)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise LeakprobeError(f"paired folder {root} {what}")
    inputs = _list(root / "inputs", "inputs")
    targets = _list(root / "targets", "targets")
    only_in = sorted(set(inputs) - set(targets))
    only_tg = sorted(set(targets) - set(inputs))
    if only_in or only_tg:
        parts = []
        if only_in:
            parts.append(f"{len(only_in)} inputs have no target ({_names(only_in)})")
        if only_tg:
            parts.append(f"{len(only_tg)} targets have no input ({_names(only_tg)})")
        raise LeakprobeError(f"{root}: inputs/ and targets/ do not match: " + "; ".join(parts))
    stems = sorted(inputs)
    x = np.stack([read_image(inputs[s], image_size) for s in stems])
    images = torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    if num_classes is None:
        y = np.stack([read_image(targets[s], image_size) for s in stems])
        extras = {"targets": torch.from_numpy(y).permute(0, 3, 1, 2).float().div_(255.0)}
    else:
        maps = np.stack([_read_label_map(targets[s], image_size, num_classes) for s in stems])
        extras = {"masks": torch.from_numpy(maps)}
    return ImageSet(images, stems, None, extras, source=f"paired:{root}")


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) float [0, 1] -> (N, H, W, 3) uint8."""
    pixels = (x.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous().numpy()


def _save_png(array: np.ndarray, target: Path) -> None:
    image = Image.fromarray(np.ascontiguousarray(array))  # uint8 (H,W,3) -> RGB, (H,W) -> L
    atomic_write(target, lambda p: image.save(p, format="PNG"))


def save_paired_folder(images: ImageSet, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``inputs/*.png`` and ``targets/*.png`` that :func:`load_paired_folder` reads back.

    The ground truth is ``extras["targets"]`` (images, written as RGB PNG) when present,
    else ``extras["masks"]`` (label maps, written as mode-L PNG: classes 0..255). File names
    are the sanitised ids (``synthetic:0:17`` -> ``synthetic_0_17.png``); a clash gets a
    ``-<position>`` suffix.

    Args:
        images: inputs in ``images`` and ground truth in ``extras``.
        path: destination folder (created when missing).
        overwrite: when False, existing images in ``inputs/`` or ``targets/`` are an error;
            when True they are deleted first.
    Returns:
        The destination folder.
    Raises:
        LeakprobeError: no ground truth, shapes that do not match, labels outside 0..255,
            or a non-empty destination without ``overwrite``.
    """
    n = len(images)
    if "targets" in images.extras:
        truth = images.extras["targets"]
        if not isinstance(truth, torch.Tensor) or truth.ndim != 4 or truth.shape[1] != 3:
            raise LeakprobeError("extras['targets'] must be a (N,3,H,W) tensor")
        is_mask = False
    elif "masks" in images.extras:
        truth = images.extras["masks"]
        if not isinstance(truth, torch.Tensor) or truth.ndim != 3:
            raise LeakprobeError("extras['masks'] must be a (N,H,W) tensor of class indices")
        if truth.numel() and (int(truth.min()) < 0 or int(truth.max()) > 255):
            raise LeakprobeError("label maps are written as 8-bit PNGs: classes must be 0..255")
        is_mask = True
    else:
        raise LeakprobeError("no ground truth to write: the set has no extras 'targets'/'masks'")
    if truth.shape[0] != n:
        raise LeakprobeError(f"{truth.shape[0]} ground-truth entries for {n} images")
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise LeakprobeError(f"cannot write a paired folder to {root}: it is a file")
    folders = (root / "inputs", root / "targets")
    existing = [f for d in folders if d.is_dir() for f in images_in(d)]
    remove_images(existing, root, overwrite=overwrite)
    for d in folders:
        d.mkdir(parents=True, exist_ok=True)
    inputs = _to_uint8(images.images)
    outputs = truth.detach().cpu().to(torch.uint8).numpy() if is_mask else _to_uint8(truth)
    used: set[str] = set()
    for i, image_id in enumerate(images.ids):
        name = safe_name(image_id)
        if name in used:
            name = f"{name[:-4]}-{i}.png"
        used.add(name)
        _save_png(inputs[i], folders[0] / name)
        _save_png(outputs[i], folders[1] / name)
    return root
