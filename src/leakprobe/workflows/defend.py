"""One defence at several strengths: train, audit and measure utility per setting.

``defend_encoder`` trains a target encoder per setting (early stopping: one run with
snapshots), audits each with the chosen attacks (known-subset knowledge: the split's members
against its non-members, the same protocol as ``leakprobe audit encoder``), measures utility
on the non-member split, and writes per-setting audit reports plus one combined
``report.json`` (kind ``encoder-defence``) and ``report.html`` with the trade-off plots.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import cast

from leakprobe.data.images import ImageSet
from leakprobe.data.splits import Split
from leakprobe.defences.early_stopping import check_epochs, early_stopping_config
from leakprobe.defences.kinds import SWEEP_DEFENCES, resolve_defence
from leakprobe.defences.setting import DefenceOptions, DefenceSetting, defence_setting
from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.audit import DEFAULT_REPEATS
from leakprobe.evaluation.permutation import resolve_permutations
from leakprobe.progress import log
from leakprobe.training.dp_record import dp_epsilon
from leakprobe.training.encoder import EncoderRecipe, train_target_encoder
from leakprobe.training.trainer import TrainConfig

# the names ``--defence`` accepts (see leakprobe.defences.kinds; dp-epsilon: dp by epsilon)
DEFENCES = SWEEP_DEFENCES

__all__ = ["DEFENCES", "DefenceSetting", "defend_encoder", "plan_settings"]


def plan_settings(
    defence: str,
    values: Sequence[float | None],
    recipe: EncoderRecipe,
    config: TrainConfig,
    *,
    max_grad_norm: float = 1.0,
    delta: float = 1e-5,
    accountant: str = "rdp",
) -> list[DefenceSetting]:
    """The settings of ``defence`` at ``values`` (None in a DP list: a run without DP).

    Every setting comes from :func:`leakprobe.defences.setting.defence_setting`, as a study
    cell's does; early stopping first plans one run to the largest epoch
    (:func:`~leakprobe.defences.early_stopping.early_stopping_config`).

    Args:
        defence: ``early-stopping`` (values: epochs), ``dp`` (noise multipliers),
            ``dp-epsilon`` (target epsilons) or ``scsr`` (crop-scale lower bounds).
        values: the strengths.
        recipe: the undefended training recipe.
        config: the undefended training settings.
        max_grad_norm: DP-SGD's per-sample clipping norm, shared by the DP runs.
        delta: DP-SGD's delta, shared by the DP runs.
        accountant: DP-SGD's privacy accountant (``rdp`` or ``prv``), shared by the DP runs.
    Raises:
        LeakprobeError: unknown defence, no values, or a value the defence rejects.
    """
    if defence not in DEFENCES:
        raise LeakprobeError(f"unknown defence {defence!r}; known: {', '.join(DEFENCES)}")
    if not values:
        raise LeakprobeError(f"defence {defence!r} needs at least one value")
    kind, strength_name = resolve_defence(defence)
    if kind == "early-stopping":
        epochs = cast(Sequence[float], values)  # check_epochs names a None as a bad epoch
        config = early_stopping_config(config, epochs)
        values = check_epochs(epochs)
    options = DefenceOptions(max_grad_norm=max_grad_norm, delta=delta, accountant=accountant)
    out = [defence_setting(kind, v, recipe, config, strength_name=strength_name,
                           options=options) for v in values]
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise LeakprobeError(f"defence values repeat: {', '.join(names)}")
    return out


def _train(split, settings, out, resume) -> dict[str, Path]:
    """Train the targets; return the encoder weights of every setting."""
    if settings[0].kind == "early-stopping":
        cfg = settings[0].config
        log(f"early stopping: one run of {cfg.epochs} epochs, snapshots at "
            f"{', '.join(map(str, cfg.snapshot_epochs))}")
        paths = train_target_encoder(split, settings[0].recipe, cfg, out / "target", resume)
        snaps = paths["snapshots"]
        return {s.name: snaps[s.evaluate_epoch] / "encoder.safetensors" for s in settings}
    return {}


def _preflight(out: Path, attacks, seed: int, split: Split, knowledge: str, folds: int,
               repeats: int, attack_options: dict) -> None:
    """Output folder, attack names, sets and protocol: checked before any setting trains."""
    from leakprobe.evaluation.audit import check_audit_plan
    from leakprobe.preflight import check_out_dir
    from leakprobe.workflows.audit import build_attacks

    check_out_dir(out, "out_dir")
    check_audit_plan(build_attacks(attacks, seed, **attack_options), None, split.members,
                     split.nonmembers, knowledge, folds, repeats)


def defend_encoder(
    split: Split,
    *,
    defence: str,
    values: Sequence[float | None],
    recipe: EncoderRecipe,
    config: TrainConfig,
    out_dir: str | Path,
    attacks: str | list[str] = "partcrop,encodermi",
    utility_set: ImageSet | None = None,
    knowledge: str = "known-subset",
    folds: int = 2,
    repeats: int = DEFAULT_REPEATS,
    permutations: int | None = None,
    max_grad_norm: float = 1.0,
    delta: float = 1e-5,
    accountant: str = "rdp",
    resume: bool = True,
    **attack_options,
) -> dict:
    """Measure privacy against utility for one defence at several strengths.

    Args:
        split: members (trained on) and non-members of the target.
        defence: ``early-stopping``, ``dp``, ``dp-epsilon`` or ``scsr`` (see
            :mod:`leakprobe.defences.kinds`).
        values: strengths (see :func:`plan_settings`).
        recipe: the undefended training recipe.
        config: the undefended training settings (``config.seed`` also
            seeds the audits).
        out_dir: output folder: ``report.json``/``report.html`` (combined), and one folder
            per setting with its audit report (and, except for early stopping, its target).
        attacks: attack names for :func:`leakprobe.workflows.audit.audit_encoder`.
        utility_set: labelled images for utility (default: the non-member split).
        knowledge: the audit's knowledge setting (see ``audit_encoder``).
        folds: cross-fitting folds of each audit.
        repeats: cross-fitting repetitions of each audit.
        permutations: label permutations of each audit's test of "no leakage" (0: none).
        max_grad_norm: DP-SGD's per-sample clipping norm.
        delta: DP-SGD's delta.
        accountant: DP-SGD's privacy accountant (``rdp`` or ``prv``).
        resume: continue interrupted trainings from their checkpoints.
        **attack_options: attack parameters (``num_parts``, ``n_views``, ``views``: the view
            recipe, see :mod:`leakprobe.views`).
    Returns:
        The combined report: ``{"kind": "encoder-defence", "defence", "settings": [{"name",
        "setting", "strength", "utility", "epsilon", "epsilon_nominal", "epsilon_caveat",
        "results", ...}], "context"}``; each ``results`` list is the audit report's own.
        ``epsilon`` is a DP guarantee or None; ``epsilon_nominal`` the accountant's number
        and ``epsilon_caveat`` why it is not a guarantee (see
        :mod:`leakprobe.training.dp_record`).
    """
    from leakprobe.report.defence import build_defence_report, write_defence_report
    from leakprobe.report.schema import leakprobe_version
    from leakprobe.targets.loading import load_encoder
    from leakprobe.workflows.audit import audit_encoder, encoder_utility

    t0 = time.time()
    out = Path(out_dir)
    if attack_options.get("views") is not None:
        from leakprobe.views import parse_views

        parse_views(attack_options["views"])  # fail before training anything
    settings = plan_settings(defence, values, recipe, config, max_grad_norm=max_grad_norm,
                             delta=delta, accountant=accountant)
    seed = config.seed
    _preflight(out, attacks, seed, split, knowledge, folds, repeats, attack_options)
    labelled = utility_set if utility_set is not None else split.nonmembers
    warnings = []
    if labelled.labels is None:
        warnings.append("no labels on the utility set: utility not measured")
    models = _train(split, settings, out, resume)
    entries = []
    for s in settings:
        folder = out / s.name
        if s.name not in models:
            log(f"defence {defence}: training setting {s.name}")
            models[s.name] = train_target_encoder(split, s.recipe, s.config, folder / "target",
                                                  resume)["weights"]
        meta = json.loads((models[s.name].parent / "model.json").read_text())
        target = load_encoder(str(models[s.name]), device=config.device)
        utility = encoder_utility(target, labelled, seed) if labelled.labels is not None \
            else None
        dp = meta.get("dp")
        eps = dp_epsilon(dp) or {}
        context = {"model": str(models[s.name]), "defence": defence, "setting": s.setting}
        report = audit_encoder(target, split.members, split.nonmembers, attacks=attacks,
                               knowledge=knowledge, folds=folds, repeats=repeats,
                               permutations=permutations, seed=seed, out_dir=folder,
                               context=context, utility=utility, **attack_options)
        entry = {
            "name": s.name,
            "setting": s.setting,
            "strength": s.strength,
            "utility": utility,
            "epsilon": eps.get("epsilon"),  # a guarantee, or None
            "epsilon_nominal": eps.get("epsilon_nominal"),
            "epsilon_caveat": eps.get("caveat"),
            "dp": dp,
            "epoch": meta.get("epoch"),
            "crop_scale": meta["recipe"]["crop_scale"],
            "model": str(models[s.name].relative_to(out)),
            "report": str((folder / "report.json").relative_to(out)),
            "results": report["results"],
        }
        entries.append(entry)
        log(f"defence {defence}: {s.name}: " + ", ".join(
            f"{r['attack']} AUC {r['metrics']['auc']:.3f}" for r in report["results"]))
    combined = build_defence_report(
        defence=defence,
        settings=entries,
        warnings=warnings,
        context={
            "data": split.members.source, "members": len(split.members),
            "nonmembers": len(split.nonmembers),
            "utility_set": labelled.source if labelled.labels is not None else None,
            "recipe": {**asdict(recipe), "crop_scale": list(recipe.crop_scale)},
            "train": replace(config, snapshot_epochs=()).to_dict(),
            "attacks": attacks if isinstance(attacks, str) else ",".join(attacks),
            "knowledge": knowledge, "folds": folds, "repeats": repeats, "seed": seed,
            "permutations": resolve_permutations(permutations),
            "views": attack_options.get("views"),  # None: the default (black-box) views
            "leakprobe_version": leakprobe_version(),
            "wall_seconds": round(time.time() - t0, 2),
        },
    )
    write_defence_report(combined, out)
    return combined

