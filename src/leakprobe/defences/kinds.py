"""The one vocabulary of defences, shared by the study grid and ``leakprobe defend encoder``.

A defence **kind** is one of :data:`DEFENCE_KINDS`; each value of a setting measures one
**strength** (:data:`STRENGTH_NAMES`): ``epochs`` (early stopping), ``noise_multiplier`` or
``target_epsilon`` (DP-SGD), ``crop_min`` (SCSR); ``none`` has none. An alias
(:data:`DEFENCE_ALIASES`) names a kind and its strength at once: ``dp-epsilon`` is ``dp``
measured by ``target_epsilon`` (the spelling of ``defend encoder --defence``; a study YAML
may use it too). This module imports nothing heavy (no torch), so configs can validate names
cheaply.
"""

from __future__ import annotations

from leakprobe.errors import LeakprobeError

DEFENCE_KINDS = ("none", "early-stopping", "dp", "scsr")
# kind -> what its values may measure (the first is the default)
STRENGTH_NAMES: dict[str, tuple[str, ...]] = {
    "none": ("",),
    "early-stopping": ("epochs",),
    "dp": ("noise_multiplier", "target_epsilon"),
    "scsr": ("crop_min",),
}
# alias -> (kind, strength name)
DEFENCE_ALIASES: dict[str, tuple[str, str]] = {"dp-epsilon": ("dp", "target_epsilon")}
# the names ``defend encoder --defence`` sweeps (kinds that have a strength, and the alias)
SWEEP_DEFENCES = ("early-stopping", "dp", "dp-epsilon", "scsr")
# strength name -> axis label of the plots
STRENGTH_AXIS_LABELS: dict[str, str] = {
    "epochs": "training epochs",
    "noise_multiplier": "DP-SGD noise multiplier",
    "target_epsilon": "DP-SGD target epsilon",
    "crop_min": "crop-scale lower bound",
}


def resolve_defence(name: str, strength_name: str | None = None) -> tuple[str, str]:
    """``(kind, strength_name)`` of a defence kind or alias.

    Args:
        name: a kind (:data:`DEFENCE_KINDS`) or an alias (:data:`DEFENCE_ALIASES`).
        strength_name: what the values measure (default: the alias's, else the kind's first;
            ``""`` counts as not given).
    Raises:
        LeakprobeError: an unknown name, or a strength the kind (or alias) does not measure.
    """
    kind, implied = DEFENCE_ALIASES.get(name, (name, None))
    if kind not in STRENGTH_NAMES:
        known = ", ".join((*DEFENCE_KINDS, *DEFENCE_ALIASES))
        raise LeakprobeError(f"unknown defence {name!r}; known: {known}")
    allowed = (implied,) if implied else STRENGTH_NAMES[kind]
    strength_name = strength_name or allowed[0]
    if strength_name not in allowed:
        raise LeakprobeError(f"defence {name!r} is measured by {' or '.join(allowed)}, not "
                             f"{strength_name!r}")
    return kind, strength_name
