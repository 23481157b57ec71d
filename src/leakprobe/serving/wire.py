"""How images and arrays travel over HTTP: base64 ``.npy`` (uint8 or float32) or PNG.

Used by both the server (``leakprobe serve``) and the HTTP target, so the two always agree.

Images go out as one base64 ``.npy`` array of shape (B, 3, H, W), whose header names its
dtype:

- ``uint8`` (the compact form, ``npy-uint8``): pixel ``k`` stands for ``k / 255``. An image
  already on the 8-bit grid (decoded from a file, or a view the steal quantised) travels
  exactly, in a quarter of float32's bytes; any other image moves by at most 1/510 per
  pixel (:func:`quantise` rounds to the nearest level).
- ``float32`` (``npy-float32``): lossless for any image, 4 bytes a pixel.

PNGs (8-bit, one per image, ``png``) are accepted too. Answers (embeddings, outputs) travel
as float32 ``.npy`` or JSON numbers. Every ``.npy`` payload is read with
``allow_pickle=False`` (no object arrays, no code), and the server checks its header (shape,
dtype, byte count) against its limits before a byte of pixel data is decoded.

Texts (image-text services, ``POST /v1/embed_texts``) travel as a JSON list of strings,
``{"texts": [...]}``, under two limits: the number of texts (``max_texts``) and their total
length in characters (``max_text_chars``). :func:`decode_texts` checks a request against both;
:func:`text_chunks` splits a client's texts into requests within them.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from leakprobe.errors import LeakprobeError

#: What ``GET /v1/info`` lists under ``encodings``: the image forms a server decodes.
ENCODINGS = ("npy-uint8", "npy-float32", "png")
#: The bytes a ``.npy`` header takes (format 1.0 pads it to a multiple of 64; 128 in practice).
NPY_HEADER_BYTES = 128
#: The largest quantisation error of :func:`quantise`, per pixel: half of one 8-bit level.
QUANTISATION_ERROR = 1 / 510


class PayloadTooLarge(LeakprobeError):
    """A payload over one of the server's limits (answered 413).

    Attributes:
        limit: the :class:`~leakprobe.serving.server.ServeConfig` field exceeded
            (``max_body_bytes``, ``max_batch``, ``max_image_side``, ``max_texts`` or
            ``max_text_chars``).
    """

    def __init__(self, message: str, *, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


def quantise(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] as uint8 levels ``round(255 x)`` (each pixel moves <= 1/510)."""
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


def dequantise(levels: torch.Tensor) -> torch.Tensor:
    """uint8 levels as float32 images ``k / 255`` (the same floats a decoded file gives)."""
    return levels.float().div_(255.0)


def on_grid(images: torch.Tensor) -> bool:
    """Whether every pixel is exactly ``k / 255``: uint8 then carries the images losslessly."""
    images = images.detach().float()
    return bool(torch.equal(dequantise(quantise(images)), images))


def _b64decode(text: object) -> bytes:
    try:
        return base64.b64decode(text, validate=True)  # type: ignore[arg-type]
    except (binascii.Error, ValueError, TypeError) as e:
        raise LeakprobeError("array payload is not valid base64") from e


def _npy_bytes(array: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def encode_npy(array: torch.Tensor | np.ndarray) -> str:
    """A float32 array as base64 ``.npy`` bytes (lossless)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return _npy_bytes(np.asarray(array, dtype=np.float32))


def encode_uint8(images: torch.Tensor) -> str:
    """Images (B, 3, H, W) in [0, 1] as base64 ``.npy`` uint8 levels (see :func:`quantise`)."""
    return _npy_bytes(quantise(images).cpu().numpy())


def decode_npy(text: str, max_bytes: int | None = None) -> np.ndarray:
    """Inverse of :func:`encode_npy`; refuses oversized, pickled or non-float payloads."""
    raw = _b64decode(text)
    if max_bytes is not None and len(raw) > max_bytes:
        raise PayloadTooLarge(f"array payload of {len(raw)} bytes exceeds {max_bytes}",
                              limit="max_body_bytes")
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise LeakprobeError("array payload is not a .npy array") from e
    if arr.dtype.kind != "f":
        raise LeakprobeError(f"array payload must hold floats, got {arr.dtype}")
    return arr.astype(np.float32, copy=False)


def npy_header(raw: bytes) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` of ``.npy`` bytes, read without touching the data."""
    f = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise LeakprobeError(f"array payload: .npy format {version} is not supported")
    except (ValueError, OSError, EOFError) as e:
        raise LeakprobeError("array payload is not a .npy array") from e
    return tuple(int(s) for s in shape), np.dtype(dtype), f.tell()


def count_images(payload: object) -> int | None:
    """The images a request carries, read without decoding any: the length of its
    ``images`` list, or the first dimension its ``array``'s ``.npy`` header announces
    (only the header's bytes are base64-decoded). None when the payload is malformed (its
    full decoding then says why)."""
    if not isinstance(payload, dict):
        return None
    if isinstance(payload.get("images"), list) and "array" not in payload:
        return len(payload["images"])
    text = payload.get("array")
    if not isinstance(text, str):
        return None
    try:
        head = base64.b64decode(text[:4 * 1024], validate=True)  # 3 KiB: any 1.0/2.0 header
        shape, _, _ = npy_header(head)
    except (binascii.Error, ValueError, LeakprobeError):
        return None
    return shape[0] if shape else None


def decode_images(
    text: object, *, max_bytes: int | None = None, max_images: int | None = None,
    max_side: int | None = None,
) -> torch.Tensor:
    """A base64 ``.npy`` image batch (uint8 levels or floats) as float32 (B, 3, H, W).

    The header is checked first (shape (B, 3, H, W) with B >= 1, a float or uint8 dtype,
    ``B <= max_images``, sides ``<= max_side``, a byte count that matches), so nothing over
    a limit is ever decoded. uint8 levels ``k`` become ``k / 255``.

    Raises:
        PayloadTooLarge: over ``max_bytes``, ``max_images`` or ``max_side`` (a 413).
        LeakprobeError: anything malformed (a 400).
    """
    raw = _b64decode(text)
    if max_bytes is not None and len(raw) > max_bytes:
        raise PayloadTooLarge(f"array payload of {len(raw)} bytes exceeds {max_bytes}",
                              limit="max_body_bytes")
    shape, dtype, offset = npy_header(raw)
    if len(shape) != 4 or shape[1] != 3 or shape[0] == 0:
        raise LeakprobeError(f"images must be (B,3,H,W) with B >= 1, got {shape}")
    if dtype.hasobject or not (dtype.kind == "f" or dtype == np.uint8):
        raise LeakprobeError(f"array payload must hold floats or uint8, got {dtype}")
    if max_images is not None and shape[0] > max_images:
        raise PayloadTooLarge(f"{shape[0]} images exceed max_batch {max_images}",
                              limit="max_batch")
    if max_side is not None and max(shape[2:]) > max_side:
        raise PayloadTooLarge(f"image side {max(shape[2:])} exceeds {max_side}",
                              limit="max_image_side")
    if len(raw) - offset != math.prod(shape) * dtype.itemsize:
        raise LeakprobeError(f"array payload holds {len(raw) - offset} data bytes, its header "
                             f"announces {math.prod(shape) * dtype.itemsize}")
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise LeakprobeError("array payload is not a .npy array") from e
    if arr.dtype == np.uint8:
        return dequantise(torch.from_numpy(np.ascontiguousarray(arr)))
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def encode_png(image: torch.Tensor) -> str:
    """One (3, H, W) image in [0, 1] as base64 8-bit PNG (lossy: 256 levels)."""
    arr = quantise(image).permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def decode_png(text: str, max_pixels: int, max_side: int | None = None) -> torch.Tensor:
    """A base64 PNG/JPEG into (3, H, W) float in [0, 1]; refuses non-images and huge ones.

    The size is read from the image's header: an image over ``max_pixels`` or ``max_side``
    raises :class:`PayloadTooLarge` before its pixels are decoded.
    """
    try:
        raw = base64.b64decode(text, validate=True)
        with Image.open(io.BytesIO(raw)) as img:
            if img.width * img.height > max_pixels:
                raise PayloadTooLarge(f"image of {img.width}x{img.height} exceeds the size "
                                      "limit", limit="max_image_side")
            if max_side is not None and max(img.width, img.height) > max_side:
                raise PayloadTooLarge(f"image side {max(img.width, img.height)} exceeds "
                                      f"{max_side}", limit="max_image_side")
            levels = np.array(img.convert("RGB"), dtype=np.uint8)
    except (binascii.Error, ValueError, TypeError, UnidentifiedImageError, OSError) as e:
        raise LeakprobeError("an image payload is not a decodable base64 image") from e
    return dequantise(torch.from_numpy(levels).permute(2, 0, 1)).contiguous()


def count_texts(payload: object) -> int | None:
    """The texts a request carries (the length of its ``texts`` list), None when malformed."""
    if isinstance(payload, dict) and isinstance(payload.get("texts"), list):
        return len(payload["texts"])
    return None


def decode_texts(payload: object, *, max_texts: int | None = None,
                 max_chars: int | None = None) -> list[str]:
    """The ``texts`` of a request, checked: a non-empty list of strings, at most
    ``max_texts`` of them, at most ``max_chars`` characters in all.

    Raises:
        PayloadTooLarge: over ``max_texts`` or ``max_chars`` (a 413).
        LeakprobeError: anything malformed (a 400).
    """
    if not isinstance(payload, dict):
        raise LeakprobeError("request body must be a JSON object")
    texts = payload.get("texts")
    if not isinstance(texts, list):
        raise LeakprobeError("request needs 'texts': a list of strings")
    if not texts:
        raise LeakprobeError("'texts' must hold at least one string")
    if max_texts is not None and len(texts) > max_texts:
        raise PayloadTooLarge(f"{len(texts)} texts exceed max_texts {max_texts}",
                              limit="max_texts")
    if not all(isinstance(t, str) for t in texts):
        kinds = sorted({type(t).__name__ for t in texts if not isinstance(t, str)})
        raise LeakprobeError(f"'texts' must hold strings only, got {', '.join(kinds)}")
    total = sum(len(t) for t in texts)
    if max_chars is not None and total > max_chars:
        raise PayloadTooLarge(f"texts of {total} characters exceed max_text_chars {max_chars}",
                              limit="max_text_chars")
    return texts


def text_chunks(texts: list[str], *, max_texts: int, max_chars: int | None,
                max_bytes: int) -> list[list[str]]:
    """``texts`` in order, split into requests of at most ``max_texts`` texts, ``max_chars``
    characters and ``max_bytes`` bytes of JSON-encoded strings each.

    Raises:
        LeakprobeError: one text alone over ``max_chars`` or ``max_bytes``.
    """
    chunks: list[list[str]] = []
    chunk: list[str] = []
    chars = size = 0
    for i, text in enumerate(texts):
        n = len(json.dumps(text)) + 2  # its JSON string and the ", " after it
        if (max_chars is not None and len(text) > max_chars) or n > max_bytes:
            limit = (f"max_text_chars {max_chars}" if max_chars is not None
                     and len(text) > max_chars else f"max_body_bytes {max_bytes}")
            raise LeakprobeError(f"text {i} ({len(text)} characters) is over the server's "
                                 f"{limit} on its own")
        if chunk and (len(chunk) >= max_texts or size + n > max_bytes
                      or (max_chars is not None and chars + len(text) > max_chars)):
            chunks.append(chunk)
            chunk, chars, size = [], 0, 0
        chunk.append(text)
        chars += len(text)
        size += n
    if chunk:
        chunks.append(chunk)
    return chunks
