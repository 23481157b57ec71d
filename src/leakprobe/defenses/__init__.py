"""Defences for SSL encoders and their privacy/utility trade-off.

One module per concept: :mod:`.early_stopping`, :mod:`.dp_sgd` and :mod:`.scsr` hold the
recipe change of each defence and its validation; :mod:`.sweep` trains, audits and measures
a defence at several strengths (``leakprobe defend encoder``).
"""

from leakprobe.defenses.dp_sgd import dp_train_config
from leakprobe.defenses.early_stopping import early_stopping_config
from leakprobe.defenses.scsr import DEFAULT_LOWER_BOUNDS, scsr_recipe
from leakprobe.defenses.sweep import DEFENCES, DefenceSetting, defend_encoder, plan_settings

__all__ = ["DEFAULT_LOWER_BOUNDS", "DEFENCES", "DefenceSetting", "defend_encoder",
           "dp_train_config", "early_stopping_config", "plan_settings", "scsr_recipe"]
