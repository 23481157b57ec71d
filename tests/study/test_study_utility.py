"""Utility on the rest of the data (``utility: {data: rest, max_images: N}``): disjoint from
both sides of the split, seeded, capped, part of the cell key, and clear errors."""

from __future__ import annotations

import pytest
import torch

from leakprobe.data.images import ImageSet
from leakprobe.data.loaders import load_dataset
from leakprobe.data.splits import make_split
from leakprobe.errors import LeakprobeError
from leakprobe.study import run_study
from leakprobe.study.config import parse_study_config
from leakprobe.study.grid import all_cells, expand_grid
from leakprobe.study.runner import rest_images, utility_images


def raw(**overrides) -> dict:
    base = {"data": "synthetic:100", "members": 20, "nonmembers": 30, "attacks": ["baseline-norm"],
            "train": {"epochs": 2, "batch_size": 10}, "device": "cpu",
            "paradigms": [{"method": "simclr", "arch": "resnet-tiny"}]}
    base.update(overrides)
    return base


def test_config_parses_utility_options():
    cfg = parse_study_config(raw(utility={"data": "rest", "max_images": 40}))
    assert (cfg.utility_data, cfg.utility_max_images) == ("rest", 40)
    default = parse_study_config(raw())
    assert (default.utility_data, default.utility_max_images) == ("nonmembers", None)


@pytest.mark.parametrize(("utility", "message"), [
    ({"data": "rest", "max_images": 1}, "utility.max_images: must be >= 2"),
    ({"data": "rest", "max_images": "all"}, "utility.max_images: expected an integer"),
    ({"data": "rest", "cap": 5}, "utility: unknown key 'cap'"),
    ({"data": ""}, "utility.data: expected a non-empty string"),
])
def test_bad_utility_options(utility, message):
    with pytest.raises(LeakprobeError, match=message.replace(".", r"\.")):
        parse_study_config(raw(utility=utility))


def test_rest_is_disjoint_from_both_sides_and_drops_duplicates():
    data = load_dataset("synthetic:100", 16, 0)
    # two copies of a future member and one duplicated image: only distinct, unused images stay
    dup = ImageSet(torch.cat([data.images, data.images[:3]]),
                   [*data.ids, "copy:0", "copy:1", "copy:2"],
                   torch.cat([data.labels, data.labels[:3]]), source="dup")
    split = make_split(dup, 20, 30, seed=3)
    rest = rest_images(dup, split)
    assert len(rest) == 100 - 50
    used = set(split.members.content_hashes()) | set(split.nonmembers.content_hashes())
    hashes = rest.content_hashes()
    assert not set(hashes) & used and len(set(hashes)) == len(hashes)
    assert not set(rest.ids) & (set(split.members.ids) | set(split.nonmembers.ids))
    assert rest.labels is not None and rest.labels.shape == (50,)


def test_utility_images_seeded_and_capped():
    cfg = parse_study_config(raw(utility={"data": "rest", "max_images": 25}))
    data = load_dataset(cfg.data, 16, 0)
    split = make_split(data, 20, 30, seed=0)
    a = utility_images(cfg, data, split, seed=0)
    b = utility_images(cfg, data, split, seed=0)
    c = utility_images(cfg, data, split, seed=1)
    assert len(a) == 25 and a.ids == b.ids and a.ids != c.ids
    assert set(a.ids) <= set(rest_images(data, split).ids)
    # no cap: every remaining image; nonmembers: the split's non-members, capped too
    full = utility_images(parse_study_config(raw(utility={"data": "rest"})), data, split, 0)
    assert len(full) == 50
    nm = utility_images(parse_study_config(raw(utility={"max_images": 10})), data, split, 0)
    assert len(nm) == 10 and set(nm.ids) <= set(split.nonmembers.ids)


def test_rest_errors_when_nothing_left_or_unlabelled():
    cfg = parse_study_config(raw(data="synthetic:50", utility={"data": "rest"}))
    data = load_dataset(cfg.data, 16, 0)
    with pytest.raises(LeakprobeError, match="utility: rest leaves 0 images"):
        utility_images(cfg, data, make_split(data, 20, 30, seed=0), 0)
    bare = ImageSet(data.images, data.ids, None, source="bare")
    with pytest.raises(LeakprobeError, match="has no labels"):
        utility_images(cfg, bare, make_split(bare, 20, 20, seed=0), 0)


def test_utility_settings_are_in_the_cell_key_only():
    def keys(r):
        runs = expand_grid(parse_study_config(r), version="0.1.0")
        return [c.key for c in all_cells(runs)], [run.key for run in runs]

    cells, runs = keys(raw())
    rest_cells, rest_runs = keys(raw(utility={"data": "rest"}))
    capped_cells, capped_runs = keys(raw(utility={"data": "rest", "max_images": 40}))
    assert runs == rest_runs == capped_runs  # same training
    assert len({cells[0], rest_cells[0], capped_cells[0]}) == 3
    # no cap: the key holds no cap entry, so keys made before the option existed stay valid
    cfg = expand_grid(parse_study_config(raw(utility={"data": "rest"})))[0].cells[0].config
    assert "utility_max_images" not in cfg and cfg["utility_data"] == "rest"


def test_study_measures_utility_on_the_rest(tmp_path):
    cfg = parse_study_config(raw(name="rest", utility={"data": "rest", "max_images": 40}))
    summary = run_study(cfg, tmp_path, report=False)
    (cell,) = summary["cells"]
    assert cell["utility"]["n_images"] == 40
    assert cell["utility"]["chance"] == pytest.approx(1 / 8)
    assert 0.0 <= cell["utility"]["linear_probe_accuracy"] <= 1.0
