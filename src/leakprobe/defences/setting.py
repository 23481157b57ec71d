"""One defence setting -> the training recipe to run: the one place the transforms are applied.

Both the study grid (:mod:`leakprobe.study.grid`, one cell per setting) and the defence sweep
(:mod:`leakprobe.workflows.defend`, ``leakprobe defend encoder``) call
:func:`defence_setting`, which applies :func:`~leakprobe.defences.early_stopping.stop_at`,
:func:`~leakprobe.defences.dp_sgd.dp_train_config` or
:func:`~leakprobe.defences.scsr.scsr_recipe` to the undefended recipe and training settings,
and names the setting (:attr:`DefenceSetting.label` in a study's cell names,
:attr:`DefenceSetting.name` as a sweep's folder name).
"""

from __future__ import annotations

from dataclasses import dataclass

from leakprobe.defences.dp_sgd import dp_train_config
from leakprobe.defences.early_stopping import check_epochs, stop_at
from leakprobe.defences.kinds import resolve_defence
from leakprobe.defences.scsr import scsr_recipe
from leakprobe.errors import LeakprobeError
from leakprobe.training.encoder import EncoderRecipe
from leakprobe.training.trainer import TrainConfig


@dataclass(frozen=True)
class DefenceOptions:
    """The fixed options of a defence (the same for every value of its strength).

    Attributes:
        max_grad_norm, delta, accountant: DP-SGD's per-image clipping bound, the delta at
            which epsilon is reported, and the accountant (``rdp`` or ``prv``).
        crop_max: SCSR's upper crop-scale bound (None: the recipe's own upper bound).
    """

    max_grad_norm: float = 1.0
    delta: float = 1e-5
    accountant: str = "rdp"
    crop_max: float | None = None


@dataclass(frozen=True)
class DefenceSetting:
    """One defence at one strength, and the recipe that trains it.

    Attributes:
        kind: the defence kind (``none``, ``early-stopping``, ``dp``, ``scsr``).
        strength_name: what ``value`` measures (``epochs``, ``noise_multiplier``,
            ``target_epsilon``, ``crop_min``; ``""`` for ``none``).
        value: the strength (None: the undefended run, e.g. ``none`` in a DP sweep).
        recipe: the encoder recipe to train.
        config: the training settings (early stopping: the full run, with a snapshot at
            ``evaluate_epoch`` among its ``snapshot_epochs``).
        evaluate_epoch: early stopping: the epoch whose snapshot is the setting's encoder.
    """

    kind: str
    strength_name: str
    value: float | int | None
    recipe: EncoderRecipe
    config: TrainConfig
    evaluate_epoch: int | None = None

    @property
    def defended(self) -> bool:
        """False for the undefended run (kind ``none``, or no value)."""
        return self.kind != "none" and self.value is not None

    @property
    def strength(self) -> float | None:
        """The number on a strength axis (None: not plotted, e.g. the run without DP)."""
        return float(self.value) if self.defended and self.value is not None else None

    @property
    def label(self) -> str:
        """Short label, as in study cell names: ``none``, ``es50``, ``dp-nm1``, ``dp-eps8``,
        ``scsr0.5``."""
        if not self.defended:
            return "none"
        if self.kind == "early-stopping":
            return f"es{self.value}"
        if self.kind == "dp":
            short = "nm" if self.strength_name == "noise_multiplier" else "eps"
            return f"dp-{short}{self.value:g}"
        return f"scsr{self.value:g}"

    @property
    def name(self) -> str:
        """Folder name in a defence sweep: ``epoch_0050``, ``no_dp``, ``dp_noise_1``,
        ``dp_epsilon_8``, ``scsr_0.5`` (``none`` for kind ``none``)."""
        if not self.defended:
            return "no_dp" if self.kind == "dp" else "none"
        if self.kind == "early-stopping":
            return f"epoch_{self.value:04d}"
        if self.kind == "dp":
            short = "noise" if self.strength_name == "noise_multiplier" else "epsilon"
            return f"dp_{short}_{self.value:g}"
        return f"scsr_{self.recipe.crop_scale[0]:g}"

    @property
    def setting(self) -> dict:
        """What a defence report shows: ``{"epoch": 50}``, ``{"noise_multiplier": 1.0,
        "max_grad_norm": 1.0}``, ``{"crop_scale": [0.5, 1.0]}``, ``{"dp": False}``..."""
        if not self.defended:
            return {"dp": False} if self.kind == "dp" else {}
        if self.kind == "early-stopping":
            return {"epoch": self.value}
        if self.kind == "dp":
            if self.value is None or self.config.dp is None:
                raise LeakprobeError(f"DP setting {self.label} has no DP training settings")
            return {self.strength_name: float(self.value),
                    "max_grad_norm": self.config.dp.max_grad_norm}
        return {"crop_scale": list(self.recipe.crop_scale)}


def defence_setting(
    kind: str,
    value: float | int | None,
    recipe: EncoderRecipe,
    config: TrainConfig,
    *,
    strength_name: str | None = None,
    options: DefenceOptions | None = None,
) -> DefenceSetting:
    """The setting of ``kind`` at ``value``: the defended recipe and training settings.

    Args:
        kind: a defence kind or alias (see :mod:`leakprobe.defences.kinds`).
        value: the strength: an epoch to stop at (the run is ``config``'s, so
            ``value <= config.epochs``), a noise multiplier, a target epsilon or a lower crop
            scale; None for ``none``, and in a DP sweep for the run without DP.
        recipe, config: the undefended recipe and training settings.
        strength_name: what ``value`` measures (default: the kind's, see
            :func:`~leakprobe.defences.kinds.resolve_defence`).
        options: the defence's fixed options (default :class:`DefenceOptions`).
    Raises:
        LeakprobeError: an unknown kind or strength, or a value the defence rejects.
    """
    kind, strength_name = resolve_defence(kind, strength_name)
    options = options or DefenceOptions()
    if kind == "none" or (kind == "dp" and value is None):
        return DefenceSetting(kind, strength_name, None, recipe, config)
    if kind == "early-stopping":
        if value is None:
            raise LeakprobeError("early-stopping epochs must be integers >= 1, got None")
        (epoch,) = check_epochs([value])
        return DefenceSetting(kind, strength_name, epoch, recipe, stop_at(config, epoch),
                              evaluate_epoch=epoch)
    if kind == "dp":
        by_epsilon = strength_name == "target_epsilon"
        trained = dp_train_config(config, noise_multiplier=None if by_epsilon else value,
                                  target_epsilon=value if by_epsilon else None,
                                  max_grad_norm=options.max_grad_norm, delta=options.delta,
                                  accountant=options.accountant)
        return DefenceSetting(kind, strength_name, value, recipe, trained)
    upper = recipe.crop_scale[1] if options.crop_max is None else options.crop_max
    if value is None:
        raise LeakprobeError(f"SCSR crop scale must satisfy 0 < lower <= upper <= 1, got "
                             f"(None, {upper})")
    return DefenceSetting(kind, strength_name, value, scsr_recipe(recipe, value, upper), config)
