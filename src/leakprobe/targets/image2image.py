"""The query interface of an image-to-image model (translation, denoising, segmentation)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

from leakprobe.device import resolve_device
from leakprobe.errors import LeakprobeError
from leakprobe.targets.base import TargetBase


@runtime_checkable
class ImageToImage(Protocol):
    """(B, C, H, W) in [0, 1] -> (B, C', H', W') in [0, 1] (segmentation: class probabilities)."""

    input_size: int

    @property
    def queries(self) -> int:
        """Images queried so far."""
        ...

    def translate(self, images: torch.Tensor) -> torch.Tensor: ...


class ModuleTranslator(TargetBase):
    """Wrap a torch / TorchScript module (or a callable) as an :class:`ImageToImage` target.

    Outputs are checked once on a probe batch and on every query: 4-D, one per input, finite,
    within [0, 1] (a small tolerance is clipped). Queries are batched, run under
    ``torch.inference_mode`` and counted; a budget can be set (all of it
    :class:`~leakprobe.targets.base.TargetBase`'s).

    Args:
        module: the model, or a callable ``images -> images`` (run where it is).
        input_size: square side the model expects (default: ``module.input_size`` or 32).
        device: where to run it.
        batch_size: images per call, or ``"auto"`` (measured once for this model on this
            device: :func:`~leakprobe.targets.batching.auto_batch_size`).
        budget: optional maximum number of images queried.
        name: shown in reports and errors.
        query_precision: ``fp32`` (default), ``bf16`` (autocast, answers as float32) or
            ``auto`` (bf16 where the device computes it natively).
    """

    kind = "image2image"

    def __init__(
        self,
        module: torch.nn.Module | Callable,
        input_size: int | None = None,
        device: str | torch.device = "auto",
        batch_size: int | str = 64,
        budget: int | None = None,
        name: str = "",
        *,
        query_precision: str = "fp32",
    ) -> None:
        self.device = resolve_device(device)
        if isinstance(module, torch.nn.Module):
            module = module.to(self.device).eval()
        self.module = module
        super().__init__(module, name=name, input_size=input_size, batch_size=batch_size,
                         budget=budget, query_precision=query_precision)
        answer = self.check_output(self._probe_call(self.module), 2)
        self.out_channels = int(answer.shape[1])
        self._settle(self.module, self.module, answer)

    def check_output(self, out: object, n: int) -> torch.Tensor:
        """Finite (n, C, H, W) images within [0, 1] (a tolerance of 1e-3 is clipped)."""
        out = self._check_tensor(out, n, 4, "(B,C,H,W) images", nonfinite="outputs")
        if out.min() < -1e-3 or out.max() > 1 + 1e-3:
            raise LeakprobeError(f"model {self.name} must return values in [0, 1], got "
                                 f"[{float(out.min()):.3g}, {float(out.max()):.3g}]")
        return out.clamp(0, 1)

    def translate(self, images: torch.Tensor) -> torch.Tensor:
        return self._batched_tensor(self.module, images)
