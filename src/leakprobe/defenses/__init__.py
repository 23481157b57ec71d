"""Defences for SSL encoders: the recipe change each one makes, and its validation.

One module per concept: :mod:`.early_stopping`, :mod:`.dp_sgd` and :mod:`.scsr`. Training,
auditing and measuring a defence at several strengths is a workflow
(:mod:`leakprobe.workflows.defend`, ``leakprobe defend encoder``).
"""

from leakprobe.defenses.dp_sgd import dp_train_config
from leakprobe.defenses.early_stopping import early_stopping_config
from leakprobe.defenses.scsr import DEFAULT_LOWER_BOUNDS, scsr_recipe

__all__ = ["DEFAULT_LOWER_BOUNDS", "dp_train_config", "early_stopping_config", "scsr_recipe"]
