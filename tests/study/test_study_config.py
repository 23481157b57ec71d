"""Study config: defaults, and one clear LeakprobeError per kind of bad input."""

from __future__ import annotations

import pytest

from leakprobe.errors import LeakprobeError
from leakprobe.study.config import load_study_config, parse_study_config


def base(**overrides) -> dict:
    raw = {"data": "synthetic:40", "members": 20, "nonmembers": 20,
           "paradigms": [{"method": "simclr", "arch": "resnet-tiny", "epochs": 4}]}
    raw.update(overrides)
    return raw


def test_defaults_and_types():
    cfg = parse_study_config(base(defences=["none", {"kind": "scsr", "crop_min": 0.5},
                                            {"kind": "dp", "target_epsilon": [8, 64]},
                                            {"kind": "early-stopping", "epochs": [3, 1]}]))
    assert cfg.seeds == (0,) and cfg.threads == 1 and cfg.image_size == 32
    assert cfg.knowledge.setting == "known-subset" and cfg.knowledge.folds == 2
    assert cfg.attacks == ("partcrop", "encodermi-vector", "encodermi-set",
                           "encodermi-threshold", "lpla-p1", "lpla-p2", "lpla-pinf",
                           "baseline-norm")
    p = cfg.paradigms[0]
    assert p.name == "simclr" and p.train.epochs == 4 and p.train.batch_size == 256
    kinds = [(d.kind, d.strength, d.values) for d in cfg.defences]
    assert kinds == [("none", "", (None,)), ("scsr", "crop_min", (0.5,)),
                     ("dp", "target_epsilon", (8.0, 64.0)), ("early-stopping", "epochs", (1, 3))]
    assert cfg.defences[2].options == {"max_grad_norm": 1.0, "delta": 1e-5, "accountant": "rdp"}


def test_paradigm_inherits_and_overrides_train_block():
    cfg = parse_study_config(base(train={"epochs": 9, "lr": 0.01},
                                  paradigms=[{"method": "simclr"},
                                             {"name": "s2", "method": "simclr", "lr": 0.1}]))
    assert [(p.train.epochs, p.train.lr) for p in cfg.paradigms] == [(9, 0.01), (9, 0.1)]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"paradigms": [{"method": "simclr", "temp": 1}]}, "paradigms[0]: unknown key 'temp'"),
    ({"paradigms": [{"method": "nope"}]}, "paradigms[0].method: unknown SSL method 'nope'"),
    ({"paradigms": [{"method": "simclr", "arch": "resnet-huge"}]}, "unknown architecture"),
    ({"paradigms": [{"method": "simclr"}, {"method": "simclr"}]}, "names must be unique"),
    ({"paradigms": [{"method": "simclr", "epochs": 0}]}, "epochs: must be >= 1"),
    ({"paradigms": [{"method": "simclr", "crop_scale": [0.9, 0.2]}]}, "low must be <= high"),
    ({"defences": [{"kind": "pruning"}]}, "defences[0].kind: must be one of"),
    ({"defences": [{"kind": "dp", "noise_multiplier": 1, "target_epsilon": 8}]},
     "exactly one of"),
    ({"defences": [{"kind": "dp"}]}, "exactly one of"),
    ({"defences": [{"kind": "scsr", "crop_min": 1.5}]}, "crop_min: must be <= 1.0"),
    ({"defences": [{"kind": "scsr", "epochs": [2]}]}, "defences[0]: unknown key 'epochs'"),
    ({"defences": [{"kind": "early-stopping", "epochs": [4]}]}, "is not before the end"),
    ({"defences": [{"kind": "early-stopping"}]}, "needs 'epochs'"),
    ({"defences": [{"kind": "scsr", "crop_min": [0.5], "paradigms": ["moco"]}]},
     "no paradigm named 'moco'"),
    ({"defences": ["none", "none"]}, "listed twice"),
    ({"members": 5}, "members: must be >= 20"),
    ({"seeds": [0, 0]}, "seeds: repeated"),
    ({"seeds": ["a"]}, "seeds: expected an integer"),
    ({"attacks": ["partcrop", "magic"]}, "unknown attack 'magic'"),
    ({"knowledge": {"setting": "shadow"}}, "knowledge.setting: must be one of known-subset"),
    ({"knowledge": {"folds": 1}}, "knowledge.folds: must be >= 2"),
    ({"attack_options": {"num_part": 3}}, "attack_options: unknown key 'num_part'"),
    ({"attack_options": {"views": "simclar"}}, "attack_options.views: unknown preset 'simclar'"),
    ({"attack_options": {"views": "mae,zoom=2"}}, "attack_options.views: unknown key 'zoom'"),
    ({"attack_options": {"views": {"crop_scale": [0.9, 0.1]}}},
     "attack_options.views: crop-scale must satisfy"),
    ({"attack_options": {"views": 3}}, "attack_options.views: expected a preset name"),
    ({"train": {"optimizer": "lion"}}, "train.optimizer: must be one of"),
    ({"ray": {"workers": 0}}, "ray.workers: must be >= 1"),
])
def test_bad_configs_raise_one_clear_error(overrides, message):
    raw = base(**overrides)
    with pytest.raises(LeakprobeError) as info:
        parse_study_config(raw)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_attack_views_are_validated_and_kept_as_written():
    cfg = parse_study_config(base(attack_options={"n_views": 4, "views": "byol,flip=0"}))
    assert cfg.attack_options == {"n_views": 4, "views": "byol,flip=0"}
    cfg = parse_study_config(base(attack_options={"views": {"preset": "mae"}}))
    assert cfg.attack_options["views"] == {"preset": "mae"}
    assert "views" not in parse_study_config(base()).attack_options  # default: none given


def test_missing_required_and_bad_yaml(tmp_path):
    with pytest.raises(LeakprobeError, match="missing required key 'paradigms'"):
        parse_study_config({"data": "synthetic:40"})
    with pytest.raises(LeakprobeError, match="expected a mapping"):
        parse_study_config(["data"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(LeakprobeError, match="not valid YAML"):
        load_study_config(bad)
    with pytest.raises(LeakprobeError, match="no such study config"):
        load_study_config(tmp_path / "missing.yaml")


def test_shipped_studies_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "studies"
    small = load_study_config(root / "cpu-small.yaml")
    paper = load_study_config(root / "paper-cifar.yaml")
    assert {p.method for p in small.paradigms} == {"simclr", "moco", "byol", "dino", "mae"}
    assert {d.kind for d in small.defences} == {"none", "early-stopping", "dp", "scsr"}
    # real classes, utility on the labelled images outside the split
    assert small.data == "digits" and small.utility_data == "rest"
    epochs = load_study_config(root / "cpu-simclr-epochs.yaml")
    assert epochs.utility_data == "rest" and epochs.defences[1].values == (120, 240, 400)
    assert paper.data.startswith("cifar10:") and len(paper.seeds) == 3
    assert max(p.train.epochs for p in paper.paradigms) >= 800
    # pre-declared primaries: PartCrop's ranks the paradigms
    for cfg in (small, epochs, paper):
        assert cfg.headline() == ("partcrop", "partcrop") and cfg.knowledge.permutations == 100
    assert paper.primary_attacks["baseline"] == "baseline-consistency"
