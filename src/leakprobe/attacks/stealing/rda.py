"""RDA: Refine, Discriminate and Align (Wu et al., ECCV 2024; code ``ShuchiWu/RDA``).

**Refine.** The target embeds ``views_per_image`` (N, default 10) views of every query image
(random-resized crop of fixed scale 0.9 and aspect 1, flip, colour jitter 0.4/0.4/0.4/0.2
with p 0.8, grayscale 0.2, blur 0.1, solarisation 0.1: the code's ``*PROTODATAViewGenerator``);
the image's *prototype* is the mean of the L2-normalised embeddings, **not** re-normalised
(``chunk_avg(..., normalize=False)``). Paid once: N queries per image.

**Discriminate and align.** At every step the surrogate embeds ``surrogate_views`` (M,
default 5) fresh views of each image (the same family at crop scale 0.75: the attacker's own
compute, free), L2-normalised. For each view slot the loss (``OurLoss``) is

    contrast: -log(exp(s_i . p_i / T) / (sum_{j != i} exp(s_i . p_j / T)
                                          + sum_{j != i} exp(s_i . s_j / T)))
    align:    -log((cos(s_i, p_i) + 1) / ||s_i - p_i||^2)

with T = 0.07 and weights 1 and 1 (the positive is left out of the denominator, as in the
code), averaged over the batch and over the M slots.

Unlike the reference code, a prototype belongs to its image (the code keys prototypes by a
data-file label) and nothing picks an epoch with test labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from leakprobe.attacks.registry import register_attack
from leakprobe.attacks.stealing.base import StealingMethod, ViewMaker, surrogate_device
from leakprobe.augment import SSLAugmentation

#: ||s - p||^2 is floored here so a surrogate that reaches a prototype of norm 1 (N identical
#: views) gives a finite loss; the code divides by it unguarded.
MIN_SQUARED_DISTANCE = 1e-8


def rda_views(size: int, crop_scale: float) -> SSLAugmentation:
    """RDA's view family at a fixed crop scale (0.9 for prototypes, 0.75 for the surrogate)."""
    return SSLAugmentation(size=size, crop_scale=(crop_scale, crop_scale), crop_ratio=(1.0, 1.0),
                           flip_p=0.5, jitter_p=0.8, brightness=0.4, contrast=0.4,
                           saturation=0.4, hue=0.2, gray_p=0.2, blur_p=0.1,
                           blur_sigma=(0.1, 2.0), solarize_p=0.1)


def rda_prototypes(embeddings: torch.Tensor) -> torch.Tensor:
    """(B, N, D) target embeddings -> (B, D): the mean of the L2-normalised views, as is."""
    return F.normalize(embeddings.float(), dim=-1).mean(dim=1)


def rda_loss(s: torch.Tensor, p: torch.Tensor, temperature: float = 0.07,
             contrast_weight: float = 1.0, align_weight: float = 1.0) -> torch.Tensor:
    """RDA's loss of L2-normalised surrogate embeddings ``s`` (B, D) and prototypes ``p``.

    See the module docstring; computed with log-sum-exp (the code exponentiates directly).
    """
    b = s.shape[0]
    p = p.detach()
    off = ~torch.eye(b, dtype=torch.bool, device=s.device)
    to_protos = s @ p.t() / temperature
    to_selves = s @ s.t() / temperature
    negatives = torch.cat([to_protos[off].view(b, b - 1), to_selves[off].view(b, b - 1)], dim=1)
    contrast = (torch.logsumexp(negatives, dim=1) - to_protos.diagonal()).mean()
    distance = (s - p).pow(2).sum(dim=-1).clamp_min(MIN_SQUARED_DISTANCE)
    align = (torch.log(distance) - torch.log(F.cosine_similarity(s, p, dim=-1) + 1)).mean()
    return contrast_weight * contrast + align_weight * align


@register_attack("rda", family="stealing",
                 summary="RDA (Wu et al., ECCV 2024): the surrogate's views discriminate and align "
                 "to per-image prototypes (the mean of N normalised target views); black box")
class RDA(StealingMethod):
    """Refine, discriminate and align.

    Args:
        views_per_image: N, target views per image that make its prototype (paid).
        surrogate_views: M, fresh surrogate views per image and step (free).
        temperature: of the contrastive term (0.07).
        contrast_weight, align_weight: the two terms' weights (1 and 1).
        prototype_crop_scale, surrogate_crop_scale: the fixed crop scales (0.9, 0.75).
    """

    query_recipe = "rda"

    def __init__(self, views_per_image: int = 10, surrogate_views: int = 5,
                 temperature: float = 0.07, contrast_weight: float = 1.0,
                 align_weight: float = 1.0, prototype_crop_scale: float = 0.9,
                 surrogate_crop_scale: float = 0.75) -> None:
        self.views_per_image = views_per_image
        self.surrogate_views = surrogate_views
        self.temperature = temperature
        self.contrast_weight = contrast_weight
        self.align_weight = align_weight
        self.prototype_crop_scale = prototype_crop_scale
        self.surrogate_crop_scale = surrogate_crop_scale
        if prototype_crop_scale != 0.9:
            self.query_recipe = f"rda-crop{prototype_crop_scale:g}"

    def query_views(self, size: int) -> ViewMaker:
        return rda_views(size, self.prototype_crop_scale)

    def loss(self, surrogate, cache, idx, generator) -> torch.Tensor:
        device = surrogate_device(surrogate)
        protos = rda_prototypes(cache.embeddings[idx]).to(device)
        images = cache.batch(idx).to(device)
        m = self.surrogate_views
        views = rda_views(cache.size, self.surrogate_crop_scale)(images, generator, m)
        s = F.normalize(surrogate(views.flatten(0, 1)).float(), dim=-1).view(len(idx), m, -1)
        return torch.stack([rda_loss(s[:, j], protos, self.temperature, self.contrast_weight,
                                     self.align_weight) for j in range(m)]).mean()
