"""StolenEncoder (Liu et al., "StolenEncoder: Stealing Pre-trained Encoders in Self-supervised
Learning", CCS 2022).

One query per image (the clean image). The surrogate matches the target's embedding of the
image both on the image and on an augmented copy of it (the attacker's own compute, free):

    loss = MSE(n(s(x)), n(t(x))) + lambda * MSE(n(s(aug(x))), n(t(x)))

with n the L2 normalisation and lambda = 20, as RDA's re-implementation (``ShuchiWu/RDA``,
``StolenEncoder.py``) does it; the paper states the same objective with cosine similarity,
which on normalised vectors is the same up to scale (MSE = (2 - 2 cos) / D). The augmentation
is SimCLR's (:class:`~leakprobe.augment.SSLAugmentation`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from leakprobe.attacks.registry import register_attack
from leakprobe.attacks.stealing.base import StealingMethod, surrogate_device
from leakprobe.augment import SSLAugmentation


@register_attack("stolenencoder", family="stealing",
                 summary="StolenEncoder (Liu et al., CCS 2022): normalised MSE to the target's "
                 "embedding of the clean image, on it and on an augmented copy; black box")
class StolenEncoder(StealingMethod):
    """Regression on the clean image and on a free augmentation of it.

    Args:
        augmented_weight: lambda, the weight of the augmented term (20).
    """

    query_recipe = "clean"

    def __init__(self, augmented_weight: float = 20.0) -> None:
        self.augmented_weight = augmented_weight

    def loss(self, surrogate, cache, idx, generator) -> torch.Tensor:
        device = surrogate_device(surrogate)
        clean = cache.views[idx, 0].to(device)  # the very floats the target embedded
        augmented = SSLAugmentation(size=cache.size)(clean, generator, 1)[:, 0]
        s = F.normalize(surrogate(torch.cat([clean, augmented])).float(), dim=-1)
        t = F.normalize(cache.embeddings[idx, 0].to(device).float(), dim=-1)
        s_clean, s_aug = s.split(len(idx))
        return F.mse_loss(s_clean, t) + self.augmented_weight * F.mse_loss(s_aug, t)
