"""Batched tensor augmentations with an explicit ``torch.Generator``.

Every operation works on a whole batch at once (no per-image Python loop), draws its random
parameters from the generator it is given (on the CPU, so results do not depend on the
device), and accepts images in [0, 1] on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_GRAY = (0.299, 0.587, 0.114)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize to ``size`` x ``size`` with antialiased bilinear interpolation (no-op if equal).

    The one resize of the package: queries to a target, loaded data sets, attack views.
    """
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)


def _uniform(shape: tuple[int, ...], low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=g)


def random_resized_crop(
    images: torch.Tensor,
    size: int,
    n_crops: int = 1,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Take ``n_crops`` random crops of every image and resize them to ``size``.

    A crop covers a fraction of the image area drawn uniformly from ``scale`` with a
    log-uniform aspect ratio from ``ratio``; all crops of all images are sampled with one
    ``grid_sample`` call (the crops of an image are stacked in one sampling grid, so the
    images are never copied).

    Args:
        images: (B, C, H, W).
        size: output side.
        n_crops: crops per image.
        scale: range of the crop's area as a fraction of the image.
        ratio: range of the crop's aspect ratio.
        flip_p: probability of a horizontal flip of each crop.
        generator: source of randomness (CPU).
    Returns:
        (B, n_crops, C, size, size).
    """
    b, c = images.shape[:2]
    g = generator if generator is not None else torch.default_generator
    shape = (b, n_crops)
    area = _uniform(shape, *scale, g)
    log_r = _uniform(shape, math.log(ratio[0]), math.log(ratio[1]), g)
    aspect = torch.exp(log_r)
    w = torch.sqrt(area * aspect).clamp(max=1.0)  # fraction of the image width
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(shape, generator=g) * 2 - 1) * (1 - w)
    cy = (torch.rand(shape, generator=g) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(shape, generator=g) < flip_p, -1.0, 1.0)
    return crops_from_boxes(images, size, torch.stack([cx, cy, w * flip, h], dim=-1))


def crops_from_boxes(images: torch.Tensor, size: int, boxes: torch.Tensor) -> torch.Tensor:
    """Resample boxes ``(cx, cy, half_w, half_h)`` in [-1, 1] units; (B,K,4) -> (B,K,C,S,S).

    A negative ``half_w`` mirrors the crop horizontally.
    """
    b, c = images.shape[:2]
    k = boxes.shape[1]
    boxes = boxes.to(images.device, images.dtype)
    base = torch.linspace(-1 + 1 / size, 1 - 1 / size, size, device=images.device)
    base = base.to(images.dtype)
    gx = boxes[..., 0, None, None] + boxes[..., 2, None, None] * base[None, None, None, :]
    gy = boxes[..., 1, None, None] + boxes[..., 3, None, None] * base[None, None, :, None]
    grid = torch.stack(torch.broadcast_tensors(gx, gy), dim=-1)  # (B, K, S, S, 2)
    out = F.grid_sample(
        images, grid.reshape(b, k * size, size, 2), mode="bilinear", align_corners=False
    )
    return out.reshape(b, c, k, size, size).transpose(1, 2)


def to_grayscale(images: torch.Tensor) -> torch.Tensor:
    """Luma of (..., 3, H, W) images, repeated over the three channels."""
    w = torch.tensor(_GRAY, device=images.device, dtype=images.dtype).view(3, 1, 1)
    return (images * w).sum(dim=-3, keepdim=True).expand_as(images)


def _rotate_hue(images: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``angle`` (radians, one per image) in YIQ space."""
    to_yiq = images.new_tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]]
    )
    from_yiq = torch.linalg.inv(to_yiq)
    cos, sin = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rot = torch.stack(
        [torch.stack([one, zero, zero], -1), torch.stack([zero, cos, -sin], -1),
         torch.stack([zero, sin, cos], -1)], -2
    )  # (N, 3, 3)
    mat = from_yiq @ rot @ to_yiq
    return torch.einsum("nij,njhw->nihw", mat, images)


def color_jitter(
    images: torch.Tensor,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    p: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """SimCLR-style colour jitter applied with probability ``p`` per image; (N,3,H,W)."""
    n = images.shape[0]
    dev, dt = images.device, images.dtype

    def factor(strength: float) -> torch.Tensor:
        return _uniform((n,), max(0.0, 1 - strength), 1 + strength, generator).to(dev, dt)

    apply = (torch.rand(n, generator=generator) < p).to(dev)
    b, c, s = factor(brightness), factor(contrast), factor(saturation)
    h = _uniform((n,), -hue, hue, generator).to(dev, dt) * 2 * math.pi
    out = images * b.view(-1, 1, 1, 1)
    mean = to_grayscale(out).mean(dim=(-3, -2, -1), keepdim=True)
    out = ((out - mean) * c.view(-1, 1, 1, 1) + mean).clamp(0, 1)
    gray = to_grayscale(out)
    out = ((out - gray) * s.view(-1, 1, 1, 1) + gray).clamp(0, 1)
    if hue > 0:
        out = _rotate_hue(out, h).clamp(0, 1)
    return torch.where(apply.view(-1, 1, 1, 1), out, images)


def gaussian_blur(
    images: torch.Tensor, sigma: tuple[float, float], p: float, generator: torch.Generator
) -> torch.Tensor:
    """Blur each image with its own sigma (grouped separable convolution), prob. ``p``."""
    n, c, hgt, wid = images.shape
    radius = max(1, int(math.ceil(2 * sigma[1])))
    sig = _uniform((n,), *sigma, generator).to(images.device, images.dtype)
    xs = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kern = torch.exp(-(xs[None] ** 2) / (2 * sig[:, None] ** 2))
    kern = (kern / kern.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (N*C, K)
    flat = images.reshape(1, n * c, hgt, wid)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kern[:, None, None, :], groups=n * c)
    flat = F.conv2d(flat, kern[:, None, :, None], groups=n * c)
    out = flat.reshape(n, c, hgt, wid)
    apply = (torch.rand(n, generator=generator) < p).to(images.device).view(-1, 1, 1, 1)
    return torch.where(apply, out, images)


def solarize(
    images: torch.Tensor, p: float, generator: torch.Generator, threshold: float = 0.5
) -> torch.Tensor:
    """Invert the pixels at or above ``threshold`` (BYOL's solarisation), probability ``p``."""
    apply = (torch.rand(images.shape[0], generator=generator) < p).to(images.device)
    out = torch.where(images >= threshold, 1 - images, images)
    return torch.where(apply.view(-1, 1, 1, 1), out, images)


@dataclass
class SSLAugmentation:
    """The SimCLR augmentation family as one config (``crop_scale`` is what SCSR narrows).

    Calling it on (B, C, H, W) images returns (B, n_views, C, size, size) views. ``blur_sigma``
    is in pixels; blur and solarisation draw random numbers only when their probability is
    positive, so the defaults give SimCLR's views. :class:`leakprobe.views.ViewSpec` builds
    one of these from a named recipe (``--views``).
    """

    size: int = 32
    crop_scale: tuple[float, float] = (0.08, 1.0)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    solarize_p: float = 0.0

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator, n_views: int = 1
    ) -> torch.Tensor:
        views = random_resized_crop(
            images, self.size, n_views, self.crop_scale, (self.crop_ratio[0], self.crop_ratio[1]),
            flip_p=self.flip_p, generator=generator,
        )
        b = views.shape[0]
        flat = views.reshape(b * n_views, *views.shape[2:])
        flat = color_jitter(
            flat, self.brightness, self.contrast, self.saturation, self.hue, self.jitter_p,
            generator,
        )
        gray = (torch.rand(flat.shape[0], generator=generator) < self.gray_p).to(flat.device)
        flat = torch.where(gray.view(-1, 1, 1, 1), to_grayscale(flat), flat)
        if self.blur_p > 0:
            flat = gaussian_blur(flat, self.blur_sigma, self.blur_p, generator)
        if self.solarize_p > 0:
            flat = solarize(flat, self.solarize_p, generator)
        return flat.reshape(b, n_views, *flat.shape[1:])
