"""Cont-Steal (Sha et al., "Can't Steal? Cont-Steal!", CVPR 2023), as its code does it.

The reference code (``zeyangsha/Cont-Steal``: ``contrastive_steal.py``,
``train_representation.py``, ``Loss.py``) feeds the **same augmented view** ``v`` to the
target and to the surrogate and trains the surrogate with InfoNCE over the 2B embeddings of
the batch (``ContrastiveLoss``, temperature 0.5, cosine similarities): the positive of the
surrogate's embedding of ``v`` is the target's embedding of ``v``; every other embedding of the
batch, target's or surrogate's, is a negative (the denominator keeps the positive; only the
row itself is masked). Its default augmentation (``--augmentation 2``, ``utils.random_transform``)
is RandAugment(2, 14), a random crop with padding 4 and a horizontal flip
(:class:`~leakprobe.augment.ContStealAugmentation`). Gradients flow into the surrogate only.

Here each image buys ``views_per_image`` such views (each one paid query, cached), and every
paid view is used at every epoch: one InfoNCE term per view slot (the negatives of a view are
the other images' views of the same slot, never another view of its own image), averaged.

``contsteal-fresh`` is the pairing leakprobe used before: the target's embedding of one of its
SimCLR views is the positive of the surrogate's embedding of a *fresh* SimCLR view of the
image (the attacker's own compute: free). It is not the reference code's pairing, so it has
its own name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from leakprobe.attacks.registry import register_attack
from leakprobe.attacks.stealing.base import StealingMethod, ViewMaker, surrogate_device
from leakprobe.augment import ContStealAugmentation, SSLAugmentation


def contsteal_loss(s: torch.Tensor, t: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Cont-Steal's InfoNCE over [surrogate; target] (2B x D); row i's positive is row i +- B.

    Cosine similarities over temperature; each row's denominator is every other row (its
    positive included), as ``Loss.ContrastiveLoss`` of the reference code; the mean over the
    2B rows.
    """
    z = F.normalize(torch.cat([s, t.detach()]), dim=1)
    n = s.shape[0]
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


@register_attack("contsteal", family="stealing",
                 summary="Cont-Steal (Sha et al., CVPR 2023) as its code does it: InfoNCE between "
                 "the surrogate's and the target's embeddings of the same augmented view; "
                 "black box")
class ContSteal(StealingMethod):
    """Contrastive stealing, the reference code's pairing (the same view on both sides).

    Args:
        views_per_image: augmented views queried per image (each one query). 1 by default:
            measured on ``benchmarks/stealing.py`` (digits, budget 1000), one view of 1000
            images copies the target better (probe 0.858) than two views of 500 (0.785).
        temperature: InfoNCE temperature (0.5 in the reference code).
        magnitude: RandAugment magnitude of the views (14 of 31 in the reference code).
    """

    query_recipe = "contsteal"

    def __init__(self, views_per_image: int = 1, temperature: float = 0.5,
                 magnitude: int = 14) -> None:
        self.views_per_image = views_per_image
        self.temperature = temperature
        self.magnitude = magnitude
        if magnitude != 14:
            self.query_recipe = f"contsteal-m{magnitude}"

    def query_views(self, size: int) -> ViewMaker:
        return ContStealAugmentation(size=size, magnitude=self.magnitude)

    def loss(self, surrogate, cache, idx, generator) -> torch.Tensor:
        device = surrogate_device(surrogate)
        views = cache.views[idx].to(device)  # (B, V, C, S, S): what the target embedded
        b, v = views.shape[:2]
        s = surrogate(views.flatten(0, 1)).float().view(b, v, -1)
        t = cache.embeddings[idx].to(device)
        return torch.stack([contsteal_loss(s[:, j], t[:, j], self.temperature)
                            for j in range(v)]).mean()


@register_attack("contsteal-fresh", family="stealing",
                 summary="Cont-Steal variant: the target's embedding of a SimCLR view is the "
                 "positive of the surrogate's embedding of a fresh SimCLR view; black box")
class ContStealFresh(StealingMethod):
    """The pairing leakprobe's ``contsteal`` used before: target view vs a fresh surrogate view.

    Args:
        views_per_image: target views (SimCLR augmentations) queried per image.
        temperature: InfoNCE temperature.
    """

    query_recipe = "simclr"

    def __init__(self, views_per_image: int = 2, temperature: float = 0.5) -> None:
        self.views_per_image = views_per_image
        self.temperature = temperature

    def query_views(self, size: int) -> ViewMaker:
        return SSLAugmentation(size=size)

    def loss(self, surrogate, cache, idx, generator) -> torch.Tensor:
        device = surrogate_device(surrogate)
        images = cache.batch(idx).to(device)
        view = SSLAugmentation(size=cache.size)(images, generator, 1)[:, 0]
        pick = torch.randint(0, cache.views_per_image, (idx.shape[0],), generator=generator)
        target_emb = cache.embeddings[idx, pick].to(device)
        return contsteal_loss(surrogate(view).float(), target_emb, self.temperature)
