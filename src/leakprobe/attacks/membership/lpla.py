"""LpLA: membership from the likelihood of the embedding's p-norm.

Reading of the paper (its reference code is not public): better-trained encoders map their
training images to embeddings whose p-norm differs systematically from unseen images'. The
statistic of an image is the p-norm of its raw (unnormalised) embedding averaged over the
clean image and ``n_views - 1`` augmented views. The attacker fits one Gaussian to members'
statistics and one to non-members' (known subset or shadow encoder) and scores an image by
the log likelihood ratio ``log N(s; members) - log N(s; non-members)``. p may be any value
>= 1 or ``inf`` (the largest absolute coordinate).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from leakprobe.attacks.membership._common import ViewAttack
from leakprobe.attacks.registry import register_attack
from leakprobe.evaluation.plan import Answer, CleanQuery, Request
from leakprobe.views import ViewSpec


def parse_p(p: float | str) -> float:
    """``1``, ``2``, ``"inf"``... -> float p (>= 1)."""
    value = float(p)
    if not value >= 1:
        raise ValueError(f"p must be >= 1 or inf, got {p!r}")
    return value


def gaussian_logpdf(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    return -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


@register_attack("lpla-p1", family="encoder", aliases=("lpla",), fixed={"p": 1},
                 keep_defaults=("n_views",),  # --n-views is EncoderMI's
                 summary="LpLA: Gaussian likelihood ratio of the embedding's L1 norm (mean "
                 "over views); black box, fitted on known samples or a shadow")
@register_attack("lpla-p2", family="encoder", aliases=("lpla",), fixed={"p": 2},
                 keep_defaults=("n_views",),  # --n-views is EncoderMI's
                 summary="LpLA: Gaussian likelihood ratio of the embedding's L2 norm (mean "
                 "over views); black box, fitted on known samples or a shadow")
@register_attack("lpla-pinf", family="encoder", aliases=("lpla",), fixed={"p": "inf"},
                 keep_defaults=("n_views",),  # --n-views is EncoderMI's
                 summary="LpLA: Gaussian likelihood ratio of the embedding's L-inf norm (mean "
                 "over views); black box, fitted on known samples or a shadow")
class LpLA(ViewAttack):
    """p-norm likelihood attack.

    Args:
        p: the norm (1, 2, ``inf``, ...).
        n_views: embeddings averaged per image (the clean image plus augmented views).
        crop_scale: area range of the default augmented views' crops.
        seed: seeds the views.
        views: the view recipe (see :func:`leakprobe.views.parse_views`); None: SimCLR's
            views with ``crop_scale``. Given views replace ``crop_scale``.
    """

    def __init__(
        self,
        p: float | str = 2,
        n_views: int = 4,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        images_per_batch: int = 256,
        seed: int = 0,
        views: str | dict | ViewSpec | None = None,
    ) -> None:
        self.p = p
        self.n_views = n_views
        self.crop_scale = crop_scale
        self.images_per_batch = images_per_batch
        self.seed = seed
        self.views = views
        self.view_spec()  # a bad recipe fails here, not after the first queries

    @property
    def name(self) -> str:
        p = parse_p(self.p)
        return f"lpla-p{'inf' if math.isinf(p) else f'{p:g}'}"

    def queries_per_image(self, target) -> int:
        return self.n_views

    def query_requests(self, target) -> tuple[Request, ...]:
        """The clean image (shared with every attack that embeds it) and ``n_views - 1``
        views (the three norms share them)."""
        parse_p(self.p)  # a bad p fails before any query
        if self.n_views > 1:
            return (CleanQuery(), self.view_request(self.n_views - 1))
        return (CleanQuery(),)

    def chunk_features(self, answer: Answer) -> torch.Tensor:
        assert answer.clean is not None
        emb = answer.clean[:, None]
        if answer.views is not None:
            emb = torch.cat([emb, answer.views], dim=1)
        norms = torch.linalg.vector_norm(emb.double(), ord=parse_p(self.p), dim=-1)
        return norms.mean(dim=1, keepdim=True)

    def fit_features(self, features: np.ndarray, is_member: np.ndarray) -> LpLA:
        s, y = features[:, 0], np.asarray(is_member, dtype=bool)
        floor = 1e-6 * max(float(np.abs(s).mean()), 1e-12)
        self.member_ = (float(s[y].mean()), max(float(s[y].std()), floor))
        self.nonmember_ = (float(s[~y].mean()), max(float(s[~y].std()), floor))
        return self

    def score_features(self, features: np.ndarray) -> np.ndarray:
        s = features[:, 0]
        return gaussian_logpdf(s, *self.member_) - gaussian_logpdf(s, *self.nonmember_)
