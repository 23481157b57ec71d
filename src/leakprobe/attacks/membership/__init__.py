"""Membership attacks on encoders, looked up by name (``--attacks partcrop,encodermi,lpla``).

The names, aliases and ``all`` live in :mod:`leakprobe.attacks.registry` (family
``encoder``); the tables and functions below are views of it, kept for existing callers.
``all`` is the papers' methods plus the baselines. PartCrop's token attacks (``partcrop``,
``partcrop-cosine``) need tokens in the target's embedding space: for a target known to lack
them (see :func:`~leakprobe.attacks.membership.partcrop.token_problem`), an alias that holds
one runs ``partcrop-pooled`` in its place, and a token attack named explicitly is refused.
"""

from __future__ import annotations

from leakprobe.attacks import registry
from leakprobe.attacks.membership._common import LabeledImages, MembershipAttack, ViewAttack
from leakprobe.attacks.membership.baselines import AugmentationConsistency, EmbeddingNorm
from leakprobe.attacks.membership.blind import Blind
from leakprobe.attacks.membership.encodermi import EncoderMI
from leakprobe.attacks.membership.infonce import ContrastiveLoss
from leakprobe.attacks.membership.lpla import LpLA
from leakprobe.attacks.membership.partcrop import (
    PartCrop,
    PartCropPooled,
    PartCropV2,
    token_problem,
)
from leakprobe.attacks.membership.sslmem import SSLMemAlignment

# isort: split
# last: the calibrated attacks wrap the others' statistics (and list after them)
from leakprobe.attacks.membership.calibrated import CalibratedAttack

# name -> factory, and alias -> names: views of the registry's encoder family
ENCODER_ATTACKS = registry.AttackTable("encoder")
ALIASES = registry.AliasTable("encoder")


def expand_attack_names(spec: str | list[str], no_tokens: str | None = None) -> list[str]:
    """``"partcrop,encodermi"`` -> concrete encoder attack names, aliases expanded, order kept.

    See :func:`leakprobe.attacks.registry.expand_attacks` (``no_tokens``: why the target's
    tokens cannot serve PartCrop, or None).
    """
    return registry.expand_attacks(spec, family="encoder", no_tokens=no_tokens)


def create_attack(name: str, **kwargs) -> MembershipAttack:
    """Build the encoder attack ``name`` (one of :data:`ENCODER_ATTACKS`)."""
    return registry.create_attack(name, family="encoder", **kwargs)


__all__ = [
    "ALIASES", "ENCODER_ATTACKS", "AugmentationConsistency", "Blind", "CalibratedAttack",
    "ContrastiveLoss", "EmbeddingNorm", "SSLMemAlignment",
    "EncoderMI", "LabeledImages", "LpLA", "MembershipAttack", "PartCrop", "PartCropPooled",
    "PartCropV2", "ViewAttack", "create_attack", "expand_attack_names", "token_problem",
]
