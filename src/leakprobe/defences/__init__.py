"""Defences for SSL encoders: the recipe change each one makes, and its validation.

One module per concept: :mod:`.early_stopping`, :mod:`.dp_sgd` and :mod:`.scsr` (the recipe
transforms), :mod:`.kinds` (the one vocabulary of defence names) and :mod:`.setting` (one
setting -> the recipe to train, used by both the study grid and the defence sweep). Training,
auditing and measuring a defence at several strengths is a workflow
(:mod:`leakprobe.workflows.defend`, ``leakprobe defend encoder``) or a study
(:mod:`leakprobe.study`).

The names below are imported on first use (PEP 562), so :mod:`.kinds` loads without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from leakprobe._lazy import lazy_exports

# public name -> module that defines it
_EXPORTS = {
    "DEFAULT_LOWER_BOUNDS": "leakprobe.defences.scsr",
    "scsr_recipe": "leakprobe.defences.scsr",
    "dp_train_config": "leakprobe.defences.dp_sgd",
    "early_stopping_config": "leakprobe.defences.early_stopping",
    "stop_at": "leakprobe.defences.early_stopping",
    "DEFENCE_ALIASES": "leakprobe.defences.kinds",
    "DEFENCE_KINDS": "leakprobe.defences.kinds",
    "SWEEP_DEFENCES": "leakprobe.defences.kinds",
    "resolve_defence": "leakprobe.defences.kinds",
    "DefenceOptions": "leakprobe.defences.setting",
    "DefenceSetting": "leakprobe.defences.setting",
    "defence_setting": "leakprobe.defences.setting",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:  # static analysers see the real names
    from leakprobe.defences.dp_sgd import dp_train_config  # noqa: F401
    from leakprobe.defences.early_stopping import early_stopping_config, stop_at  # noqa: F401
    from leakprobe.defences.kinds import (  # noqa: F401
        DEFENCE_ALIASES,
        DEFENCE_KINDS,
        SWEEP_DEFENCES,
        resolve_defence,
    )
    from leakprobe.defences.scsr import DEFAULT_LOWER_BOUNDS, scsr_recipe  # noqa: F401
    from leakprobe.defences.setting import (  # noqa: F401
        DefenceOptions,
        DefenceSetting,
        defence_setting,
    )
