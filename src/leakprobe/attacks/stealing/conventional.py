"""Conventional encoder stealing: regress the surrogate onto the target's embeddings.

The attacker queries each image once (the clean image; ``views_per_image`` > 1 buys SimCLR
views instead) and trains the surrogate so that its
embedding of the same image matches the target's, by mean squared error (``mse``) or by
cosine similarity (``cosine``), the baselines of Cont-Steal (Sha et al., CVPR 2023).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leakprobe.attacks.registry import register_attack
from leakprobe.attacks.stealing.base import StealingMethod, ViewMaker
from leakprobe.attacks.stealing.queries import QueryCache
from leakprobe.augment import SSLAugmentation


@register_attack("mse", family="stealing",
                 summary="conventional stealing: mean squared error between the surrogate's and "
                 "the target's embeddings; black box")
class MSESteal(StealingMethod):
    """Mean squared error between surrogate and target embeddings of the queried view."""

    def __init__(self, views_per_image: int = 1) -> None:
        self.views_per_image = views_per_image
        # one view is the clean image; more are SimCLR views, each paid
        self.query_recipe = "clean" if views_per_image == 1 else "simclr"

    def query_views(self, size: int) -> ViewMaker | None:
        return None if self.views_per_image == 1 else SSLAugmentation(size=size)

    def _pairs(self, surrogate: nn.Module, cache: QueryCache, idx: torch.Tensor,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pick = torch.randint(0, cache.views_per_image, (idx.shape[0],), generator=generator)
        views = cache.views[idx, pick]
        device = next(surrogate.parameters()).device
        return surrogate(views.to(device)), cache.embeddings[idx, pick].to(device)

    def loss(self, surrogate, cache, idx, generator) -> torch.Tensor:
        s, t = self._pairs(surrogate, cache, idx, generator)
        return F.mse_loss(s.float(), t)


@register_attack("cosine", family="stealing",
                 summary="conventional stealing: one minus the cosine of the surrogate's and the "
                 "target's embeddings; black box")
class CosineSteal(MSESteal):
    """One minus the cosine similarity of surrogate and target embeddings."""

    def loss(self, surrogate, cache, idx, generator) -> torch.Tensor:
        s, t = self._pairs(surrogate, cache, idx, generator)
        return (1 - F.cosine_similarity(s.float(), t, dim=1)).mean()
