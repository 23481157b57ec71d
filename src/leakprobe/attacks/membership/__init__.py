"""Membership attacks, looked up by name (``--attacks partcrop,encodermi,lpla,baseline``).

``all`` is the papers' methods plus the baselines. PartCrop's token attacks (``partcrop``,
``partcrop-cosine``) need tokens in the target's embedding space: for a target known to lack
them (see :func:`~leakprobe.attacks.membership.partcrop.token_problem`), an alias that holds
one runs ``partcrop-pooled`` in its place, and a token attack named explicitly is refused.
"""

from __future__ import annotations

from collections.abc import Callable

from leakprobe.attacks.membership._common import LabeledImages, MembershipAttack
from leakprobe.attacks.membership.baselines import AugmentationConsistency, EmbeddingNorm
from leakprobe.attacks.membership.blind import Blind
from leakprobe.attacks.membership.encodermi import EncoderMI
from leakprobe.attacks.membership.lpla import LpLA
from leakprobe.attacks.membership.partcrop import (
    COSINE_SIMILARITY,
    COSINE_TEMPERATURE,
    POOLED,
    PartCrop,
    PartCropPooled,
    needs_tokens_error,
    token_problem,
)
from leakprobe.errors import LeakprobeError

ENCODER_ATTACKS: dict[str, Callable[..., MembershipAttack]] = {
    "partcrop": PartCrop,  # the paper's: raw dot product, temperature 1
    "partcrop-cosine": lambda **kw: PartCrop(similarity=COSINE_SIMILARITY,
                                             temperature=COSINE_TEMPERATURE, **kw),
    "partcrop-pooled": PartCropPooled,  # without usable tokens: part-vs-whole cosines
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
    "partcrop-variants": ["partcrop", "partcrop-cosine", "partcrop-pooled"],
    "all": ["partcrop", "encodermi", "lpla", "baseline"],
}
# Attacks that compare part embeddings with the whole image's tokens.
TOKEN_ATTACKS = ("partcrop", "partcrop-cosine")


def expand_attack_names(spec: str | list[str], no_tokens: str | None = None) -> list[str]:
    """``"partcrop,encodermi"`` -> concrete attack names, aliases expanded, order kept.

    Args:
        spec: comma list or list of attack names and aliases.
        no_tokens: why the target's tokens cannot serve PartCrop (``token_problem(target)``),
            or None. When given, a token attack reached through an alias becomes
            ``partcrop-pooled`` and one named explicitly is an error.
    """
    out: list[str] = []
    for name, via_alias in _expand(spec, False):
        if no_tokens and name in TOKEN_ATTACKS:
            if not via_alias:
                raise needs_tokens_error(name, no_tokens)
            name = POOLED
        if name not in out:
            out.append(name)
    return out


def _expand(spec: str | list[str], via_alias: bool) -> list[tuple[str, bool]]:
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[tuple[str, bool]] = []
    for raw in names:
        name = raw.strip().lower()
        if not name:
            continue
        if name in ALIASES:
            out += _expand(ALIASES[name], True)
        elif name in ENCODER_ATTACKS:
            out.append((name, via_alias))
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
    "EncoderMI", "LabeledImages", "LpLA", "MembershipAttack", "PartCrop", "PartCropPooled",
    "TOKEN_ATTACKS", "create_attack", "expand_attack_names", "token_problem",
]
