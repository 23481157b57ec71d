"""BYOL (Grill et al., 2020): an online network predicts a slow-moving target network."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from leakprobe.augment import SSLAugmentation
from leakprobe.errors import LeakprobeError
from leakprobe.models.heads import mlp_head
from leakprobe.models.registry import int_attribute
from leakprobe.training.ssl.base import (
    SSLBatch,
    SSLMethod,
    StudentOutputs,
    ema_update,
    flat_views,
    register_method,
)


def cosine_momentum(base: float, progress: float) -> float:
    """BYOL's target-momentum schedule: ``1 - (1 - base) * (cos(pi * progress) + 1) / 2``.

    It starts at ``base`` and rises to 1 at the end of training (also used by DINO).
    """
    return 1 - (1 - base) * (math.cos(math.pi * min(max(progress, 0.0), 1.0)) + 1) / 2


def check_unit(value: float, what: str, closed: bool = True) -> float:
    """``value`` if it lies in [0, 1] (``closed``) or (0, 1), else a LeakprobeError."""
    ok = 0 <= value <= 1 if closed else 0 < value < 1
    if not ok:
        interval = "[0, 1]" if closed else "(0, 1)"
        raise LeakprobeError(f"{what} must be in {interval}, got {value}")
    return float(value)


def check_positive(value: float, what: str) -> float:
    """``value`` if it is > 0, else a LeakprobeError."""
    if not value > 0:
        raise LeakprobeError(f"{what} must be > 0, got {value}")
    return value


def normalized_mse(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z)`` along the last dimension."""
    return 2 - 2 * (F.normalize(p.float(), dim=-1) * F.normalize(z.float(), dim=-1)).sum(-1)


@register_method("byol")
class BYOL(SSLMethod):
    """BYOL: the online backbone + projector + predictor regresses the target's projection.

    Loss per image: normalised MSE of the online prediction of each view against the target
    projection of the other view, summed over the two directions (symmetric, as the paper).
    The target network (backbone + projector) is an exponential moving average of the
    online one, updated after each step with momentum rising from ``momentum`` to 1 on a
    cosine schedule (parameters only: the target's BatchNorm statistics come from its own
    forward passes, as the reference code). The exported encoder is the online backbone.

    Defaults, paper -> ours: projector/predictor 4096 -> 256 with BatchNorm, ours
    ``hidden_dim`` 512 -> ``proj_dim`` 128; base momentum 0.996 -> 0.99, because our CPU runs
    take hundreds of steps rather than hundreds of thousands and a 0.996 target would barely
    leave its initialisation. The paper's asymmetric blur/solarisation is not used (the
    shared :class:`~leakprobe.augment.SSLAugmentation` makes both views).

    Each image's loss depends on that image alone (its views and the stop-gradient target's
    outputs on them; the target's weights are a moving average of DP-trained weights, i.e.
    post-processing), so ``dp_per_image_exact`` is True and the accountant's epsilon is a
    guarantee. In plain training BatchNorm in the heads and backbone mixes a batch's images
    (``head_norm=False`` drops it from the heads; under DP every BatchNorm, the target's
    included, is GroupNorm, which normalises each image on its own).

    Args:
        backbone: the encoder trained and exported.
        augmentation: view generator (two views per image).
        proj_dim: projection/prediction output size.
        hidden_dim: width of the projector and predictor MLPs.
        momentum: base target momentum (cosine schedule to 1).
        head_norm: BatchNorm inside the projector and predictor MLPs.
    """

    dp_per_image_exact = True

    def __init__(
        self,
        backbone: nn.Module,
        augmentation: SSLAugmentation,
        proj_dim: int = 128,
        hidden_dim: int = 512,
        momentum: float = 0.99,
        head_norm: bool = True,
    ) -> None:
        super().__init__(backbone, augmentation)
        check_positive(proj_dim, "BYOL proj_dim")
        check_positive(hidden_dim, "BYOL hidden_dim")
        self.momentum = check_unit(momentum, "BYOL momentum")
        embed_dim = int_attribute(backbone, "embed_dim")
        self.projector = mlp_head(embed_dim, hidden_dim, proj_dim, norm=head_norm)
        self.predictor = mlp_head(proj_dim, hidden_dim, proj_dim, norm=head_norm)
        self.teacher = copy.deepcopy(nn.Sequential(backbone, self.projector)).requires_grad_(False)

    def prepare(self, images: torch.Tensor, generator: torch.Generator) -> SSLBatch:
        views = self.augmentation(images, generator, n_views=2)
        with torch.no_grad():
            target = self.teacher(flat_views(views)).reshape(views.shape[0], 2, -1)
        return SSLBatch((views,), {"target": target.float()})

    def student(self, views: torch.Tensor) -> StudentOutputs:
        p = self.predictor(self.projector(self.backbone(flat_views(views))))
        return (p.reshape(views.shape[0], 2, -1),)

    def objective(self, outputs: StudentOutputs, batch: SSLBatch) -> torch.Tensor:
        p, z = outputs[0], batch.extras["target"]
        return (normalized_mse(p[:, 0], z[:, 1]) + normalized_mse(p[:, 1], z[:, 0])).mean()

    def after_step(self, progress: float) -> None:
        online = nn.Sequential(self.backbone, self.projector)
        ema_update(self.teacher, online, cosine_momentum(self.momentum, progress),
                   copy_buffers=False)
