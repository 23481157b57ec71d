"""Membership attacks, looked up by name (``--attacks partcrop,encodermi,lpla,baseline``)."""

from __future__ import annotations

from collections.abc import Callable

from leakprobe.attacks.membership._common import LabeledImages, MembershipAttack
from leakprobe.attacks.membership.baselines import AugmentationConsistency, EmbeddingNorm
from leakprobe.attacks.membership.blind import Blind
from leakprobe.attacks.membership.encodermi import EncoderMI
from leakprobe.attacks.membership.lpla import LpLA
from leakprobe.attacks.membership.partcrop import PartCrop
from leakprobe.errors import LeakprobeError

ENCODER_ATTACKS: dict[str, Callable[..., MembershipAttack]] = {
    "partcrop": PartCrop,
    "encodermi-vector": lambda **kw: EncoderMI(variant="vector", **kw),
    "encodermi-set": lambda **kw: EncoderMI(variant="set", **kw),
    "encodermi-threshold": lambda **kw: EncoderMI(variant="threshold", **kw),
    "lpla-p1": lambda **kw: LpLA(p=1, **kw),
    "lpla-p2": lambda **kw: LpLA(p=2, **kw),
    "lpla-pinf": lambda **kw: LpLA(p="inf", **kw),
    "baseline-norm": EmbeddingNorm,
    "baseline-consistency": AugmentationConsistency,
    "blind": Blind,
}
ALIASES = {
    "encodermi": ["encodermi-vector", "encodermi-set", "encodermi-threshold"],
    "lpla": ["lpla-p1", "lpla-p2", "lpla-pinf"],
    "baseline": ["baseline-norm", "baseline-consistency"],
    "all": ["partcrop", "encodermi", "lpla", "baseline"],
}


def expand_attack_names(spec: str | list[str]) -> list[str]:
    """``"partcrop,encodermi"`` -> concrete attack names, aliases expanded, order kept."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for raw in names:
        name = raw.strip().lower()
        if not name:
            continue
        if name in ALIASES:
            out += [n for n in expand_attack_names(ALIASES[name]) if n not in out]
        elif name in ENCODER_ATTACKS:
            if name not in out:
                out.append(name)
        else:
            known = sorted(set(ENCODER_ATTACKS) | set(ALIASES))
            raise LeakprobeError(f"unknown attack '{raw}'; known: {', '.join(known)}")
    return out


def create_attack(name: str, **kwargs) -> MembershipAttack:
    """Build the encoder attack ``name`` (one of :data:`ENCODER_ATTACKS`)."""
    if name not in ENCODER_ATTACKS:
        raise LeakprobeError(f"unknown attack '{name}'")
    return ENCODER_ATTACKS[name](**kwargs)


__all__ = [
    "ALIASES", "ENCODER_ATTACKS", "AugmentationConsistency", "Blind", "EmbeddingNorm",
    "EncoderMI", "LabeledImages", "LpLA", "MembershipAttack", "PartCrop", "create_attack",
    "expand_attack_names",
]
