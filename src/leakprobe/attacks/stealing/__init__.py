"""Encoder stealing methods, looked up by name (``--method contsteal,rda,...`` or ``all``)."""

from __future__ import annotations

from leakprobe.attacks.registry import AttackTable, create_attack
from leakprobe.attacks.stealing.base import StealingMethod
from leakprobe.attacks.stealing.contsteal import ContSteal, ContStealFresh, contsteal_loss
from leakprobe.attacks.stealing.conventional import CosineSteal, MSESteal
from leakprobe.attacks.stealing.queries import QueryCache
from leakprobe.attacks.stealing.rda import RDA, rda_loss, rda_prototypes
from leakprobe.attacks.stealing.stolenencoder import StolenEncoder

# name -> class, a view of the registry (leakprobe.attacks.registry)
STEALING_METHODS = AttackTable("stealing")


def create_stealing_method(name: str, **kwargs) -> StealingMethod:
    """Build the stealing method ``name`` (``create_attack(name, family="stealing")``)."""
    return create_attack(name, family="stealing", **kwargs)


__all__ = ["RDA", "STEALING_METHODS", "ContSteal", "ContStealFresh", "CosineSteal", "MSESteal",
           "QueryCache", "StealingMethod", "StolenEncoder", "contsteal_loss",
           "create_stealing_method", "rda_loss", "rda_prototypes"]
