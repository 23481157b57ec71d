"""Per-pixel input features for the predictability error (Shafran, Peleg, Hoshen, ICCV 2021).

The predictability error of a sample is how well a *linear* regression from per-pixel
features of the model's input predicts the ground-truth output pixels: hard-to-predict
samples have large reconstruction errors whether or not they were trained on, so the
membership error subtracts it. The paper takes the features from an ImageNet Wide
ResNet-50-2 (layers 1-4 resized to 56x56, 3840 features per pixel). Two extractors here:

- :class:`BuiltinPixelFeatures` needs no weights: hand-made local colour, blur, gradient,
  variance and fixed random-filter responses (fast, deterministic, works offline).
- :class:`BackbonePixelFeatures` wraps any registered model with a ``features(x)`` method
  returning a list of feature maps (``wide-resnet50-2`` with torchvision's ImageNet weights
  converted to safetensors reproduces the paper's extractor).

Both map images (B, 3, H, W) in [0, 1] to features (B, F, S, S) at a common resolution S,
computed on the extractor's device and returned on the device of the input.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from leakprobe.errors import LeakprobeError

BLUR_SIGMAS = (1.0, 2.0, 4.0)
VARIANCE_WINDOWS = (3, 7)
RANDOM_KERNEL_SIZES = (3, 5)
_LUMA = (0.299, 0.587, 0.114)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    """1-D normalised Gaussian of radius ceil(3 sigma)."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    return k / k.sum()


def _pad(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Replicate padding (valid for any image size, unlike reflect)."""
    return F.pad(x, [radius, radius, radius, radius], mode="replicate")


def _depthwise(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Same 2-D kernel (k, k) applied to every channel, same-size output."""
    c = x.shape[1]
    w = kernel.to(x)[None, None].expand(c, 1, -1, -1)
    return F.conv2d(_pad(x, kernel.shape[-1] // 2), w, groups=c)


def _blur(x: torch.Tensor, k1d: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of every channel."""
    c, r = x.shape[1], k1d.shape[0] // 2
    k = k1d.to(x)
    wx = k.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    wy = k.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    x = F.conv2d(F.pad(x, [r, r, 0, 0], mode="replicate"), wx, groups=c)
    return F.conv2d(F.pad(x, [0, 0, r, r], mode="replicate"), wy, groups=c)


def sobel(gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical Sobel derivatives of (B, 1, H, W) maps (replicate border)."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=gray.device)
    w = torch.stack([kx, kx.t()])[:, None].to(gray.dtype)
    g = F.conv2d(_pad(gray, 1), w)
    return g[:, :1], g[:, 1:]


class BuiltinPixelFeatures(nn.Module):
    """Hand-made per-pixel features that need no weights.

    For images (B, 3, H, W) in [0, 1] the features, in this channel order, are:

    1. the RGB values (3);
    2. Gaussian-blurred RGB at sigma 1, 2 and 4 pixels (9);
    3. at two scales (full resolution and 2x average-pooled), the Sobel gradient of the
       luminance: magnitude, and the orientation as (cos, sin) weighted by
       ``mag / (mag + 0.1)`` so flat regions get 0 instead of a random angle (6);
    4. the local variance of the luminance in 3x3 and 7x7 windows (2);
    5. ``num_random`` fixed random 3x3 and ``num_random`` 5x5 zero-mean, unit-norm filters
       over the normalised RGB, followed by ReLU, at two scales (full and 2x pooled)
       (4 * num_random).

    Every map is computed with batched convolutions and resized to ``size`` x ``size`` with
    bilinear interpolation. The random filters come from a seeded ``torch.Generator``, so
    the same ``(num_random, seed)`` always gives the same features.

    Args:
        size: common output resolution S; None keeps each batch's input size.
        num_random: random filters per kernel size (K).
        seed: seed of the random filters.
    """

    random_3: torch.Tensor  # buffers registered in __init__ (one per RANDOM_KERNEL_SIZES)

    def __init__(self, size: int | None = None, num_random: int = 8, seed: int = 0) -> None:
        super().__init__()
        if size is not None and (not isinstance(size, int) or size < 1):
            raise LeakprobeError(f"pixel feature size must be a positive integer, got {size!r}")
        if num_random < 0:
            raise LeakprobeError(f"num_random must be >= 0, got {num_random}")
        self.size = size
        self.num_random = num_random
        self.seed = seed
        self._blur_kernels = [_gaussian_kernel(s) for s in BLUR_SIGMAS]
        g = torch.Generator().manual_seed(seed)
        for k in RANDOM_KERNEL_SIZES:
            w = torch.randn(num_random, 3, k, k, generator=g)
            w = w - w.mean(dim=(1, 2, 3), keepdim=True)
            w = w / w.flatten(1).norm(dim=1).clamp_min(1e-8)[:, None, None, None]
            self.register_buffer(f"random_{k}", w, persistent=False)

    @property
    def num_features(self) -> int:
        return 3 + 3 * len(BLUR_SIGMAS) + 6 + len(VARIANCE_WINDOWS) + 4 * self.num_random

    def describe(self) -> dict[str, Any]:
        """What the report records about this extractor."""
        return {"name": "builtin", "num_features": self.num_features,
                "resolution": self.size if self.size is not None else "input",
                "weights": None, "num_random": self.num_random, "seed": self.seed}

    def _gradients(self, gray: torch.Tensor) -> torch.Tensor:
        gx, gy = sobel(gray)
        mag = torch.sqrt(gx**2 + gy**2 + 1e-12)
        weight = 1.0 / (mag + 0.1)
        return torch.cat([mag, gx * weight, gy * weight], dim=1)

    def _random(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for k in RANDOM_KERNEL_SIZES:
            w = getattr(self, f"random_{k}")
            if w.shape[0]:
                outs.append(F.relu(F.conv2d(_pad(x, k // 2), w.to(x))))
        return torch.cat(outs, dim=1) if outs else x[:, :0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features (B, F, S, S) of images (B, 3, H, W) in [0, 1]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise LeakprobeError(f"images must be (B,3,H,W), got shape {tuple(images.shape)}")
        device = self.random_3.device
        x = images.to(device=device, dtype=torch.float32)
        h, w = x.shape[-2:]
        size = (self.size, self.size) if self.size is not None else (h, w)
        gray = (x * torch.tensor(_LUMA, device=device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        small = F.avg_pool2d(x, 2) if min(h, w) >= 2 else x
        small_gray = F.avg_pool2d(gray, 2) if min(h, w) >= 2 else gray
        maps = [x] + [_blur(x, k) for k in self._blur_kernels]
        maps += [self._gradients(gray), self._gradients(small_gray)]
        for win in VARIANCE_WINDOWS:
            box = torch.full((win, win), 1.0 / win**2)
            mean = _depthwise(gray, box)
            maps.append((_depthwise(gray**2, box) - mean**2).clamp_min(0.0))
        maps += [self._random((x - 0.5) / 0.25), self._random((small - 0.5) / 0.25)]
        out = torch.cat([_resize(m, size) for m in maps], dim=1)
        return out.to(images.device)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class BackbonePixelFeatures(nn.Module):
    """Per-pixel features from a backbone's intermediate feature maps.

    Calls ``model.features(x)`` (a list of maps, e.g. layer1..layer4 of a ResNet), keeps the
    chosen ``layers`` (1-based), resizes each to ``size`` x ``size`` (bilinear) and
    concatenates their channels: 256 + 512 + 1024 + 2048 = 3840 features for
    ``wide-resnet50-2``, as in the paper.

    Args:
        model: a module with a ``features(x)`` method (eval mode is set here).
        layers: which maps of ``features`` to keep, counted from 1.
        size: common output resolution S.
        input_size: images are resized (bilinear) to this side before the backbone; None
            uses the model's ``input_size`` attribute when it has one, else the images as
            they are.
        name: the name the report shows.
        weights: the weights file the report shows.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: tuple[int, ...] = (1, 2, 3, 4),
        size: int = 56,
        input_size: int | None = None,
        name: str | None = None,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        if not callable(getattr(model, "features", None)):
            raise LeakprobeError(
                f"{type(model).__name__} has no features(x) method: it cannot give pixel features"
            )
        if not layers or any(not isinstance(i, int) or i < 1 for i in layers):
            raise LeakprobeError(f"layers must be positive layer numbers, got {layers!r}")
        if not isinstance(size, int) or size < 1:
            raise LeakprobeError(f"pixel feature size must be a positive integer, got {size!r}")
        self.model = model.eval()
        self.layers = tuple(layers)
        self.size = size
        self.input_size = input_size if input_size is not None else getattr(
            model, "input_size", None)
        self.name = name or type(model).__name__
        self.weights = weights
        channels = getattr(model, "feature_channels", None)
        self._channels: list[int] | None = list(channels) if channels is not None else None
        if self._channels is not None:
            self._check_layers(len(self._channels))

    def _feature_maps(self, x: torch.Tensor) -> Sequence[torch.Tensor]:
        """``model.features(x)`` (``__init__`` checked that the model has that method)."""
        features = cast(Callable[[torch.Tensor], Sequence[torch.Tensor]], self.model.features)
        return features(x)

    def _check_layers(self, available: int) -> None:
        bad = [i for i in self.layers if i > available]
        if bad:
            raise LeakprobeError(
                f"{self.name} gives {available} feature maps; layers {bad} do not exist"
            )

    @property
    def num_features(self) -> int:
        if self._channels is None:
            device = next(self.model.parameters()).device
            side = self.input_size or 64
            with torch.no_grad():
                maps = self._feature_maps(torch.zeros(1, 3, side, side, device=device))
            self._channels = [int(m.shape[1]) for m in maps]
            self._check_layers(len(self._channels))
        return sum(self._channels[i - 1] for i in self.layers)

    def describe(self) -> dict[str, Any]:
        """What the report records about this extractor."""
        return {"name": self.name, "num_features": self.num_features, "resolution": self.size,
                "weights": self.weights, "layers": list(self.layers),
                "input_size": self.input_size}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features (B, F, size, size) of images (B, 3, H, W) in [0, 1]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise LeakprobeError(f"images must be (B,3,H,W), got shape {tuple(images.shape)}")
        device = next(self.model.parameters()).device
        x = images.to(device=device, dtype=torch.float32)
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size,) * 2:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False).clamp_(0.0, 1.0)
        with torch.no_grad():
            maps = self._feature_maps(x)
            self._check_layers(len(maps))
            out = torch.cat(
                [_resize(maps[i - 1].float(), (self.size, self.size)) for i in self.layers], dim=1
            )
        return out.to(images.device)


def create_pixel_features(
    name: str = "builtin",
    weights: str | Path | None = None,
    size: int | None = None,
    arch_kwargs: dict | None = None,
) -> BuiltinPixelFeatures | BackbonePixelFeatures:
    """Build a pixel feature extractor by name.

    Args:
        name: ``builtin``, or a registered architecture with a ``features`` method
            (``wide-resnet50-2``).
        weights: safetensors state dict for a backbone (required for one; e.g. torchvision's
            ImageNet weights converted with ``safetensors.torch.save_file``). When the file
            records the same architecture in its metadata (files written by leakprobe), its
            recorded ``arch_kwargs`` are used.
        size: common output resolution (builtin: default the input size; backbone: 56).
        arch_kwargs: architecture overrides (take precedence over recorded ones).
    Returns:
        The extractor (CPU, eval mode); call it on image batches.
    Raises:
        LeakprobeError: unknown name, missing or unreadable weights, weights that do not fit.
    """
    if name == "builtin":
        if weights is not None:
            raise LeakprobeError("the builtin pixel features take no weights file")
        return BuiltinPixelFeatures(size=size)
    from leakprobe.models import wide_resnet  # noqa: F401  (registers wide-resnet50-2)
    from leakprobe.models.registry import create_model, list_models

    if name not in list_models():
        raise LeakprobeError(
            f"unknown pixel feature extractor {name!r}: use 'builtin' or a registered "
            "architecture with a features() method (e.g. wide-resnet50-2)"
        )
    if weights is None:
        raise LeakprobeError(
            f"pixel features {name!r} need a weights file (safetensors state dict), e.g. "
            "torchvision's ImageNet weights converted to safetensors"
        )
    path = Path(weights)
    if not path.is_file():
        raise LeakprobeError(f"pixel feature weights {path} do not exist")
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise LeakprobeError(f"{path}: not a readable safetensors file ({e})") from e
    kwargs: dict = {}
    if meta.get("arch") == name:
        try:
            kwargs = json.loads(meta.get("arch_kwargs", "{}"))
        except json.JSONDecodeError:
            kwargs = {}
    kwargs.update(arch_kwargs or {})
    model = create_model(name, **kwargs)
    if not callable(getattr(model, "features", None)):
        raise LeakprobeError(f"architecture {name!r} has no features() method")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]
        raise LeakprobeError(
            f"{path}: weights do not fit architecture '{name}': {detail[:300]}"
        ) from e
    return BackbonePixelFeatures(model, size=size or 56, name=name, weights=str(path))
