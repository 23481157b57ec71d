"""SSLMem-style alignment (Wang et al., ICLR 2024, "Memorization in Self-Supervised Learning
Improves Downstream Generalization").

SSLMem measures how much an encoder memorised x as the gap in *alignment* between encoders
trained with and without x, where alignment is the expected L2 distance between the
representations of two augmented views of x. The per-model part is this attack's statistic:
``-mean ||f(t(x)) - f(t'(x))||_2 / mean ||f(t(x))||_2`` over the pairs of ``n_views`` augmented
views: the alignment distance relative to the views' embedding norm (higher = views closer =
more member-like). Relative, because an encoder's scale differs between models and grows
with training: on the test suite's memorising resnet-tiny (64 + 64 images) raw distances gave
AUC 0.28 (members' embeddings are longer, so their views lie farther apart in absolute
terms), the relative distance 0.94 (cosines of unit-normalised views, EncoderMI's statistic,
0.97). Alone it is an uncalibrated score (nothing fitted); against reference encoders that did
not train on x (``lira-sslmem``, ``rmia-sslmem`` under ``--knowledge reference``) it becomes
SSLMem's gap.
"""

from __future__ import annotations

import numpy as np
import torch

from leakprobe.attacks.membership._common import ViewAttack
from leakprobe.attacks.registry import register_attack
from leakprobe.evaluation.plan import Answer, Request
from leakprobe.views import ViewSpec


@register_attack("sslmem", family="encoder",
                 keep_defaults=("n_views",),  # --n-views is EncoderMI's
                 summary="SSLMem-style alignment (Wang et al., ICLR 2024): minus the mean L2 "
                 "distance of augmented views' embeddings over their norm, nothing fitted; "
                 "black box")
class SSLMemAlignment(ViewAttack):
    """Score = minus the mean pairwise L2 distance of the views' embeddings over their mean
    norm.

    Args:
        n_views: augmented views per image (>= 2).
        crop_scale: random-resized-crop area range of the default (SimCLR) views.
        images_per_batch: images whose views are embedded together.
        seed: seeds the views.
        views: the view recipe (see :func:`leakprobe.views.parse_views`).
    """

    needs_fit = False

    def __init__(self, n_views: int = 8, crop_scale: tuple[float, float] = (0.08, 1.0),
                 images_per_batch: int = 128, seed: int = 0,
                 views: str | dict | ViewSpec | None = None) -> None:
        self.images_per_batch = images_per_batch
        self._set_views(n_views, crop_scale, seed, views, minimum=2)

    def queries_per_image(self, target) -> int:
        return self.n_views

    def query_requests(self, target) -> tuple[Request, ...]:
        return (self.view_request(),)

    def chunk_features(self, answer: Answer) -> torch.Tensor:
        assert answer.views is not None
        iu = torch.triu_indices(self.n_views, self.n_views, offset=1)
        e = answer.views.double()
        dist = torch.cdist(e, e)[:, iu[0], iu[1]].mean(1, keepdim=True)
        norm = e.norm(dim=-1).mean(1, keepdim=True).clamp_min(1e-12)
        return -dist / norm

    def score_features(self, features: np.ndarray) -> np.ndarray:
        return features[:, 0]
