"""The query interfaces an attack may be pointed at, gathered in one place.

Each family of target declares what an attacker can ask of it:

- :class:`~leakprobe.targets.encoder.Encoder`: ``embed`` (and optionally ``tokens``);
- :class:`~leakprobe.targets.image2image.ImageToImage`: ``translate``;
- :class:`~leakprobe.targets.captioner.Captioner`: ``caption``.

:data:`Target` is their union: the type of whatever an audit queries (local adapters, HTTP
clients and user objects alike; the protocols are structural, nothing needs to inherit).
"""

from __future__ import annotations

from typing import TypeAlias

from leakprobe.targets.captioner import Captioner
from leakprobe.targets.encoder import Encoder
from leakprobe.targets.image2image import ImageToImage

__all__ = ["Captioner", "Encoder", "ImageToImage", "Target"]

Target: TypeAlias = Encoder | ImageToImage | Captioner
