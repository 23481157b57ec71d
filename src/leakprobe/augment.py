"""Batched tensor augmentations with an explicit ``torch.Generator``.

Every operation works on a whole batch at once (no per-image Python loop), draws its random
parameters from the generator it is given (on the CPU, so results do not depend on the
device), and accepts images in [0, 1] on any device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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


# -- Cont-Steal's augmentation: RandAugment(2, 14), RandomCrop(padding=4), flip -------------

RAND_AUGMENT_OPS: tuple[str, ...] = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
    "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
)
"""torchvision ``RandAugment``'s op list, in its order (``_augmentation_space``)."""

_GEOMETRIC_OPS = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"})
_SIGNED_OPS = _GEOMETRIC_OPS | {"Brightness", "Color", "Contrast", "Sharpness"}
_TV_GRAY = (0.2989, 0.587, 0.114)  # torchvision's tensor ``rgb_to_grayscale`` weights


def rand_augment_magnitude(
    op: str, *, magnitude: int, num_bins: int = 31, height: int, width: int
) -> float:
    """The unsigned magnitude torchvision's ``RandAugment`` gives ``op`` at bin ``magnitude``.

    The tables of ``RandAugment._augmentation_space`` (computed the same way, in float32):
    shear ``linspace(0, 0.3)``, translation ``linspace(0, 150/331 * width)`` (``height`` for
    TranslateY) pixels, rotation ``linspace(0, 30)`` degrees, brightness / colour / contrast /
    sharpness ``linspace(0, 0.9)`` (the factor is ``1 +- m``), posterize
    ``8 - round(arange(bins) / ((bins - 1) / 4))`` bits kept, solarize ``linspace(1, 0)``: the
    threshold of ``linspace(255, 0)`` divided by 255 in float64, so that 8-bit levels compare
    as torchvision's uint8 ``>=`` does (136 of 255 at bin 14). Identity, AutoContrast and
    Equalize have no magnitude (0).
    """
    if op not in RAND_AUGMENT_OPS:
        raise ValueError(f"unknown RandAugment op {op!r}; known: {', '.join(RAND_AUGMENT_OPS)}")
    if num_bins < 2 or not 0 <= magnitude < num_bins:
        raise ValueError(f"need num_bins >= 2 and 0 <= magnitude < num_bins, got "
                         f"magnitude={magnitude}, num_bins={num_bins}")
    if op in ("ShearX", "ShearY"):
        table = torch.linspace(0.0, 0.3, num_bins)
    elif op == "TranslateX":
        table = torch.linspace(0.0, 150.0 / 331.0 * width, num_bins)
    elif op == "TranslateY":
        table = torch.linspace(0.0, 150.0 / 331.0 * height, num_bins)
    elif op == "Rotate":
        table = torch.linspace(0.0, 30.0, num_bins)
    elif op in ("Brightness", "Color", "Contrast", "Sharpness"):
        table = torch.linspace(0.0, 0.9, num_bins)
    elif op == "Posterize":
        table = 8 - (torch.arange(num_bins) / ((num_bins - 1) / 4)).round().int()
    elif op == "Solarize":
        return float(torch.linspace(255.0, 0.0, num_bins)[magnitude].item()) / 255.0
    else:
        return 0.0
    return float(table[magnitude].item())


def _per_image(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.device, like.dtype).view(-1, 1, 1, 1)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's ``_blend``: ``factor * a + (1 - factor) * b`` clamped to [0, 1]."""
    f = _per_image(factor, a)
    return (f * a + (1 - f) * b).clamp(0, 1)


def _tv_grayscale(images: torch.Tensor) -> torch.Tensor:
    """torchvision's tensor ``rgb_to_grayscale`` (0.2989, 0.587, 0.114), one channel kept."""
    if images.shape[-3] == 1:
        return images
    r, g, b = images.unbind(dim=-3)
    return (_TV_GRAY[0] * r + _TV_GRAY[1] * g + _TV_GRAY[2] * b).unsqueeze(-3)


def _adjust_brightness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``F.adjust_brightness``: blend with black."""
    return _blend(images, torch.zeros_like(images), factor)


def _adjust_saturation(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``F.adjust_saturation`` (RandAugment's Color): blend with the grayscale image."""
    return _blend(images, _tv_grayscale(images), factor)


def _adjust_contrast(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``F.adjust_contrast``: blend with the mean of the grayscale image (one per image)."""
    mean = _tv_grayscale(images).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(images, mean, factor)


def _adjust_sharpness(images: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``F.adjust_sharpness``: blend with PIL's SMOOTH filter (3x3, centre 5, sum 13).

    The border pixels of the degenerate image are the image's own (as torchvision and PIL);
    images of side <= 2 are returned as they are.
    """
    c, h, w = images.shape[-3:]
    if h <= 2 or w <= 2:
        return images
    kernel = torch.ones(3, 3, device=images.device, dtype=images.dtype)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(c, 1, 3, 3)
    blurred = images.clone()
    blurred[..., 1:-1, 1:-1] = F.conv2d(images, kernel, groups=c)
    return _blend(images, blurred, factor)


def _to_levels(images: torch.Tensor) -> torch.Tensor:
    """8-bit levels ``round(255 x)`` (exact for images that came from uint8 by ``/ 255``)."""
    return (images * 255).round().clamp(0, 255)


def _posterize(images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """``F.posterize``: keep the top ``bits`` (one per image) of each 8-bit level.

    Images drawing 8 bits are returned unchanged (the exact identity, also off the 8-bit grid).
    """
    step = _per_image(2.0 ** (8 - bits.double()), images)
    out = torch.floor(_to_levels(images) / step) * step / 255
    return torch.where(_per_image(bits, images) >= 8, images, out)


def _solarize(images: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """``F.solarize``: invert the pixels at or above ``threshold`` (one per image, in [0, 1])."""
    return torch.where(images >= _per_image(threshold, images), 1 - images, images)


def _autocontrast(images: torch.Tensor) -> torch.Tensor:
    """``F.autocontrast``: stretch every channel to [0, 1]; constant channels are kept."""
    lo = images.amin(dim=(-2, -1), keepdim=True)
    hi = images.amax(dim=(-2, -1), keepdim=True)
    flat = hi <= lo
    scale = torch.where(flat, torch.ones_like(hi), 1 / torch.where(flat, torch.ones_like(hi),
                                                                    hi - lo))
    lo = torch.where(flat, torch.zeros_like(lo), lo)
    return ((images - lo) * scale).clamp(0, 1)


def _equalize(images: torch.Tensor) -> torch.Tensor:
    """``F.equalize`` (PIL ``ImageOps.equalize``) per channel on 8-bit levels, batched.

    One histogram per (image, channel) by ``scatter_add``; ``step = (pixels - count of the
    highest level present) // 255``; the level ``i`` maps to ``(cumsum(hist)[i - 1] + step // 2)
    // step`` (clamped to 255), in integers as torchvision. A channel with ``step == 0`` (one
    level, or too few pixels) is returned unchanged.
    """
    n, c, h, w = images.shape
    levels = _to_levels(images).long().reshape(n * c, h * w)
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=images.device)
    hist.scatter_add_(1, levels, torch.ones_like(levels))
    top = hist.gather(1, levels.amax(dim=1, keepdim=True))  # count of the highest level
    step = torch.div(h * w - top, 255, rounding_mode="floor")  # (n*c, 1)
    safe = step.clamp(min=1)
    lut = torch.div(hist.cumsum(1) + torch.div(step, 2, rounding_mode="floor"), safe,
                    rounding_mode="floor")
    lut = F.pad(lut, (1, 0))[:, :-1].clamp(0, 255)
    out = lut.gather(1, levels).to(images.dtype) / 255
    out = torch.where(step == 0, images.reshape(n * c, h * w), out)
    return out.reshape(n, c, h, w)


def _affine_nearest(images: torch.Tensor, theta: torch.Tensor, fill: float) -> torch.Tensor:
    """Resample with per-image inverse affine maps, as torchvision's tensor ``affine``.

    ``theta`` (N, 2, 3) maps output to input pixel coordinates measured from the image centre
    (torchvision's ``_get_inverse_affine_matrix`` convention); pixel centres sit at
    ``i + 0.5 - side / 2`` and the grid is sampled with ``grid_sample(mode="nearest",
    align_corners=False)`` (torchvision's ``_gen_affine_grid``). Pixels from outside the image
    get ``fill`` (torchvision's mask channel for a non-zero fill).
    """
    n, c, h, w = images.shape
    dev = images.device
    dt = images.dtype if images.dtype == torch.float64 else torch.float32
    t = theta.to(dev, dt)
    xs = torch.arange(w, device=dev, dtype=dt) + 0.5 - w / 2
    ys = torch.arange(h, device=dev, dtype=dt) + 0.5 - h / 2
    xs, ys = xs.view(1, 1, w), ys.view(1, h, 1)

    def row(k: int, half: float) -> torch.Tensor:
        coef = t[:, k].view(n, 3, 1, 1)
        return (coef[:, 0] * xs + coef[:, 1] * ys + coef[:, 2]) / half

    grid = torch.stack(torch.broadcast_tensors(row(0, w / 2), row(1, h / 2)), dim=-1)
    src = images.to(dt)
    if fill != 0:
        src = torch.cat([src, torch.ones_like(src[:, :1])], dim=1)
    out = F.grid_sample(src, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    if fill != 0:
        out = torch.where(out[:, -1:] < 0.5, torch.full_like(out[:, :-1], fill), out[:, :-1])
    return out.to(images.dtype)


def _geometric_theta(op: str, value: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """torchvision's inverse affine matrices (N, 2, 3) of one geometric op, signed values.

    ShearX / ShearY: ``F.affine(shear=degrees(atan(m)), center=[0, 0])`` (shear about the
    top-left corner): ``x_in = x + m * (y + H/2)`` / ``y_in = y + m * (x + W/2)``.
    TranslateX / TranslateY: ``translate=int(m)`` pixels. Rotate: ``F.rotate(m)`` degrees,
    counter-clockwise about the centre.
    """
    v = value.double()
    one, zero = torch.ones_like(v), torch.zeros_like(v)
    if op == "ShearX":
        rows = [[one, v, v * height / 2], [zero, one, zero]]
    elif op == "ShearY":
        rows = [[one, zero, zero], [v, one, v * width / 2]]
    elif op == "TranslateX":
        rows = [[one, zero, -torch.trunc(v)], [zero, one, zero]]
    elif op == "TranslateY":
        rows = [[one, zero, zero], [zero, one, -torch.trunc(v)]]
    elif op == "Rotate":
        rad = torch.deg2rad(v)
        cos, sin = torch.cos(rad), torch.sin(rad)
        rows = [[cos, -sin, zero], [sin, cos, zero]]
    else:
        raise ValueError(f"not a geometric op: {op!r}")
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def _photometric(op: str, images: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    if op == "Brightness":
        return _adjust_brightness(images, 1 + value)
    if op == "Color":
        return _adjust_saturation(images, 1 + value)
    if op == "Contrast":
        return _adjust_contrast(images, 1 + value)
    if op == "Sharpness":
        return _adjust_sharpness(images, 1 + value)
    if op == "Posterize":
        return _posterize(images, value.round().long())
    if op == "Solarize":
        return _solarize(images, value)
    if op == "AutoContrast":
        return _autocontrast(images)
    if op == "Equalize":
        return _equalize(images)
    raise ValueError(f"not a photometric op: {op!r}")


def rand_augment(
    images: torch.Tensor,
    *,
    generator: torch.Generator,
    num_ops: int = 2,
    magnitude: int = 14,
    num_bins: int = 31,
    fill: float = 0.0,
    ops: Sequence[str] | None = None,
) -> torch.Tensor:
    """torchvision's ``RandAugment(num_ops, magnitude, num_magnitude_bins)``, batched.

    The Cont-Steal reference code (Sha et al., CVPR 2023; ``zeyangsha/Cont-Steal``,
    ``utils.py``, ``random_transform``) uses ``RandAugment(2, 14)`` with torchvision's other
    defaults (31 bins, nearest interpolation, zero fill). Every image independently draws
    ``num_ops`` ops uniformly from :data:`RAND_AUGMENT_OPS` (with replacement) and applies them
    in order; a signed op's magnitude (:func:`rand_augment_magnitude`) is negated with
    probability 0.5. Each round is one pass: the images that drew an op are gathered and
    transformed together, and all geometric ops of the round share one ``grid_sample``.

    The ops follow torchvision's tensor functionals on [0, 1] floats: ``affine`` / ``rotate``
    with nearest sampling on torchvision's grid (see :func:`_affine_nearest`); ``adjust_*`` as
    blends clamped to [0, 1] with torchvision's grayscale weights (0.2989, 0.587, 0.114);
    ``solarize`` with ``x >= threshold``; ``autocontrast`` per channel (min/max); ``equalize``
    and ``posterize`` on the 8-bit levels ``round(255 x)`` (exact for images that came from
    uint8, as after ``ToTensor``).

    Where it differs from the reference (PIL images): values are not rounded to 8 bits
    between ops (equalize and posterize round their input); PIL's Color / Contrast use its
    integer luma (0.299, 0.587, 0.114) and Contrast a rounded mean; nearest sampling breaks
    exact half-pixel ties as ``grid_sample`` does; the random stream is this generator's,
    drawn per round for the whole batch (op index, then sign), not torchvision's global one.

    Args:
        images: (N, C, H, W) in [0, 1] (C = 3, or 1: Color is then the identity), any device.
        generator: CPU generator; every random number comes from it, so the draw does not
            depend on the device.
        num_ops: ops applied in sequence to every image.
        magnitude: magnitude bin, ``0 <= magnitude < num_bins`` (14 in Cont-Steal).
        num_bins: torchvision's ``num_magnitude_bins``.
        fill: value of the pixels that geometric ops bring in from outside the image.
        ops: the op names to draw from (default: all of :data:`RAND_AUGMENT_OPS`, as
            torchvision); a subset is for tests and ablations.
    Returns:
        (N, C, H, W) in [0, 1], same device and dtype.
    """
    names = RAND_AUGMENT_OPS if ops is None else tuple(ops)
    if not names:
        raise ValueError("ops must name at least one RandAugment op")
    if images.ndim != 4:
        raise ValueError(f"expected (N, C, H, W) images, got shape {tuple(images.shape)}")
    n, _, h, w = images.shape
    table = {op: rand_augment_magnitude(op, magnitude=magnitude, num_bins=num_bins, height=h,
                                        width=w) for op in names}
    out = images
    for _ in range(num_ops):
        choice = torch.randint(len(names), (n,), generator=generator)
        sign = torch.where(torch.randint(2, (n,), generator=generator) == 1, -1.0, 1.0)
        sign = sign.double()
        new = out.clone()
        geo_idx: list[torch.Tensor] = []
        geo_theta: list[torch.Tensor] = []
        for k, op in enumerate(names):
            if op == "Identity":
                continue
            idx = (choice == k).nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            value = torch.full((idx.numel(),), table[op], dtype=torch.float64)
            if op in _SIGNED_OPS:
                value = value * sign[idx]
            if op in _GEOMETRIC_OPS:
                geo_idx.append(idx)
                geo_theta.append(_geometric_theta(op, value, h, w))
                continue
            dev_idx = idx.to(images.device)
            new.index_copy_(0, dev_idx, _photometric(op, out.index_select(0, dev_idx), value))
        if geo_idx:
            dev_idx = torch.cat(geo_idx).to(images.device)
            moved = _affine_nearest(out.index_select(0, dev_idx), torch.cat(geo_theta), fill)
            new.index_copy_(0, dev_idx, moved)
        out = new
    return out


def pad_random_crop(
    images: torch.Tensor, *, padding: int = 4, generator: torch.Generator
) -> torch.Tensor:
    """torchvision's ``RandomCrop(size, padding=padding)`` with size = the image's, batched.

    Zero-pads every side by ``padding`` and crops H x W back at an offset drawn per image
    (top, then left, each uniform in ``[0, 2 * padding]``, as ``RandomCrop.get_params``), by
    one gather. ``padding == 0`` returns the images and draws nothing.

    Args:
        images: (N, C, H, W), any device.
        padding: pixels of zero padding on each side.
        generator: CPU generator of the offsets.
    Returns:
        (N, C, H, W): each image shifted by (top - padding, left - padding), zeros entering.
    """
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if padding == 0:
        return images
    n, _, h, w = images.shape
    top = torch.randint(2 * padding + 1, (n,), generator=generator)
    left = torch.randint(2 * padding + 1, (n,), generator=generator)
    padded = F.pad(images, (padding, padding, padding, padding))
    dev = images.device
    rows = (top[:, None] + torch.arange(h)).to(dev)
    cols = (left[:, None] + torch.arange(w)).to(dev)
    batch = torch.arange(n, device=dev)
    out = padded[batch[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


@dataclass
class ContStealAugmentation:
    """Cont-Steal's query views (Sha et al., CVPR 2023; reference code ``utils.py``,
    ``random_transform``): ``Compose([Resize((size, size)), RandAugment(2, 14),
    RandomCrop(size, padding=4), RandomHorizontalFlip(), ToTensor()])``.

    Calling it on (B, C, H, W) images in [0, 1] returns (B, n_views, C, size, size) views in
    [0, 1]: :func:`resize`, then for every view independently :func:`rand_augment`
    (``num_ops``, ``magnitude`` of torchvision's 31 bins), :func:`pad_random_crop`
    (``padding``) and a horizontal flip with probability ``flip_p``. All views of the batch
    are made in one batched pass; all randomness comes from the (CPU) generator.
    """

    size: int = 32
    num_ops: int = 2
    magnitude: int = 14
    padding: int = 4
    flip_p: float = 0.5

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator, n_views: int = 1
    ) -> torch.Tensor:
        x = resize(images, self.size).clamp(0, 1)
        b = x.shape[0]
        flat = x.unsqueeze(1).expand(b, n_views, *x.shape[1:]).reshape(b * n_views, *x.shape[1:])
        flat = rand_augment(flat, generator=generator, num_ops=self.num_ops,
                            magnitude=self.magnitude)
        flat = pad_random_crop(flat, padding=self.padding, generator=generator)
        flip = (torch.rand(flat.shape[0], generator=generator) < self.flip_p).to(flat.device)
        flat = torch.where(flip.view(-1, 1, 1, 1), flat.flip(-1), flat).clamp(0, 1)
        return flat.reshape(b, n_views, *flat.shape[1:])
