"""Membership inference on image-to-image models (Shafran, Peleg, Hoshen, ICCV 2021).

Threat model: black box; the attacker sends an input and sees the model's output image, and
holds the ground-truth output of every sample it tests (it is auditing a data set). Members
are reproduced better than non-members, but difficulty confounds this: a flat image is
reproduced well whether or not it was trained on. The paper removes the confound:

- reconstruction error: mean L1 between the ground-truth output and the model's output, both
  in [0, 1]. Segmentation: mean L1 between the class probabilities and the one-hot label map
  (default, on the same scale as the predictability error), or per-pixel cross-entropy
  (``seg_error="ce"``), or 1 - mean IoU (``"iou"``);
- predictability error: how well a per-image linear regression from fixed per-pixel input
  features predicts the held-out 30% of the output's pixels (see ``predictability.py``);
  it needs no model and no training data;
- membership error = reconstruction error - predictability error (lower = member); the
  weighted form ``reconstruction - w * predictability`` fits ``w`` on known samples
  (grid search for the best AUC on the fit data).

Scores are negated errors (higher = member). Each audited sample costs one query.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from leakprobe.attacks.membership._common import MembershipAttack, check_features
from leakprobe.attacks.membership.pixel_features import create_pixel_features
from leakprobe.attacks.membership.predictability import predictability_error
from leakprobe.attacks.registry import register_attack
from leakprobe.data.images import ImageSet
from leakprobe.errors import LeakprobeError

SCORES = ("reconstruction", "predictability", "membership-error", "membership-error-weighted")


def ground_truth(samples: ImageSet, num_classes: int | None) -> torch.Tensor:
    """Ground-truth outputs (N, C, H, W) in [0, 1]: images, or one-hot label maps."""
    if "targets" in samples.extras:
        return samples.extras["targets"].float()
    if "masks" in samples.extras:
        masks = samples.extras["masks"].long()
        k = num_classes or int(masks.max()) + 1
        if int(masks.max()) >= k:
            raise LeakprobeError(f"label value {int(masks.max())} >= --num-classes {k}")
        return F.one_hot(masks, k).permute(0, 3, 1, 2).float()
    raise LeakprobeError("image-to-image samples need ground-truth outputs (targets/ folder)")


def reconstruction_error(output: torch.Tensor, truth: torch.Tensor, kind: str = "l1"):
    """(N,) error between model outputs and ground truth, both (N, C, H, W) in [0, 1]."""
    if output.shape[-2:] != truth.shape[-2:]:
        output = F.interpolate(output, size=truth.shape[-2:], mode="bilinear",
                               align_corners=False)
    if output.shape[1] != truth.shape[1]:
        raise LeakprobeError(f"model gives {output.shape[1]} output channels, the ground truth "
                             f"has {truth.shape[1]} (check --num-classes / the task)")
    if kind == "l1":
        return (output - truth).abs().mean(dim=(1, 2, 3))
    if kind == "ce":
        return -(truth * torch.log(output.clamp_min(1e-8))).sum(1).mean(dim=(1, 2))
    if kind == "iou":
        pred = F.one_hot(output.argmax(1), output.shape[1]).permute(0, 3, 1, 2).float()
        inter, union = (pred * truth).sum((2, 3)), ((pred + truth) > 0).float().sum((2, 3))
        present = union > 0
        iou = torch.where(present, inter / union.clamp_min(1), torch.zeros_like(inter))
        return 1 - iou.sum(1) / present.sum(1).clamp_min(1)
    raise ValueError(f"seg_error must be l1, ce or iou, got {kind!r}")


@register_attack("reconstruction", family="image2image", fixed={"statistic": "reconstruction"},
                 summary="reconstruction error of the model's output (Shafran et al., ICCV "
                 "2021); black box, ground truth held, 1 query")
@register_attack("predictability", family="image2image", fixed={"statistic": "predictability"},
                 summary="predictability error of the ground truth from pixel features: no "
                 "model, no query; the difficulty floor")
@register_attack("membership-error", family="image2image",
                 fixed={"statistic": "membership-error"},
                 summary="reconstruction minus predictability error (Shafran et al.); black "
                 "box, ground truth held, 1 query")
@register_attack("membership-error-weighted", family="image2image",
                 fixed={"statistic": "membership-error-weighted"},
                 summary="reconstruction - w x predictability error, w fitted on known "
                 "samples; black box, 1 query")
class ReconstructionMIA(MembershipAttack):
    """Reconstruction, predictability and membership-error attacks (one class, ``score``).

    Args:
        statistic: one of ``reconstruction``, ``predictability``, ``membership-error``,
            ``membership-error-weighted``.
        pixel_features: pixel feature extractor (``builtin`` or a registered backbone name).
        features_weights: safetensors weights for a backbone extractor.
        feature_size: common resolution of the pixel features (default: the extractor's).
        num_classes: segmentation classes (label maps), None for image outputs.
        seg_error: ``l1`` (default), ``ce`` or ``iou`` for segmentation outputs.
        ridge: predictability regression penalty (0: exact least squares).
        images_per_batch: samples per query / regression batch.
        seed: seeds the pixel split.
    """

    sample_kind = "pairs"
    target_kind = "image2image"

    def __init__(
        self,
        statistic: str = "membership-error",
        pixel_features: str = "builtin",
        features_weights: str | None = None,
        feature_size: int | None = None,
        num_classes: int | None = None,
        seg_error: str = "l1",
        ridge: float = 0.0,
        images_per_batch: int = 32,
        seed: int = 0,
    ) -> None:
        if statistic not in SCORES:
            raise ValueError(f"statistic must be one of {SCORES}, got {statistic!r}")
        self.statistic = statistic
        self.pixel_features = pixel_features
        self.features_weights = features_weights
        self.feature_size = feature_size
        self.num_classes = num_classes
        self.seg_error = seg_error
        self.ridge = ridge
        self.images_per_batch = images_per_batch
        self.seed = seed

    @property
    def name(self) -> str:
        return self.statistic

    @property
    def needs_fit(self) -> bool:
        return self.statistic == "membership-error-weighted"

    @property
    def model_free(self) -> bool:
        return self.statistic == "predictability"

    def queries_per_image(self, target) -> int:
        return 0 if self.statistic == "predictability" else 1

    def features(self, target, samples: ImageSet) -> np.ndarray:
        """(N, 2): reconstruction error (NaN-free; 0 when not needed) and predictability."""
        truth_all = ground_truth(samples, self.num_classes)
        need_recon = self.statistic != "predictability"
        need_pred = self.statistic != "reconstruction"
        extractor = create_pixel_features(self.pixel_features, self.features_weights,
                                          self.feature_size) if need_pred else None
        rows = []
        for start, inputs in zip(range(0, len(samples), self.images_per_batch),
                                 samples.batches(self.images_per_batch), strict=True):
            truth = truth_all[start:start + self.images_per_batch]
            recon = torch.zeros(inputs.shape[0])
            pred = torch.zeros(inputs.shape[0])
            if need_recon:
                kind = self.seg_error if "masks" in samples.extras else "l1"
                recon = reconstruction_error(target.translate(inputs), truth, kind)
            if extractor is not None:  # need_pred
                with torch.inference_mode():
                    feats = extractor(inputs)
                pred = predictability_error(feats, truth, ridge=self.ridge, seed=self.seed)
            rows.append(torch.stack([recon.float(), pred.float()], dim=1))
        return check_features(torch.cat(rows).double().numpy(), self.name)

    def fit_features(self, features: np.ndarray, is_member: np.ndarray) -> ReconstructionMIA:
        from leakprobe.evaluation.metrics import auc

        grid = np.linspace(0.0, 2.0, 41)
        aucs = [auc(-(features[:, 0] - w * features[:, 1]), is_member) for w in grid]
        self.weight_ = float(grid[int(np.argmax(aucs))])
        return self

    def score_features(self, features: np.ndarray) -> np.ndarray:
        recon, pred = features[:, 0], features[:, 1]
        if self.statistic == "reconstruction":
            return -recon
        if self.statistic == "predictability":
            return -pred
        if self.statistic == "membership-error":
            return -(recon - pred)
        return -(recon - self.weight_ * pred)

