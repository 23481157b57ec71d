"""SimCLR (Chen et al., 2020): NT-Xent between two augmented views of each image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leakprobe.augment import SSLAugmentation
from leakprobe.models.heads import mlp_head
from leakprobe.models.registry import int_attribute
from leakprobe.training.ssl.base import (
    SSLBatch,
    SSLMethod,
    StudentOutputs,
    flat_views,
    register_method,
)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Normalised-temperature cross entropy over the 2B projections of a batch.

    The positive of each view is the other view of the same image; the other 2B - 2
    projections are its negatives.
    """
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


@register_method("simclr")
class SimCLR(SSLMethod):
    """SimCLR with a 2-layer projection head and NT-Xent (temperature 0.5 by default).

    ``proj_dim=0`` drops the head (the loss then shapes the embedding directly).

    Under DP-SGD the clipping unit is one image (both views), but every image is a negative
    in every other image's loss term: adding or removing one image moves all B clipped terms
    (each by up to 2C), so its sensitivity is not C and the accountant's epsilon is recorded
    as ``epsilon_nominal`` with :attr:`dp_caveat`, not as a guarantee
    (``dp_per_image_exact`` False; the tests show the clipped sum moving by more than C).
    """

    dp_per_image_exact = False
    dp_caveat = ("SimCLR: each image is a negative in every other image's loss term, so its "
                 "sensitivity exceeds C; epsilon_nominal is the accountant's number for "
                 "clipped per-image terms, not a guarantee")

    def __init__(
        self,
        backbone: nn.Module,
        augmentation: SSLAugmentation,
        temperature: float = 0.5,
        proj_dim: int = 128,
        hidden_dim: int = 512,
    ) -> None:
        super().__init__(backbone, augmentation)
        self.temperature = temperature
        # proj_dim 0: no head, the contrastive loss acts on the embedding itself
        self.projector = (
            mlp_head(int_attribute(backbone, "embed_dim"), hidden_dim, proj_dim) if proj_dim > 0
            else nn.Identity()
        )

    def prepare(self, images: torch.Tensor, generator: torch.Generator) -> SSLBatch:
        return SSLBatch((self.augmentation(images, generator, n_views=2),))

    def student(self, views: torch.Tensor) -> StudentOutputs:
        z = self.projector(self.backbone(flat_views(views)))
        return (z.reshape(views.shape[0], 2, -1),)

    def objective(self, outputs: StudentOutputs, batch: SSLBatch) -> torch.Tensor:
        z = outputs[0]
        return nt_xent(z[:, 0], z[:, 1], self.temperature)
