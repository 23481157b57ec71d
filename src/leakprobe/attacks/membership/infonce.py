"""A sample's own contrastive (InfoNCE) loss on the target: leakprobe's encoder statistic.

For classifiers, LiRA (Carlini et al., S&P 2022) calibrates the sample's own training loss
(its logit-scaled confidence). Contrastive encoders (SimCLR, MoCo) train
on InfoNCE (Oord et al. 2018; SimCLR's NT-Xent, Chen et al. ICML 2020): two views of an image
must be closer to each other than to the views of other images. This attack measures that loss
for each audited image, black box: ``n_views`` augmented views of x and two views of each of
``bank_size`` other images (a seeded sample of the audited set itself, x's own entry masked;
no label is used) are embedded and L2-normalised, and

    loss(x) = mean over ordered view pairs (i, j), i != j, of
              -s_ij / tau + log( exp(s_ij / tau) + sum_b exp(s_ib / tau) )

with ``s`` the cosine similarity and ``b`` the bank's view embeddings. The score is
``-loss(x)`` (members, trained on, have lower loss). Unlike EncoderMI's mean view cosine
(alignment only), it also carries the uniformity term: how far training pushed x from other
images. Alone it is an uncalibrated, unfitted score; against reference encoders
(``lira-infonce``, ``rmia-infonce``) the bank is the same images for every model.

This is not a published attack: it is leakprobe's statistic, named for what it computes. The
temperature is the auditor's guess (default 0.2; SimCLR used 0.1-0.5): on the Fashion-MNIST
benchmark (``benchmarks/calibration.py``, target temperature 0.2) 0.2 and 0.5 gave offline
LiRA AUC 0.735 and 0.731 at R = 8, 0.1 gave 0.725.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from leakprobe.attacks.membership._common import ViewAttack, check_features
from leakprobe.attacks.registry import register_attack
from leakprobe.data.stream import Images, image_batches, select
from leakprobe.views import ViewSpec


@register_attack("infonce", family="encoder",
                 keep_defaults=("n_views",),  # --n-views is EncoderMI's
                 summary="leakprobe's statistic: the image's own InfoNCE loss (its views "
                 "against each other and against a bank of other audited images), nothing "
                 "fitted; black box")
class ContrastiveLoss(ViewAttack):
    """Score = minus the sample's InfoNCE loss over its augmented views.

    Args:
        n_views: augmented views per image (>= 2).
        temperature: InfoNCE's tau.
        bank_size: other images (two views each) whose embeddings are the negatives; a seeded
            sample of the scored set (all of it when smaller).
        crop_scale: random-resized-crop area range of the default (SimCLR) views.
        images_per_batch: images whose views are embedded together.
        seed: seeds the views and the bank.
        views: the view recipe (see :func:`leakprobe.views.parse_views`).
    """

    needs_fit = False
    bank_views = 2

    def __init__(self, n_views: int = 16, temperature: float = 0.2, bank_size: int = 512,
                 crop_scale: tuple[float, float] = (0.08, 1.0), images_per_batch: int = 128,
                 seed: int = 0, views: str | dict | ViewSpec | None = None) -> None:
        if temperature <= 0:
            raise ValueError(f"infonce temperature must be > 0, got {temperature}")
        if bank_size < 1:
            raise ValueError(f"infonce bank_size must be >= 1, got {bank_size}")
        self.temperature = temperature
        self.bank_size = bank_size
        self.images_per_batch = images_per_batch
        self._set_views(n_views, crop_scale, seed, views, minimum=2)

    def queries_per_image(self, target) -> int:
        return self.n_views

    def extra_queries(self, target) -> int:
        """The bank's views (at most: the bank is no larger than the scored set)."""
        return self.bank_views * self.bank_size

    def _bank(self, target, images: Images, n: int) -> tuple[torch.Tensor, np.ndarray]:
        """(B * bank_views, D) normalised bank embeddings and the bank's positions."""
        g = torch.Generator().manual_seed(self.seed + 1)
        positions = torch.randperm(n, generator=g)[: min(self.bank_size, n)].sort().values
        aug = self.view_spec().augmentation(target.input_size)
        out = []
        for chunk in image_batches(select(images, positions), self.images_per_batch,
                                   target.input_size):
            v = aug(chunk, g, self.bank_views)
            out.append(target.embed(v.reshape(-1, *v.shape[2:])).float())
        return F.normalize(torch.cat(out), dim=-1), positions.numpy()

    def features(self, target, images: Images) -> np.ndarray:
        n = len(images)
        bank, bank_pos = self._bank(target, images, n)
        owner = torch.from_numpy(np.repeat(bank_pos, self.bank_views))  # bank row -> image
        tau = self.temperature
        off_diag = ~torch.eye(self.n_views, dtype=torch.bool)
        out, start = [], 0
        for emb in self.embedded_views(target, images, self.images_per_batch):
            e = F.normalize(emb.float(), dim=-1)
            b = e.shape[0]
            pos = (e @ e.transpose(1, 2)) / tau  # (b, V, V)
            neg = (e @ bank.T) / tau  # (b, V, B * bank_views)
            own = owner[None, :] == torch.arange(start, start + b)[:, None]
            neg = neg.masked_fill(own[:, None, :], float("-inf"))  # not x against itself
            lse_neg = torch.logsumexp(neg, dim=-1)  # (b, V)
            loss = -pos + torch.logaddexp(pos, lse_neg[:, :, None])
            out.append(-loss[:, off_diag].mean(1, keepdim=True).double())
            start += b
        return check_features(torch.cat(out).numpy(), self.name)

    def score_features(self, features: np.ndarray) -> np.ndarray:
        return features[:, 0]
