"""Encoder stealing methods, looked up by name (``--method contsteal|mse|cosine``)."""

from __future__ import annotations

from leakprobe.attacks.stealing.base import StealingMethod
from leakprobe.attacks.stealing.contsteal import ContSteal, contsteal_loss
from leakprobe.attacks.stealing.conventional import CosineSteal, MSESteal
from leakprobe.attacks.stealing.queries import QueryCache
from leakprobe.errors import LeakprobeError

STEALING_METHODS = {"contsteal": ContSteal, "mse": MSESteal, "cosine": CosineSteal}


def create_stealing_method(name: str, **kwargs) -> StealingMethod:
    """Build the stealing method ``name``."""
    if name not in STEALING_METHODS:
        raise LeakprobeError(f"unknown stealing method '{name}'; known: "
                             f"{', '.join(STEALING_METHODS)}")
    return STEALING_METHODS[name](**kwargs)


__all__ = ["STEALING_METHODS", "ContSteal", "CosineSteal", "MSESteal", "QueryCache",
           "StealingMethod", "contsteal_loss", "create_stealing_method"]
