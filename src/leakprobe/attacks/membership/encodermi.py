"""EncoderMI (Liu et al., ACM CCS 2021): members' augmented views embed more alike.

Threat model: black box; the attacker embeds n augmented views of each image with the
augmentation the encoder was (presumably) trained with and compares them. The paper trains
its classifiers on a shadow encoder; under ``known-subset`` they are fitted on known samples.

Features: the n(n-1)/2 pairwise cosine similarities of the n views (default n = 10 -> 45).
Variants:
- ``vector``: the similarities sorted -> MLP (BCE, Adam), as the paper's vector-based attack.
- ``set``: the unsorted similarities as a set -> permutation-invariant DeepSet network
  (mean and max pooling), standing in for the paper's set-based classifier.
- ``threshold``: mean similarity; direction and threshold chosen on the fit data.

The augmentation defaults to SimCLR's (random-resized-crop scale (0.08, 1), flip, colour
jitter 0.4/0.4/0.4/0.1 with p 0.8, grayscale p 0.2): the recipe is unknown to the attacker.
``views`` (a preset of :mod:`leakprobe.views` such as ``byol`` or ``mae``, or explicit
settings) draws the views from the target's own recipe instead: an owner's audit.
"""

from __future__ import annotations

import numpy as np
import torch

from leakprobe.attacks.membership._common import (
    NeuralScorer,
    ThresholdScorer,
    ViewAttack,
    check_features,
    pairwise_cosines,
)
from leakprobe.attacks.registry import register_attack
from leakprobe.evaluation.plan import Answer, Request
from leakprobe.views import ViewSpec

VARIANTS = ("vector", "set", "threshold")


@register_attack("encodermi-vector", family="encoder", aliases=("encodermi",),
                 fixed={"variant": "vector"},
                 summary="EncoderMI (Liu et al., CCS 2021): sorted cosines of augmented views "
                 "-> MLP; black box, fitted on known samples or a shadow")
@register_attack("encodermi-set", family="encoder", aliases=("encodermi",),
                 fixed={"variant": "set"},
                 summary="EncoderMI: the augmented views' cosines as a set -> DeepSet network; "
                 "black box")
@register_attack("encodermi-threshold", family="encoder", aliases=("encodermi",),
                 fixed={"variant": "threshold"},
                 summary="EncoderMI: mean cosine of augmented views, threshold fitted; black box")
class EncoderMI(ViewAttack):
    """EncoderMI membership attack.

    Args:
        variant: ``vector``, ``set`` or ``threshold``.
        n_views: augmented views per image.
        crop_scale: random-resized-crop area range of the default views.
        images_per_batch: images whose views are embedded together.
        epochs: classifier epochs (vector and set variants).
        seed: seeds the views and the classifier.
        views: the view recipe (preset name, ``PRESET,KEY=VALUE...``, dict or ViewSpec; see
            :func:`leakprobe.views.parse_views`); None: SimCLR's views with ``crop_scale``.
            Given views replace ``crop_scale``.
    """

    def __init__(
        self,
        variant: str = "vector",
        n_views: int = 10,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        images_per_batch: int = 128,
        epochs: int = 100,
        seed: int = 0,
        views: str | dict | ViewSpec | None = None,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.variant = variant
        self.n_views = n_views
        self.crop_scale = crop_scale
        self.images_per_batch = images_per_batch
        self.epochs = epochs
        self.seed = seed
        self.views = views
        self.view_spec()  # a bad recipe fails here, not after the first queries

    @property
    def name(self) -> str:
        return f"encodermi-{self.variant}"

    def queries_per_image(self, target) -> int:
        return self.n_views

    def query_requests(self, target) -> tuple[Request, ...]:
        """``n_views`` views: the three variants ask the same request and share its answers."""
        return (self.view_request(),)

    def chunk_features(self, answer: Answer) -> torch.Tensor:
        assert answer.views is not None
        return pairwise_cosines(answer.views)

    def finish_features(self, features: np.ndarray) -> np.ndarray:
        sims = features
        if self.variant == "vector":
            sims = -np.sort(-sims, axis=1)
        elif self.variant == "threshold":
            sims = sims.mean(axis=1, keepdims=True)
        return check_features(sims, self.name)

    def neural_scorer(self) -> NeuralScorer | None:
        if self.variant == "threshold":
            return None
        network = "mlp" if self.variant == "vector" else "deepset"
        return NeuralScorer(network, epochs=self.epochs, seed=self.seed)

    def fit_features(self, features: np.ndarray, is_member: np.ndarray) -> EncoderMI:
        scorer = self.neural_scorer()
        self.scorer_: ThresholdScorer | NeuralScorer
        if scorer is None:
            self.scorer_ = ThresholdScorer().fit(features, is_member)
        else:
            self.scorer_ = scorer.fit(features, is_member)
        return self

    def score_features(self, features: np.ndarray) -> np.ndarray:
        return self.scorer_.score(features)
