"""M4I: membership inference on image-captioning models (Hu et al., NeurIPS 2022).

Threat model: black box; the attacker sends an image and reads the generated caption only.
It holds the reference captions of the images it tests and data of its own from the same
distribution, on which it trains a shadow captioner (shadow members vs shadow non-members)
to fit its classifiers; the classifiers then score the target's captions.

- ``m4i-metric``: the generated caption against each reference caption: ROUGE-1, ROUGE-2,
  ROUGE-L F-scores and BLEU-1..4, averaged over the references -> 7 features -> a classifier
  (``svm``: linear SVM as in the paper; ``logreg``; ``mlp``).
- ``m4i-feature``: a multimodal feature extractor, trained on the attacker's own data to map
  an image (CNN -> 256) and its caption (bag of words -> 512 -> 256) to the same point (MSE,
  as the paper); the membership feature is |image embedding - text embedding of the
  generated caption| -> MLP classifier.

Departures from the reference code: shadow and target members are checked to be disjoint,
and non-members are drawn from the same distribution as members (the reference code uses a
different data set for non-members, which inflates its numbers).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from torch import nn

from leakprobe.attacks.membership._common import MembershipAttack, NeuralScorer, check_features
from leakprobe.data.images import ImageSet
from leakprobe.errors import LeakprobeError


def _references(samples: ImageSet) -> list[list[str]]:
    refs = samples.extras.get("captions")
    if refs is None:
        raise LeakprobeError("captioning samples need reference captions")
    return refs


def _fit_classifier(kind: str, x: np.ndarray, y: np.ndarray, seed: int):
    if kind == "svm":
        return make_pipeline(StandardScaler(), LinearSVC(C=1.0, random_state=seed)).fit(x, y)
    if kind == "logreg":
        return make_pipeline(StandardScaler(),
                             LogisticRegression(max_iter=2000, random_state=seed)).fit(x, y)
    if kind == "mlp":
        return NeuralScorer("mlp", epochs=100, seed=seed).fit(x, y)
    raise LeakprobeError(f"classifier must be svm, logreg or mlp, got {kind!r}")


def _classifier_scores(model, x: np.ndarray) -> np.ndarray:
    if isinstance(model, NeuralScorer):
        return model.score(x)
    return model.decision_function(x)


class M4IMetric(MembershipAttack):
    """Metric-based M4I: n-gram scores of the generated caption -> classifier."""

    name = "m4i-metric"
    sample_kind = "pairs"

    def __init__(self, classifier: str = "svm", seed: int = 0) -> None:
        self.classifier = classifier
        self.seed = seed

    def queries_per_image(self, target) -> int:
        return 1

    def features(self, target, samples: ImageSet) -> np.ndarray:  # type: ignore[override]
        from leakprobe.evaluation.text_metrics import caption_metric_features

        captions = target.caption(samples.images)
        rows = [caption_metric_features(c, r) for c, r in zip(captions, _references(samples),
                                                                strict=True)]
        return check_features(np.asarray(rows, dtype=np.float64), self.name)

    def fit_features(self, features: np.ndarray, is_member: np.ndarray) -> M4IMetric:
        self.model_ = _fit_classifier(self.classifier, features, np.asarray(is_member, int),
                                      self.seed)
        return self

    def score_features(self, features: np.ndarray) -> np.ndarray:
        return _classifier_scores(self.model_, features)


class MultimodalExtractor(nn.Module):
    """Image branch (CNN -> 256) and bag-of-words text branch (V -> 512 -> 256)."""

    def __init__(self, vocab_size: int, dim: int = 256, width: int = 16) -> None:
        super().__init__()
        self.image = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, 1, 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, dim),
        )
        self.text = nn.Sequential(nn.Linear(vocab_size, 512), nn.ReLU(), nn.Linear(512, dim))

    def forward(self, images: torch.Tensor, bow: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.image((images - 0.5) / 0.25), self.text(bow)


def bag_of_words(texts: list[str], tokenizer) -> torch.Tensor:
    """(N, V) word counts (special tokens dropped), normalised to sum 1."""
    bow = torch.zeros(len(texts), len(tokenizer))
    for i, text in enumerate(texts):
        ids = [t for t in tokenizer.encode(text, 64) if t > 3]
        if ids:
            bow[i].index_add_(0, torch.tensor(ids), torch.ones(len(ids)))
    return bow / bow.sum(1, keepdim=True).clamp_min(1)


class M4IFeature(MembershipAttack):
    """Feature-based M4I: |image embedding - caption embedding| -> MLP.

    Call :meth:`prepare` with the attacker's own captioned data first (the audit does).
    """

    name = "m4i-feature"
    sample_kind = "pairs"

    def __init__(self, epochs: int = 30, dim: int = 256, seed: int = 0) -> None:
        self.epochs = epochs
        self.dim = dim
        self.seed = seed

    def queries_per_image(self, target) -> int:
        return 1

    def prepare(self, public: ImageSet) -> M4IFeature:
        """Train the multimodal extractor to align images and their captions (MSE)."""
        from leakprobe.data.captions import Tokenizer

        refs = _references(public)
        self.tokenizer_ = Tokenizer.fit([c for cs in refs for c in cs])
        torch.manual_seed(self.seed)
        g = torch.Generator().manual_seed(self.seed)
        model = MultimodalExtractor(len(self.tokenizer_), self.dim)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        images = public.images
        for _ in range(self.epochs):
            for idx in torch.randperm(len(public), generator=g).split(64):
                texts = [refs[i][int(torch.randint(len(refs[i]), (1,), generator=g))]
                         for i in idx.tolist()]
                img, txt = model(images[idx], bag_of_words(texts, self.tokenizer_))
                loss = F.mse_loss(img, txt)
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.extractor_ = model.eval()
        return self

    def features(self, target, samples: ImageSet) -> np.ndarray:  # type: ignore[override]
        if not hasattr(self, "extractor_"):
            raise LeakprobeError("m4i-feature needs prepare(public_data) before features")
        captions = target.caption(samples.images)
        with torch.inference_mode():
            img, txt = self.extractor_(samples.images, bag_of_words(captions, self.tokenizer_))
        return check_features((img - txt).abs().double().numpy(), self.name)

    def clone(self) -> M4IFeature:
        fresh = super().clone()
        if hasattr(self, "extractor_"):  # the extractor is public-data state, not fit state
            fresh.extractor_, fresh.tokenizer_ = self.extractor_, self.tokenizer_
        return fresh  # type: ignore[return-value]

    def fit_features(self, features: np.ndarray, is_member: np.ndarray) -> M4IFeature:
        self.model_ = NeuralScorer("mlp", epochs=100, seed=self.seed).fit(
            features, np.asarray(is_member, int))
        return self

    def score_features(self, features: np.ndarray) -> np.ndarray:
        return self.model_.score(features)


CAPTION_ATTACKS = {"m4i-metric": M4IMetric, "m4i-feature": M4IFeature}
