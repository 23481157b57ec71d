"""Encoder stealing methods, looked up by name (``--method contsteal|mse|cosine``)."""

from __future__ import annotations

from leakprobe.attacks.registry import AttackTable, create_attack
from leakprobe.attacks.stealing.base import StealingMethod
from leakprobe.attacks.stealing.contsteal import ContSteal, contsteal_loss
from leakprobe.attacks.stealing.conventional import CosineSteal, MSESteal
from leakprobe.attacks.stealing.queries import QueryCache

# name -> class, a view of the registry (leakprobe.attacks.registry)
STEALING_METHODS = AttackTable("stealing")


def create_stealing_method(name: str, **kwargs) -> StealingMethod:
    """Build the stealing method ``name`` (``create_attack(name, family="stealing")``)."""
    return create_attack(name, family="stealing", **kwargs)


__all__ = ["STEALING_METHODS", "ContSteal", "CosineSteal", "MSESteal", "QueryCache",
           "StealingMethod", "contsteal_loss", "create_stealing_method"]
