"""Grid expansion: which cells exist, which share a training run, and stable keys."""

from __future__ import annotations

from leakprobe.study.config import parse_study_config
from leakprobe.study.grid import all_cells, expand_grid, stable_hash

RAW = {
    "data": "synthetic:40", "members": 20, "nonmembers": 20, "seeds": [0, 1],
    "attacks": ["baseline-norm"],
    "paradigms": [{"method": "simclr", "epochs": 6, "method_kwargs": {"temperature": 0.2,
                                                                       "proj_dim": 0}},
                  {"name": "simclr-big", "method": "simclr", "epochs": 6,
                   "arch_kwargs": {"width": 32}}],
    "defences": ["none", {"kind": "early-stopping", "epochs": [2, 4], "paradigms": ["simclr"]},
                 {"kind": "dp", "noise_multiplier": [0.5, 1.0], "paradigms": ["simclr"]},
                 {"kind": "scsr", "crop_min": [0.5]}],
}


def test_cells_and_shared_training_runs():
    runs = expand_grid(parse_study_config(RAW))
    cells = all_cells(runs)
    # simclr: none, es2, es4, dp x2, scsr; simclr-big: none, scsr; each for 2 seeds
    assert len(cells) == 2 * (6 + 2)
    assert len({c.key for c in cells}) == len(cells)
    assert len({c.folder for c in cells}) == len(cells)
    names = sorted(c.name for c in cells if c.seed == 0)
    assert names == sorted(["simclr-none-s0", "simclr-es2-s0", "simclr-es4-s0",
                            "simclr-dp-nm0.5-s0", "simclr-dp-nm1-s0", "simclr-scsr0.5-s0",
                            "simclr-big-none-s0", "simclr-big-scsr0.5-s0"])
    # early stopping evaluates snapshots of the undefended run: one training for three cells
    shared = [r for r in runs if len(r.cells) > 1]
    assert len(shared) == 2 and all(r.snapshot_epochs == (2, 4) for r in shared)
    assert {c.name for c in shared[0].cells} == {"simclr-none-s0", "simclr-es2-s0",
                                                 "simclr-es4-s0"}
    assert len(runs) == 2 * 6
    dp = next(c for c in cells if c.name == "simclr-dp-nm1-s0")
    assert dp.config["training"]["train"]["dp"]["noise_multiplier"] == 1.0
    scsr = next(c for c in cells if c.name == "simclr-big-scsr0.5-s1")
    assert scsr.config["training"]["recipe"]["crop_scale"] == [0.5, 1.0]
    assert scsr.config["training"]["recipe"]["arch_kwargs"] == {"width": 32}
    assert scsr.config["training"]["seed"] == 1


def test_keys_are_stable_and_sensitive():
    def keys(raw, version="0.1.0"):
        runs = expand_grid(parse_study_config(raw), version=version)
        return {c.name: c.key for c in all_cells(runs)}, {r.name[:-9]: r.key for r in runs}

    cells, runs = keys(RAW)
    # same config (mapping order changed): same keys
    reordered = {**RAW, "paradigms": [{"method_kwargs": {"proj_dim": 0, "temperature": 0.2},
                                       "epochs": 6, "method": "simclr"}, RAW["paradigms"][1]]}
    assert keys(reordered) == (cells, runs)
    # a canonical-JSON SHA-256, independent of the process
    assert stable_hash({"b": 1, "a": [1, 2]}) == stable_hash({"a": [1, 2], "b": 1})
    assert len(cells["simclr-none-s0"]) == 64
    # another attack: new cell keys, same training runs
    cells2, runs2 = keys({**RAW, "attacks": ["lpla-p2"]})
    assert runs2 == runs and not set(cells2.values()) & set(cells.values())
    # another version: everything new
    cells3, runs3 = keys(RAW, version="0.2.0")
    assert not set(cells3.values()) & set(cells.values())
    assert not set(runs3.values()) & set(runs.values())
    # more early-stopping epochs: the shared run retrains, the undefended cell is kept
    more = {**RAW, "defences": [RAW["defences"][0], {**RAW["defences"][1], "epochs": [2, 3, 4]},
                                *RAW["defences"][2:]]}
    cells4, runs4 = keys(more)
    assert cells4["simclr-none-s0"] == cells["simclr-none-s0"]
    assert cells4["simclr-es2-s0"] == cells["simclr-es2-s0"]
    assert runs4["simclr-none-s0"] != runs["simclr-none-s0"]
    assert runs4["simclr-dp-nm1-s0"] == runs["simclr-dp-nm1-s0"]
    # a training change reaches every cell of that paradigm only
    changed = {**RAW, "paradigms": [{**RAW["paradigms"][0], "lr": 0.01}, RAW["paradigms"][1]]}
    cells5, _ = keys(changed)
    assert cells5["simclr-none-s0"] != cells["simclr-none-s0"]
    assert cells5["simclr-big-none-s0"] == cells["simclr-big-none-s0"]
