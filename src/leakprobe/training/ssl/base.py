"""What every self-supervised method shares: a backbone, an augmentation, a loss.

Every method splits its loss into three steps, so that one training loop serves plain
training and DP-SGD alike:

1. ``prepare(images, generator) -> SSLBatch``: augment (views, masks...) and run everything
   that takes no gradient (momentum/EMA teachers, queues), once for the whole batch.
2. ``student(*batch.inputs)``: the trainable forward pass. Row ``i`` of every input and of
   every output belongs to image ``i`` and depends on image ``i`` alone (no BatchNorm across
   images in DP mode), so the DP engine can run it per image with ``torch.func.vmap``.
3. ``objective(outputs, batch) -> scalar``: the loss of the whole batch from the student's
   outputs; this is where images meet (negatives, centering).

``loss`` chains the three. DP-SGD's clipping unit is then one training image: the gradient
of the batch loss that flows through that image's student pass (all of its views). Whether
the accountant's epsilon is then a guarantee is the method's ``dp_per_image_exact``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from leakprobe.augment import SSLAugmentation
from leakprobe.errors import LeakprobeError

StudentOutputs = tuple[torch.Tensor, ...]


@dataclass
class SSLBatch:
    """One prepared batch.

    Attributes:
        inputs: per-image tensors (leading dimension B) fed to ``student``.
        extras: anything computed without gradient that ``objective`` needs (teacher
            outputs, queue snapshots, targets...).
    """

    inputs: tuple[torch.Tensor, ...]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class SSLMethod(nn.Module):
    """Base class: subclasses hold only what is specific to them (loss, extra networks).

    Args:
        backbone: the encoder being trained; it must expose ``embed_dim``.
        augmentation: the view generator (its ``crop_scale`` is what SCSR narrows).
    """

    name: ClassVar[str] = ""
    # True when, under DP-SGD (after ``enable_dp``), adding or removing one training image
    # changes the summed clipped gradient of a step by at most the clipping norm C and nothing
    # else carries that image into later steps: each image's loss term depends on that image
    # and on DP outputs (stop-gradient teachers that average DP-trained weights) alone. Only
    # then is the accountant's epsilon a guarantee. False when images meet in ``objective``
    # (in-batch negatives) or through un-noised state (queues of keys).
    dp_per_image_exact: ClassVar[bool] = False
    # one line: why the accountant's epsilon is not a guarantee (when not exact)
    dp_caveat: ClassVar[str | None] = None

    def __init__(self, backbone: nn.Module, augmentation: SSLAugmentation) -> None:
        super().__init__()
        self.backbone = backbone
        self.augmentation = augmentation

    def prepare(self, images: torch.Tensor, generator: torch.Generator) -> SSLBatch:
        """Augment a batch of raw images in [0, 1] and run the no-gradient parts."""
        raise NotImplementedError

    def student(self, *inputs: Any, **kwargs: Any) -> StudentOutputs:
        """The trainable forward pass; rows of inputs and outputs are images.

        It is called as ``student(*batch.inputs)``: a method names its own tensors (SimCLR one
        ``views``, MAE ``crops, ids_keep, ids_restore``), hence the open signature here.
        """
        raise NotImplementedError

    def objective(self, outputs: StudentOutputs, batch: SSLBatch) -> torch.Tensor:
        """The batch loss (a mean over images) from the student's outputs."""
        raise NotImplementedError

    def forward(self, *inputs: torch.Tensor) -> StudentOutputs:
        # torch.func.functional_call runs ``forward``: the DP engine calls the student here.
        return self.student(*inputs)

    def loss(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The training loss of one batch of raw images in [0, 1]."""
        batch = self.prepare(images, generator)
        return self.objective(self.student(*batch.inputs), batch)

    def after_step(self, progress: float) -> None:
        """Called after each optimiser step with training progress in [0, 1] (EMA updates)."""

    def enable_dp(self) -> None:
        """Called once by the DP-SGD engine before training: switch off whatever would carry
        training images into later steps without noise (DINO freezes its centre)."""

    def export_backbone(self) -> nn.Module:
        """The encoder saved as the target (the trained backbone; DINO: its teacher's)."""
        return self.backbone


def flat_views(views: torch.Tensor) -> torch.Tensor:
    """(B, V, C, H, W) -> (B*V, C, H, W), image-major (rows of image i stay together)."""
    return views.reshape(views.shape[0] * views.shape[1], *views.shape[2:])


@torch.no_grad()
def ema_update(
    teacher: nn.Module, student: nn.Module, momentum: float, copy_buffers: bool = True
) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameters and buffers.

    ``copy_buffers=False`` leaves the teacher's buffers (BatchNorm statistics) to its own
    forward passes, as the MoCo, BYOL and DINO reference code does.
    """
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)
    if copy_buffers:
        for t_buf, s_buf in zip(teacher.buffers(), student.buffers(), strict=True):
            t_buf.copy_(s_buf)


METHODS: dict[str, type[SSLMethod]] = {}


def register_method(name: str) -> Callable[[type[SSLMethod]], type[SSLMethod]]:
    """Class decorator adding an SSL method to :data:`METHODS` under ``name``."""

    def wrap(cls: type[SSLMethod]) -> type[SSLMethod]:
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


def _load_builtin() -> None:
    import importlib

    for module in ("simclr", "moco", "byol", "dino", "mae"):
        try:
            importlib.import_module(f"leakprobe.training.ssl.{module}")
        except ModuleNotFoundError as e:  # a method file not written yet
            if e.name != f"leakprobe.training.ssl.{module}":
                raise


def list_methods() -> list[str]:
    """Names accepted by :func:`create_method`."""
    _load_builtin()
    return sorted(METHODS)


def create_method(name: str, backbone: nn.Module, augmentation: SSLAugmentation, **kw) -> SSLMethod:
    """Build the SSL method ``name`` around ``backbone``."""
    _load_builtin()
    if name not in METHODS:
        raise LeakprobeError(f"unknown SSL method '{name}'; known: {', '.join(sorted(METHODS))}")
    try:
        return METHODS[name](backbone, augmentation, **kw)
    except TypeError as e:
        raise LeakprobeError(f"bad options for SSL method '{name}': {e}") from e
