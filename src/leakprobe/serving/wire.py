"""How images and arrays travel over HTTP: base64 float32 ``.npy`` (lossless) or PNG.

Used by both the server (``leakprobe serve``) and the HTTP target, so the two always agree.
``.npy`` payloads are read with ``allow_pickle=False``: no object arrays, no code.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from leakprobe.errors import LeakprobeError


def encode_npy(array: torch.Tensor | np.ndarray) -> str:
    """A float32 array as base64 ``.npy`` bytes."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(np.asarray(array, dtype=np.float32)), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_npy(text: str, max_bytes: int | None = None) -> np.ndarray:
    """Inverse of :func:`encode_npy`; refuses oversized, pickled or non-float payloads."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError) as e:
        raise LeakprobeError("array payload is not valid base64") from e
    if max_bytes is not None and len(raw) > max_bytes:
        raise LeakprobeError(f"array payload of {len(raw)} bytes exceeds {max_bytes}")
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise LeakprobeError("array payload is not a .npy array") from e
    if arr.dtype.kind != "f":
        raise LeakprobeError(f"array payload must hold floats, got {arr.dtype}")
    return arr.astype(np.float32, copy=False)


def encode_png(image: torch.Tensor) -> str:
    """One (3, H, W) image in [0, 1] as base64 8-bit PNG (lossy: 256 levels)."""
    arr = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_png(text: str, max_pixels: int) -> torch.Tensor:
    """A base64 PNG/JPEG into (3, H, W) float in [0, 1]; refuses non-images and huge ones."""
    try:
        raw = base64.b64decode(text, validate=True)
        with Image.open(io.BytesIO(raw)) as img:
            if img.width * img.height > max_pixels:
                raise LeakprobeError(f"image of {img.width}x{img.height} exceeds the size limit")
            rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    except (binascii.Error, ValueError, TypeError, UnidentifiedImageError, OSError) as e:
        raise LeakprobeError("an image payload is not a decodable base64 image") from e
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
