"""The one container every stage passes around: images as float tensors in [0,1] plus ids."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from leakprobe.errors import LeakprobeError


@dataclass
class ImageSet:
    """A set of same-sized RGB images with ids and optional per-sample annotations.

    Attributes:
        images: (N, 3, H, W) float32 in [0, 1].
        ids: one unique string per image (file name, ``synthetic:17``, ...).
        labels: optional (N,) int64 class labels (used for utility: k-NN / linear probe).
        extras: optional per-sample annotations keyed by name (masks, captions, targets);
            each value is a tensor or list of length N.
        source: how the set was obtained (a data spec such as ``synthetic:2000`` or a folder),
            recorded in split manifests.
    """

    images: torch.Tensor
    ids: list[str]
    labels: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        x = self.images
        if x.ndim != 4 or x.shape[1] != 3:
            raise LeakprobeError(f"images must be (N,3,H,W), got shape {tuple(x.shape)}")
        if len(self.ids) != x.shape[0]:
            raise LeakprobeError(f"{len(self.ids)} ids for {x.shape[0]} images")
        if self.labels is not None and self.labels.shape[0] != x.shape[0]:
            raise LeakprobeError(f"{self.labels.shape[0]} labels for {x.shape[0]} images")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def subset(self, index: torch.Tensor | Sequence[int]) -> ImageSet:
        """The images at ``index`` (positions), with their ids, labels and extras."""
        idx = torch.as_tensor(index, dtype=torch.long)
        pos = idx.tolist()
        extras = {
            k: v[idx] if isinstance(v, torch.Tensor) else [v[i] for i in pos]
            for k, v in self.extras.items()
        }
        labels = None if self.labels is None else self.labels[idx]
        return ImageSet(self.images[idx], [self.ids[i] for i in pos], labels, extras, self.source)

    def content_hashes(self) -> list[str]:
        """SHA-256 of each image quantised to 8 bits: equal pictures get equal hashes."""
        q = (self.images.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()
        return [hashlib.sha256(q[i].numpy().tobytes()).hexdigest() for i in range(len(self))]


def concat(sets: list[ImageSet]) -> ImageSet:
    """Concatenate image sets of the same image size (labels kept only if all have them)."""
    if not sets:
        raise LeakprobeError("nothing to concatenate")
    label_parts = [s.labels for s in sets if s.labels is not None]
    labels = torch.cat(label_parts) if len(label_parts) == len(sets) else None
    keys = set.intersection(*(set(s.extras) for s in sets))
    extras: dict[str, Any] = {}
    for k in keys:
        vals = [s.extras[k] for s in sets]
        extras[k] = torch.cat(vals) if isinstance(vals[0], torch.Tensor) else sum(vals, [])
    return ImageSet(
        torch.cat([s.images for s in sets]),
        sum((s.ids for s in sets), []),
        labels,
        extras,
        sets[0].source,
    )
