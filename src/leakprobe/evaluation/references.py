"""Reference models for calibrated attacks: what each trained on, and the population samples.

A :class:`ReferenceModels` holds R local models (encoders, or image-text models whose
statistics read captioned samples: an :class:`ImageSet` is then passed where an encoder
statistic takes pixels, and its captions are part of what the statistic depends on), the
content hashes of the images each trained on (None for a model the user brings, whose
training data is unknown but declared disjoint from the audited images), and the population
samples Z: attacker-owned images, queried on the target and on every reference, that RMIA
compares each candidate with and that tell a statistic's member direction (the references
trained on about half of them).

Statistics are computed once per (statistic, model, image set) and shared by every calibrated
attack of an audit (``lira-encodermi`` and ``rmia-encodermi`` pay the target's queries once).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from leakprobe.data.images import ImageSet, quantised_hashes
from leakprobe.data.stream import Images, image_batches


def image_hashes(images: Images) -> list[str]:
    """Content hash of each image (as :meth:`ImageSet.content_hashes`), streamed."""
    out: list[str] = []
    for x in image_batches(images, 256):
        out.extend(quantised_hashes(x))
    return out


@dataclass
class ReferenceModels:
    """Reference models and what they know.

    Attributes:
        encoders: local models (encoders with ``embed``, or image-text models), not counted
            as target queries.
        trained_on: per encoder, the content hashes of its training images (None: unknown,
            taken as OUT for every audited and population image).
        population: the population samples Z.
        online: True when the references also trained on audited candidates (about half of
            them each), so every candidate has IN and OUT references.
        description: what the report records (count, recipe, whether it matches the target).
    """

    encoders: list[Any]
    trained_on: list[frozenset[str] | None]
    population: ImageSet
    online: bool = False
    description: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False)
    _hashes: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if len(self.encoders) != len(self.trained_on):
            raise ValueError("one trained_on entry per reference encoder")
        self.population_in = self.trained_on_mask(self.population.pixels)

    def _hashes_of(self, images: Images | ImageSet) -> list[str]:
        key = id(images)
        if key not in self._hashes or self._hashes[key][0] is not images:
            pixels = images.pixels if isinstance(images, ImageSet) else images
            self._hashes[key] = (images, image_hashes(pixels))
        return self._hashes[key][1]

    def _digest(self, images: Images | ImageSet) -> str:
        """What a statistic of ``images`` depends on: their content (and captions)."""
        h = hashlib.sha256("".join(self._hashes_of(images)).encode())
        if isinstance(images, ImageSet) and "captions" in images.extras:
            h.update(json.dumps(images.extras["captions"]).encode())
        return h.hexdigest()

    def trained_on_mask(self, images: Images | ImageSet) -> np.ndarray:
        """(R, N) bool: reference r trained on image i (by content hash)."""
        hashes = self._hashes_of(images)
        return np.array([[h in t for h in hashes] if t is not None else [False] * len(hashes)
                         for t in self.trained_on], dtype=bool).reshape(len(self.trained_on),
                                                                          len(hashes))

    def statistic_of(self, stat, attack, model, images: Images | ImageSet) -> np.ndarray:
        """``stat`` of ``images`` on ``model`` through ``attack``'s features, computed once.

        Keyed by the statistic, the attack's parameters, the model and the images' content,
        so every calibrated attack of an audit shares it (the target's queries are paid once).
        """
        digest = self._digest(images)
        key = (stat.name, repr(sorted(attack.get_params().items())), id(model), digest)
        if key not in self._cache:
            self._cache[key] = (model, np.asarray(stat.of(attack.features(model, images)),
                                                  dtype=np.float64))
        return self._cache[key][1]

    def __len__(self) -> int:
        return len(self.encoders)
