"""What every self-supervised method shares: a backbone, an augmentation, a loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from leakprobe.augment import SSLAugmentation
from leakprobe.errors import LeakprobeError


class SSLMethod(nn.Module):
    """Base class: subclasses hold only what is specific to them (loss, extra networks).

    Args:
        backbone: the encoder being trained; it must expose ``embed_dim``.
        augmentation: the view generator (its ``crop_scale`` is what SCSR narrows).
    """

    name: ClassVar[str] = ""

    def __init__(self, backbone: nn.Module, augmentation: SSLAugmentation) -> None:
        super().__init__()
        self.backbone = backbone
        self.augmentation = augmentation

    def loss(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The training loss of one batch of raw images in [0, 1]."""
        raise NotImplementedError

    def after_step(self, progress: float) -> None:
        """Called after each optimiser step with training progress in [0, 1] (EMA updates)."""


METHODS: dict[str, type[SSLMethod]] = {}


def register_method(name: str) -> Callable[[type[SSLMethod]], type[SSLMethod]]:
    """Class decorator adding an SSL method to :data:`METHODS` under ``name``."""

    def wrap(cls: type[SSLMethod]) -> type[SSLMethod]:
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


def create_method(name: str, backbone: nn.Module, augmentation: SSLAugmentation, **kw) -> SSLMethod:
    """Build the SSL method ``name`` around ``backbone``."""
    from leakprobe.training.ssl import simclr  # noqa: F401  (registration side effect)

    if name not in METHODS:
        raise LeakprobeError(f"unknown SSL method '{name}'; known: {', '.join(sorted(METHODS))}")
    return METHODS[name](backbone, augmentation, **kw)
