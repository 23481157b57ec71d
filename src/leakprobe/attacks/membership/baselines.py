"""Simple baselines that need no training: a floor every learned attack should beat.

- ``baseline-norm``: the L2 norm of the clean image's embedding (larger = member).
- ``baseline-consistency``: mean cosine similarity between the clean embedding and those of
  ``n_views`` augmented views (more consistent = member, the intuition of EncoderMI); the
  views are SimCLR's unless ``views`` names the target's recipe (see :mod:`leakprobe.views`).
Both directions are fixed in advance, so these attacks use no known samples at all.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from leakprobe.attacks.membership._common import MembershipAttack, ViewAttack
from leakprobe.attacks.registry import register_attack
from leakprobe.data.stream import Images
from leakprobe.evaluation.plan import Answer, CleanQuery, Request, planned_features
from leakprobe.views import ViewSpec


@register_attack("baseline-norm", family="encoder", aliases=("baseline",),
                 summary="baseline: the embedding's L2 norm, nothing fitted; black box, 1 query")
class EmbeddingNorm(MembershipAttack):
    """Score = L2 norm of the embedding."""

    needs_fit = False

    def __init__(self, images_per_batch: int = 512, seed: int = 0) -> None:
        self.images_per_batch = images_per_batch
        self.seed = seed  # unused: the attack is deterministic; kept for a uniform interface

    def queries_per_image(self, target) -> int:
        return 1

    def query_requests(self, target) -> tuple[Request, ...]:
        return (CleanQuery(),)

    def chunk_features(self, answer: Answer) -> torch.Tensor:
        assert answer.clean is not None
        return answer.clean.double().norm(dim=1, keepdim=True)

    def features(self, target, images: Images) -> np.ndarray:
        return planned_features(self, target, images)

    def score_features(self, features: np.ndarray) -> np.ndarray:
        return features[:, 0]


@register_attack("baseline-consistency", family="encoder", aliases=("baseline",),
                 keep_defaults=("n_views",),  # --n-views is EncoderMI's
                 summary="baseline: mean cosine of the clean and augmented views' embeddings, "
                 "nothing fitted; black box")
class AugmentationConsistency(ViewAttack):
    """Score = mean cosine(clean embedding, augmented-view embedding).

    ``views`` (see :func:`leakprobe.views.parse_views`) sets the view recipe; None draws
    SimCLR's views with ``crop_scale`` (given views replace ``crop_scale``).
    """

    needs_fit = False

    def __init__(
        self, n_views: int = 4, crop_scale: tuple[float, float] = (0.2, 1.0),
        images_per_batch: int = 256, seed: int = 0,
        views: str | dict | ViewSpec | None = None,
    ) -> None:
        self.n_views = n_views
        self.crop_scale = crop_scale
        self.images_per_batch = images_per_batch
        self.seed = seed
        self.views = views
        self.view_spec()  # a bad recipe fails here, not after the first queries

    def queries_per_image(self, target) -> int:
        return self.n_views + 1

    def query_requests(self, target) -> tuple[Request, ...]:
        """The clean image and ``n_views`` views (each shared where another attack asks)."""
        return (CleanQuery(), self.view_request())

    def chunk_features(self, answer: Answer) -> torch.Tensor:
        assert answer.clean is not None and answer.views is not None
        sims = F.cosine_similarity(answer.clean[:, None], answer.views, dim=-1)
        return sims.mean(1, keepdim=True)

    def score_features(self, features: np.ndarray) -> np.ndarray:
        return features[:, 0]
