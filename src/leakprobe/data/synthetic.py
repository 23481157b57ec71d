"""A procedural image set with labels, segmentation masks and scene descriptions.

Each image is a textured colour-gradient background with one to three coloured shapes. The
class label is the shape of the largest object; the mask labels every pixel with its shape
(0 = background, 1 + shape index); the scene lists each object's shape, colour, size and
position so captions can be written from it. Generation is batched and seeded: the same
``(n, image_size, seed)`` always gives the same images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from leakprobe.data.images import ImageSet
from leakprobe.errors import LeakprobeError

SHAPES = ("circle", "square", "triangle", "diamond", "ring", "cross", "ellipse", "frame")
COLORS = {
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.15, 0.30, 0.90),
    "yellow": (0.95, 0.90, 0.15),
    "cyan": (0.15, 0.85, 0.90),
    "magenta": (0.85, 0.20, 0.85),
    "white": (0.95, 0.95, 0.95),
    "orange": (0.95, 0.55, 0.10),
}
MAX_OBJECTS = 3


def _shape_masks(kind: torch.Tensor, x: torch.Tensor, y: torch.Tensor, s: torch.Tensor):
    """Inside-masks of every shape kind at once; picks each object's own kind."""
    r = torch.sqrt(x**2 + y**2)
    ax, ay = x.abs(), y.abs()
    box = torch.maximum(ax, ay)
    inside = torch.stack(
        [
            r < s,
            box < s,
            (y < 0.6 * s) & (y > 2 * ax - s),
            ax + ay < s,
            (r < s) & (r > 0.55 * s),
            ((ax < s / 3) & (ay < s)) | ((ay < s / 3) & (ax < s)),
            (x / s) ** 2 + (y / (0.45 * s)) ** 2 < 1,
            (box < s) & (box > 0.6 * s),
        ]
    )  # (K, N, M, H, W)
    return inside.gather(0, kind[None, :, :, None, None].expand(1, *x.shape)).squeeze(0)


def _backgrounds(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """Smooth colour gradients plus a low-resolution per-image texture."""
    lin = torch.linspace(-1, 1, size)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    c0 = torch.rand(n, 3, 1, 1, generator=g) * 0.6
    c1 = torch.rand(n, 3, 1, 1, generator=g) * 0.6
    angle = torch.rand(n, 1, 1, 1, generator=g) * 2 * math.pi
    t = (torch.cos(angle) * xx + torch.sin(angle) * yy + 1) / 2
    base = c0 * (1 - t) + c1 * t
    coarse = torch.rand(n, 3, max(size // 8, 2), max(size // 8, 2), generator=g)
    texture = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    fine = torch.rand(n, 1, size, size, generator=g)
    return base + 0.25 * (texture - 0.5) + 0.08 * (fine - 0.5)


def _position_word(cx: float, cy: float) -> str:
    horiz = "left" if cx < -0.3 else "right" if cx > 0.3 else ""
    vert = "top" if cy < -0.3 else "bottom" if cy > 0.3 else ""
    return f"{vert} {horiz}".strip() or "center"


def _size_word(s: float) -> str:
    return "small" if s < 0.3 else "large" if s > 0.45 else "medium"


def make_synthetic(n: int, image_size: int = 32, seed: int = 0) -> ImageSet:
    """Generate ``n`` labelled images (8 shape classes) with masks and scene descriptions.

    Args:
        n: number of images (>= 1).
        image_size: square side in pixels.
        seed: generator seed; the same arguments always give the same set.
    Returns:
        ImageSet with ``labels`` (N,), ``extras["masks"]`` (N,H,W) int64 and
        ``extras["scenes"]`` (list of lists of object dicts).
    """
    if n < 1 or image_size < 8:
        raise LeakprobeError(f"synthetic:{n} at size {image_size}: need n >= 1 and size >= 8")
    g = torch.Generator().manual_seed(seed)
    m = MAX_OBJECTS
    n_obj = torch.randint(1, m + 1, (n,), generator=g)
    present = torch.arange(m)[None, :] < n_obj[:, None]  # (N, M)
    kind = torch.randint(0, len(SHAPES), (n, m), generator=g)
    color_idx = torch.randint(0, len(COLORS), (n, m), generator=g)
    size = 0.22 + 0.33 * torch.rand(n, m, generator=g)
    size[:, 0] += 0.1  # the first object is the largest: it defines the label
    size[:, 1:] = torch.minimum(size[:, 1:], size[:, :1] - 0.05)
    center = (torch.rand(n, m, 2, generator=g) * 2 - 1) * (1 - size[..., None] * 0.8)
    angle = torch.rand(n, m, generator=g) * (math.pi / 4) - math.pi / 8
    palette = torch.tensor(list(COLORS.values()))
    jitter = (torch.rand(n, m, 3, generator=g) - 0.5) * 0.12
    rgb = (palette[color_idx] + jitter).clamp(0, 1)  # (N, M, 3)

    lin = torch.linspace(-1, 1, image_size)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    dx = xx[None, None] - center[..., 0, None, None]
    dy = yy[None, None] - center[..., 1, None, None]
    cos, sin = torch.cos(angle)[..., None, None], torch.sin(angle)[..., None, None]
    x, y = cos * dx + sin * dy, -sin * dx + cos * dy
    inside = _shape_masks(kind, x, y, size[..., None, None]) & present[..., None, None]

    images = _backgrounds(n, image_size, g)
    masks = torch.zeros(n, image_size, image_size, dtype=torch.long)
    for j in range(m):  # the largest first, so smaller objects stay visible on top
        sel = inside[:, j, None]
        images = torch.where(sel, rgb[:, j, :, None, None].expand_as(images), images)
        masks = torch.where(inside[:, j], kind[:, j, None, None] + 1, masks)
    images = images.clamp(0, 1).float()

    names = list(COLORS)
    scenes = [
        [
            {
                "shape": SHAPES[int(kind[i, j])],
                "color": names[int(color_idx[i, j])],
                "size": _size_word(float(size[i, j])),
                "position": _position_word(float(center[i, j, 0]), float(center[i, j, 1])),
            }
            for j in range(int(n_obj[i]))
        ]
        for i in range(n)
    ]
    ids = [f"synthetic:{seed}:{i}" for i in range(n)]
    return ImageSet(
        images,
        ids,
        labels=kind[:, 0].clone(),
        extras={"masks": masks, "scenes": scenes},
        source=f"synthetic:{n}" if seed == 0 else f"synthetic:{n}:{seed}",
    )
