"""Backbones in plain torch, looked up by name.

The names below are imported on first use (PEP 562), so :mod:`leakprobe.models.catalog` (what
``leakprobe models`` lists) is read without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leakprobe._lazy import lazy_exports

_EXPORTS = {name: "leakprobe.models.registry"
            for name in ("create_model", "list_models", "register_model")}

__all__ = ["create_model", "list_models", "register_model"]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:  # static analysers see the real names
    from leakprobe.models.registry import create_model, list_models, register_model  # noqa: F401
