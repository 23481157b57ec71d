"""Deprecated alias of :mod:`leakprobe.defences` (renamed to the spelling of the CLI and reports).

``from leakprobe.defenses import scsr_recipe`` still works (with a ``DeprecationWarning``);
import from :mod:`leakprobe.defences` instead.
"""

from __future__ import annotations

import warnings
from typing import Any

import leakprobe.defences as _defences

warnings.warn("leakprobe.defenses is deprecated; import leakprobe.defences instead",
              DeprecationWarning, stacklevel=2)

__all__ = list(_defences.__all__)


def __getattr__(name: str) -> Any:
    return getattr(_defences, name)
