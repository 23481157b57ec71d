"""One implementation of each defence: the study grid and `defend encoder` build the same
training recipe for the same setting, through the same transforms and vocabulary (nothing is
trained here)."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest

from leakprobe.defences import DEFENCE_KINDS, SWEEP_DEFENCES, resolve_defence
from leakprobe.errors import LeakprobeError
from leakprobe.study.config import parse_study_config
from leakprobe.study.grid import all_cells, cell_setting, expand_grid
from leakprobe.training.encoder import EncoderRecipe
from leakprobe.training.trainer import TrainConfig
from leakprobe.workflows.defend import plan_settings

EPOCHS, STOP = 6, 2  # the paradigm's run, and the early-stopping epoch
RAW = {
    "data": "synthetic:40", "members": 20, "nonmembers": 20, "seeds": [0],
    "attacks": ["baseline-norm"],
    "train": {"batch_size": 10, "lr": 0.002, "weight_decay": 1e-4, "amp": "auto"},
    "paradigms": [{"name": "simclr", "method": "simclr", "arch": "resnet-tiny",
                   "method_kwargs": {"temperature": 0.2, "proj_dim": 0},
                   "crop_scale": [0.08, 1.0], "epochs": EPOCHS}],
    "defences": ["none", {"kind": "scsr", "crop_min": [0.3]},
                 {"kind": "dp", "noise_multiplier": [1.0]},
                 {"kind": "early-stopping", "epochs": [STOP]}],
}
# the same paradigm as `defend encoder` takes it (--method ... --epochs 6 --seed 0)
RECIPE = EncoderRecipe("simclr", "resnet-tiny", {}, (0.08, 1.0),
                       {"temperature": 0.2, "proj_dim": 0})
CONFIG = TrainConfig(epochs=EPOCHS, batch_size=10, lr=0.002, weight_decay=1e-4, amp="auto",
                     seed=0)


def _study_settings():
    study = parse_study_config(RAW)
    paradigm = study.paradigms[0]
    return {d.kind: cell_setting(paradigm, d, d.values[0], seed=0) for d in study.defences}


def test_undefended_recipes_agree():
    none = _study_settings()["none"]
    assert none.recipe == RECIPE and none.config == CONFIG
    assert none.label == "none" and none.strength is None


@pytest.mark.parametrize("defence, values, kind, label, name", [
    ("scsr", [0.3], "scsr", "scsr0.3", "scsr_0.3"),
    ("dp", [1.0], "dp", "dp-nm1", "dp_noise_1"),
])
def test_study_and_defend_build_the_same_recipe(defence, values, kind, label, name):
    study = _study_settings()[kind]
    (defend,) = plan_settings(defence, values, RECIPE, CONFIG)
    assert study.recipe == defend.recipe and study.config == defend.config
    assert (study.kind, study.strength_name, study.value) == \
        (defend.kind, defend.strength_name, defend.value)
    assert study.label == defend.label == label and study.name == defend.name == name
    assert study.setting == defend.setting and study.strength == defend.strength == values[0]


def test_scsr_and_dp_recipes_are_the_transforms():
    settings = _study_settings()
    assert settings["scsr"].recipe.crop_scale == (0.3, 1.0)
    assert settings["scsr"].config == CONFIG
    dp = settings["dp"].config
    assert dp.dp.noise_multiplier == 1.0 and dp.dp.max_grad_norm == 1.0 and dp.amp is False
    assert replace(dp, dp=None, amp=CONFIG.amp) == CONFIG and settings["dp"].recipe == RECIPE


def test_early_stopping_is_the_same_snapshot_of_the_same_run():
    """Epoch STOP of the EPOCHS-epoch run: the study's snapshot of the undefended run, the
    sweep's `--values STOP,EPOCHS` (one run to the largest epoch)."""
    study = _study_settings()["early-stopping"]
    defend = plan_settings("early-stopping", [STOP, EPOCHS], RECIPE, CONFIG)[0]
    assert study.evaluate_epoch == defend.evaluate_epoch == STOP
    assert study.recipe == defend.recipe == RECIPE
    assert study.config.epochs == defend.config.epochs == EPOCHS  # the full schedule
    assert STOP in study.config.snapshot_epochs and STOP in defend.config.snapshot_epochs
    assert replace(study.config, snapshot_epochs=()) == replace(defend.config,
                                                                snapshot_epochs=()) == CONFIG
    assert study.label == "es2" and defend.name == "epoch_0002"
    assert study.setting == defend.setting == {"epoch": STOP}


def test_the_grid_keys_the_recipe_that_defend_trains():
    """What the study's cells record (and the runner trains) is the sweep's recipe."""
    runs = expand_grid(parse_study_config(RAW), version="0.1.0")
    cells = {c.name: c for c in all_cells(runs)}
    (scsr,) = plan_settings("scsr", [0.3], RECIPE, CONFIG)
    trained = cells["simclr-scsr0.3-s0"].config["training"]
    recipe = {k: v for k, v in asdict(scsr.recipe).items()
              if not (k == "init" and v is None)}  # study keys predate init weights
    assert trained["recipe"] == {**recipe, "crop_scale": [0.3, 1.0]}
    (dp,) = plan_settings("dp", [1.0], RECIPE, CONFIG)
    trained = cells["simclr-dp-nm1-s0"].config["training"]["train"]
    expected = asdict(dp.config.dp)
    expected.pop("chunk_size")  # memory only: not part of a key
    assert trained["dp"] == expected
    assert {k: trained[k] for k in ("epochs", "batch_size", "lr", "weight_decay", "optimizer")} \
        == {k: getattr(dp.config, k) for k in ("epochs", "batch_size", "lr", "weight_decay",
                                              "optimizer")}
    es = cells["simclr-es2-s0"]
    run = next(r for r in runs if es in r.cells)
    assert es.stop_epoch == STOP and STOP in run.snapshot_epochs
    assert run.config["train"]["epochs"] == EPOCHS and run.config["train"]["dp"] is None


def test_one_vocabulary_with_the_old_spellings_as_aliases():
    assert DEFENCE_KINDS == ("none", "early-stopping", "dp", "scsr")
    assert [resolve_defence(n) for n in SWEEP_DEFENCES] == [
        ("early-stopping", "epochs"), ("dp", "noise_multiplier"), ("dp", "target_epsilon"),
        ("scsr", "crop_min")]
    assert resolve_defence("none") == ("none", "")
    with pytest.raises(LeakprobeError, match="unknown defence 'dropout'"):
        resolve_defence("dropout")
    with pytest.raises(LeakprobeError, match="measured by target_epsilon"):
        resolve_defence("dp-epsilon", "noise_multiplier")
    # `defend encoder --defence dp-epsilon` and a study's `kind: dp` / `kind: dp-epsilon` with
    # target_epsilon are one setting
    (defend,) = plan_settings("dp-epsilon", [8], RECIPE, CONFIG)
    for kind in ("dp", "dp-epsilon"):
        study = parse_study_config({**RAW, "defences": [{"kind": kind, "target_epsilon": [8]}]})
        d = study.defences[0]
        assert (d.kind, d.strength) == ("dp", "target_epsilon")
        cell = cell_setting(study.paradigms[0], d, 8.0, seed=0)
        assert cell.config == defend.config and cell.recipe == defend.recipe
        assert cell.label == "dp-eps8" and cell.name == defend.name == "dp_epsilon_8"
    with pytest.raises(LeakprobeError, match="dp-epsilon needs 'target_epsilon'"):
        parse_study_config({**RAW, "defences": [{"kind": "dp-epsilon",
                                                 "noise_multiplier": [1.0]}]})


def test_the_old_package_name_still_imports():
    import leakprobe.defences as new
    import leakprobe.defenses as old

    assert old.scsr_recipe is new.scsr_recipe and old.dp_train_config is new.dp_train_config
    assert old.DEFAULT_LOWER_BOUNDS == (0.08, 0.3, 0.5)
