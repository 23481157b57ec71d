"""The blind attack: a model-free classifier on image statistics alone (no queries).

It never looks at the model, so it cannot detect leakage; what it detects is a difference in
distribution between the member and non-member sets (different sources, sizes, colours,
compression...). Its AUC is the floor against which every other attack is read: when its
interval lies above 0.5, part of any attack's AUC is that difference, not memorisation
(Das et al., "Blind Baselines Beat Membership Inference Attacks for Foundation Models").

Features: per-channel mean, std and quantiles, a 16-bin luminance histogram, saturation
statistics, gradient energy and a 4x4 colour thumbnail. Classifier: L2-regularised logistic
regression on standardised features.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from leakprobe.attacks.membership._common import MembershipAttack
from leakprobe.attacks.registry import register_attack
from leakprobe.data.stream import Images, image_batches

STATISTICS_VALUES = 1 << 22  # pixel values whose statistics are computed together (~16 MB)


def image_statistics(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> (N, F) model-free statistics."""
    x = images.double()
    n = x.shape[0]
    flat = x.flatten(2)
    q = torch.quantile(flat, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=x.dtype), dim=2)
    luma = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    hist = torch.stack(
        [((luma >= lo) & (luma < lo + 1 / 16)).double().mean((1, 2))
         for lo in torch.linspace(0, 1, 17)[:-1].tolist()], dim=1
    )
    sat = x.amax(1) - x.amin(1)
    gx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean((1, 2, 3))
    gy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3))
    thumb = F.adaptive_avg_pool2d(x, 4).reshape(n, -1)
    feats = [flat.mean(2), flat.std(2), q.permute(1, 2, 0).reshape(n, -1), hist,
             sat.mean((1, 2))[:, None], sat.std((1, 2))[:, None], gx[:, None], gy[:, None], thumb]
    return torch.cat(feats, dim=1).numpy()


@register_attack("blind", family="encoder",
                 summary="blind floor (Das et al.), always run: image statistics only, no "
                 "query; measures how the member and non-member sets differ, not the model")
class Blind(MembershipAttack):
    """Distribution-shift floor: logistic regression on image statistics; makes no query."""

    target_kind = None
    model_free = True

    def __init__(self, regularization: float = 1.0, seed: int = 0) -> None:
        self.regularization = regularization
        self.seed = seed

    def queries_per_image(self, target) -> int:
        return 0

    def features(self, target, images: Images) -> np.ndarray:
        h, w = images.shape[-2:]
        batch = max(1, min(256, STATISTICS_VALUES // (3 * h * w)))  # float64 copies stay small
        parts = [image_statistics(x) for x in image_batches(images, batch)]
        return np.concatenate(parts) if parts else np.empty((0, 0))

    def fit_features(self, features: np.ndarray, is_member: np.ndarray) -> Blind:
        self.model_ = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=self.regularization, max_iter=2000, random_state=self.seed),
        ).fit(features, np.asarray(is_member, dtype=int))
        return self

    def score_features(self, features: np.ndarray) -> np.ndarray:
        return self.model_.decision_function(features)
