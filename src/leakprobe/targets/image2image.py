"""The query interface of an image-to-image model (translation, denoising, segmentation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

from leakprobe.device import resolve_device
from leakprobe.errors import LeakprobeError
from leakprobe.targets.encoder import QueryCounter, check_images


@runtime_checkable
class ImageToImage(Protocol):
    """(B, C, H, W) in [0, 1] -> (B, C', H', W') in [0, 1] (segmentation: class probabilities)."""

    input_size: int
    queries: int

    def translate(self, images: torch.Tensor) -> torch.Tensor: ...


class ModuleTranslator:
    """Wrap a torch / TorchScript module as an :class:`ImageToImage` target.

    Outputs are checked once on a probe batch and on every query: 4-D, one per input, finite,
    within [0, 1] (a small tolerance is clipped). Queries are batched, run under
    ``torch.inference_mode`` and counted; a budget can be set.
    """

    def __init__(
        self,
        module: torch.nn.Module | Callable,
        input_size: int | None = None,
        device: str | torch.device = "auto",
        batch_size: int = 64,
        budget: int | None = None,
        name: str = "",
    ) -> None:
        self.device = resolve_device(device)
        if isinstance(module, torch.nn.Module):
            module = module.to(self.device).eval()
        self.module = module
        declared = getattr(module, "input_size", None)
        if input_size is not None and input_size < 1:
            raise LeakprobeError(f"--image-size must be >= 1, got {input_size}")
        self.input_size = int(input_size or (declared if isinstance(declared, int) else 32))
        if batch_size < 1:
            raise LeakprobeError(f"batch size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.counter = QueryCounter(budget)
        self.name = name or type(module).__name__
        probe = torch.rand(2, 3, self.input_size, self.input_size,
                           generator=torch.Generator().manual_seed(0))
        try:
            with torch.inference_mode():
                out = self.module(probe.to(self.device))
        except Exception as e:
            raise LeakprobeError(f"model {self.name} rejects (2,3,{self.input_size},"
                                 f"{self.input_size}) inputs: {str(e).splitlines()[0]}") from e
        self.out_channels = int(self._check(out, 2).shape[1])

    @property
    def queries(self) -> int:
        return self.counter.used

    def _check(self, out: object, n: int) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != n:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise LeakprobeError(f"model {self.name} must return (B,C,H,W) images, got {shape}")
        if not torch.isfinite(out).all():
            raise LeakprobeError(f"model {self.name} returned NaN/inf outputs")
        if out.min() < -1e-3 or out.max() > 1 + 1e-3:
            raise LeakprobeError(f"model {self.name} must return values in [0, 1], got "
                                 f"[{float(out.min()):.3g}, {float(out.max()):.3g}]")
        return out.clamp(0, 1)

    def translate(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        self.counter.charge(images.shape[0])
        outs = []
        with torch.inference_mode():
            for chunk in images.split(self.batch_size):
                out = self.module(chunk.to(self.device, torch.float32))
                outs.append(self._check(out, chunk.shape[0]).float().cpu())
        return torch.cat(outs)
