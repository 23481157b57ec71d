"""Cont-Steal (Sha et al., "Can't Steal? Cont-Steal!", CVPR 2023).

The target embeds ``views_per_image`` augmented views of each query image (each view is one
paid query, cached). At every step the surrogate embeds a *fresh* augmentation of the image
(the attacker's own data: free) and is trained with InfoNCE over the 2B embeddings of the
batch (temperature 0.5): the positive of a surrogate embedding is the target's embedding of
the same image under another view; every other embedding of the batch, target's or
surrogate's, is a negative. Gradients flow into the surrogate only (the target's embeddings
are constants).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from leakprobe.attacks.registry import register_attack
from leakprobe.attacks.stealing.base import StealingMethod
from leakprobe.augment import SSLAugmentation


def contsteal_loss(s: torch.Tensor, t: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """InfoNCE over [surrogate; target] (2B x D); row i's positive is row i +- B."""
    z = F.normalize(torch.cat([s, t.detach()]), dim=1)
    n = s.shape[0]
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


@register_attack("contsteal", family="stealing",
                 summary="Cont-Steal (Sha et al., CVPR 2023): InfoNCE between the surrogate's "
                 "and the target's embeddings of augmented views; black box")
class ContSteal(StealingMethod):
    """Contrastive stealing.

    Args:
        views_per_image: target views queried per image.
        temperature: InfoNCE temperature.
    """

    def __init__(self, views_per_image: int = 2, temperature: float = 0.5) -> None:
        self.views_per_image = views_per_image
        self.temperature = temperature

    def loss(self, surrogate, cache, idx, generator) -> torch.Tensor:
        device = next(surrogate.parameters()).device
        images = cache.batch(idx).to(device)
        view = SSLAugmentation(size=cache.size)(images, generator, 1)[:, 0]
        pick = torch.randint(0, cache.views_per_image, (idx.shape[0],), generator=generator)
        target_emb = cache.embeddings[idx, pick].to(device)
        return contsteal_loss(surrogate(view).float(), target_emb, self.temperature)
