"""Decoding image files: the one place a file becomes pixels.

This module imports only PIL and numpy (no torch), so the worker processes that decode image
folders in parallel (:mod:`leakprobe.data.stream`) start in a fraction of a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from leakprobe.errors import LeakprobeError


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (alpha dropped, 16/32-bit gray scaled to 8 bits)."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        arr = np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    elif img.mode == "F":
        arr = np.clip(np.round(np.asarray(img, dtype=np.float64) * 255.0), 0, 255)
        img = Image.fromarray(arr.astype(np.uint8), mode="L")
    elif img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    return img if img.mode == "RGB" else img.convert("RGB")


def read_image(path: Path, image_size: int) -> np.ndarray:
    """One file -> (S, S, 3) uint8, resized with PIL bicubic (antialiased when shrinking)."""
    try:
        with Image.open(path) as img:
            img.verify()  # structural check (CRC, truncation) before decoding
        with Image.open(path) as img:
            img.load()
            upright = ImageOps.exif_transpose(img)
            rgb = _to_rgb(upright)
            rgb = rgb.resize((image_size, image_size), Image.Resampling.BICUBIC)
            return np.asarray(rgb, dtype=np.uint8).copy()
    except Image.DecompressionBombError as exc:
        raise LeakprobeError(f"{path}: image too large to load safely ({exc})") from exc
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error ...
        raise LeakprobeError(f"{path}: unreadable or truncated image ({exc})") from exc


def decode_files(paths: list[str], image_size: int) -> np.ndarray:
    """Files -> (n, 3, S, S) uint8 (channels first), each read with :func:`read_image`.

    The function the decoding worker processes run; an unreadable file raises
    :class:`~leakprobe.errors.LeakprobeError` naming it.
    """
    out = np.empty((len(paths), 3, image_size, image_size), dtype=np.uint8)
    for i, path in enumerate(paths):
        out[i] = read_image(Path(path), image_size).transpose(2, 0, 1)
    return out
