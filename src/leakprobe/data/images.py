"""The one container every stage passes around: images in [0,1] plus ids.

The pixels are either one in-memory float tensor or a :class:`~leakprobe.data.stream.LazyImages`
read from disk batch by batch (image folders, IDX and CIFAR data sets). Steps that stream
(audits, steals, utility probes, training) read them with :meth:`ImageSet.batches` /
:meth:`ImageSet.take`; :attr:`ImageSet.images` holds the whole set in memory, under the
memory cap of :mod:`leakprobe.data.stream`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from leakprobe.data.stream import Images, LazyImages, image_batches, materialize, select, take
from leakprobe.errors import LeakprobeError

HASH_VALUES = 1 << 23  # pixel values quantised and hashed together (~32 MB as floats)


def quantised_hashes(x: torch.Tensor) -> list[str]:
    """SHA-256 of each (3, H, W) image quantised to 8 bits."""
    q = (x.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()
    return [hashlib.sha256(q[i].numpy().tobytes()).hexdigest() for i in range(q.shape[0])]


class ImageSet:
    """A set of same-sized RGB images with ids and optional per-sample annotations.

    Args:
        images: (N, 3, H, W) float32 in [0, 1], or a :class:`LazyImages` of that shape.
        ids: one unique string per image (file name, ``synthetic:17``, ...).
        labels: optional (N,) int64 class labels (used for utility: k-NN / linear probe).
        extras: optional per-sample annotations keyed by name (masks, captions, targets);
            each value is a tensor or list of length N.
        source: how the set was obtained (a data spec such as ``synthetic:2000`` or a folder),
            recorded in split manifests.
    """

    def __init__(self, images: Images, ids: list[str], labels: torch.Tensor | None = None,
                 extras: dict[str, Any] | None = None, source: str = "") -> None:
        self.pixels: Images = images
        self.ids = ids
        self.labels = labels
        self.extras: dict[str, Any] = {} if extras is None else extras
        self.source = source
        shape = tuple(images.shape)
        if len(shape) != 4 or shape[1] != 3:
            raise LeakprobeError(f"images must be (N,3,H,W), got shape {shape}")
        if len(ids) != shape[0]:
            raise LeakprobeError(f"{len(ids)} ids for {shape[0]} images")
        if labels is not None and labels.shape[0] != shape[0]:
            raise LeakprobeError(f"{labels.shape[0]} labels for {shape[0]} images")

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def __repr__(self) -> str:
        return f"ImageSet(n={len(self)}, size={self.image_size}, source={self.source!r})"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.pixels.shape)

    @property
    def image_size(self) -> int:
        return int(self.pixels.shape[-1])

    @property
    def streamed(self) -> bool:
        """True when the pixels are read from their source batch by batch."""
        return isinstance(self.pixels, LazyImages)

    @property
    def images(self) -> torch.Tensor:
        """All pixels as one (N, 3, H, W) float tensor (a streamed set is read whole, under
        the memory cap)."""
        return materialize(self.pixels, f"holding {self.source or 'the image set'} whole")

    def batches(self, batch_size: int, size: int | None = None) -> Iterator[torch.Tensor]:
        """Float batches in order, resized to ``size`` when given."""
        return image_batches(self.pixels, batch_size, size)

    def take(self, positions: torch.Tensor | np.ndarray | Sequence[int]) -> torch.Tensor:
        """The float images at ``positions`` (one batch)."""
        return take(self.pixels, positions)

    def subset(self, index: torch.Tensor | Sequence[int]) -> ImageSet:
        """The images at ``index`` (positions), with their ids, labels and extras."""
        idx = torch.as_tensor(index, dtype=torch.long)
        pos = idx.tolist()
        extras = {
            k: v[idx] if isinstance(v, torch.Tensor) else [v[i] for i in pos]
            for k, v in self.extras.items()
        }
        labels = None if self.labels is None else self.labels[idx]
        return ImageSet(select(self.pixels, idx), [self.ids[i] for i in pos], labels, extras,
                        self.source)

    def content_hashes(self) -> list[str]:
        """SHA-256 of each image quantised to 8 bits: equal pictures get equal hashes.

        A streamed set is read once, batch by batch (and an unreadable file fails here, before
        any query).
        """
        out: list[str] = []
        batch = max(1, min(256, HASH_VALUES // (3 * self.image_size ** 2)))
        for x in self.batches(batch):
            out.extend(quantised_hashes(x))
        return out


def concat(sets: list[ImageSet]) -> ImageSet:
    """Concatenate image sets of the same image size (labels kept only if all have them).

    In-memory sets give an in-memory set; any streamed part gives a streamed set.
    """
    if not sets:
        raise LeakprobeError("nothing to concatenate")
    label_parts = [s.labels for s in sets if s.labels is not None]
    labels = torch.cat(label_parts) if len(label_parts) == len(sets) else None
    keys = set.intersection(*(set(s.extras) for s in sets))
    extras: dict[str, Any] = {}
    for k in keys:
        vals = [s.extras[k] for s in sets]
        extras[k] = torch.cat(vals) if isinstance(vals[0], torch.Tensor) else sum(vals, [])
    parts = [s.pixels for s in sets]
    pixels: Images = (LazyImages.concat(parts) if any(isinstance(p, LazyImages) for p in parts)
                      else torch.cat([p for p in parts if isinstance(p, torch.Tensor)]))
    return ImageSet(pixels, sum((s.ids for s in sets), []), labels, extras, sets[0].source)
