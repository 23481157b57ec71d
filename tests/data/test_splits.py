"""Splits: disjointness, seeding, duplicates, manifests and their verification."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leakprobe.data.images import ImageSet
from leakprobe.data.loaders import load_dataset, save_image_folder
from leakprobe.data.splits import (
    Split,
    check_disjoint,
    load_images,
    load_manifest,
    load_split_side,
    make_split,
    save_manifest,
)
from leakprobe.errors import LeakprobeError


def _random_set(n: int, size: int = 8, seed: int = 0, labels: bool = False) -> ImageSet:
    gen = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 3, size, size, generator=gen) * 255).round() / 255
    lab = torch.arange(n) % 3 if labels else None
    return ImageSet(images, [f"img{i:03d}" for i in range(n)], lab, source="test")


def test_split_disjoint_and_seeded() -> None:
    data = _random_set(30)
    a = make_split(data, 10, 12, seed=0)
    b = make_split(data, 10, 12, seed=0)
    c = make_split(data, 10, 12, seed=1)
    assert len(a.members) == 10 and len(a.nonmembers) == 12
    assert a.members.ids == b.members.ids and a.nonmembers.ids == b.nonmembers.ids
    assert a.members.ids != c.members.ids
    assert not set(a.members.ids) & set(a.nonmembers.ids)
    check_disjoint(a.members, a.nonmembers)
    rest = make_split(data, 10, seed=0)
    assert len(rest.nonmembers) == 20


def test_duplicates_removed() -> None:
    data = _random_set(10)
    dup = ImageSet(
        torch.cat([data.images, data.images[:4]]),
        data.ids + [f"copy{i}" for i in range(4)],
        source="test",
    )
    split = make_split(dup, 5, seed=3)
    assert len(split.members) + len(split.nonmembers) == 10
    check_disjoint(split.members, split.nonmembers)
    with pytest.raises(LeakprobeError, match="4 exact duplicates removed"):
        make_split(dup, 10)


def test_bad_sizes() -> None:
    data = _random_set(6)
    with pytest.raises(LeakprobeError, match="no non-members"):
        make_split(data, 6)
    with pytest.raises(LeakprobeError, match="at least 1"):
        make_split(data, 0)
    with pytest.raises(LeakprobeError, match="need 7"):
        make_split(data, 3, 4)


def test_overlap_detected() -> None:
    data = _random_set(6)
    members = data.subset([0, 1, 2])
    nonmembers = ImageSet(data.images[[2, 1, 4]], ["x", "y", "z"])
    with pytest.raises(LeakprobeError, match="2 non-member images") as err:
        check_disjoint(members, nonmembers)
    assert "'img002'" in str(err.value) and "'x'" in str(err.value)


def _folder_split(tmp_path: Path) -> tuple[Path, Path, Split]:
    folder = tmp_path / "data"
    save_image_folder(_random_set(20, size=12, labels=True), folder)
    data = load_dataset(str(folder), 12)
    split = make_split(data, 6, 8, seed=4)
    manifest = save_manifest(split, tmp_path / "split.json", seed=4)
    return folder, manifest, split


def test_manifest_round_trip(tmp_path: Path) -> None:
    _, manifest, split = _folder_split(tmp_path)
    m = load_manifest(manifest)
    assert m["format"] == "leakprobe-split/1" and m["image_size"] == 12 and m["seed"] == 4
    assert [e["id"] for e in m["members"]] == split.members.ids
    members = load_split_side(manifest, "members")
    nonmembers = load_split_side(manifest, "nonmembers")
    assert members.ids == split.members.ids
    assert torch.equal(members.images, split.members.images)
    assert torch.equal(nonmembers.labels, split.nonmembers.labels)
    small = load_split_side(manifest, "members", image_size=6)
    assert small.images.shape == (6, 3, 6, 6) and small.ids == split.members.ids
    via_cli = load_images(manifest, 12, side="nonmembers")
    assert via_cli.ids == split.nonmembers.ids
    with pytest.raises(LeakprobeError, match="which side"):
        load_images(manifest, 12)
    with pytest.raises(LeakprobeError, match="side must be"):
        load_split_side(manifest, "everyone")


def test_manifest_works_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    save_image_folder(_random_set(8, size=8), "rel")
    split = make_split(load_dataset("rel", 8), 3, seed=0)
    save_manifest(split, "split.json", seed=0)
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    assert load_split_side(tmp_path / "split.json", "members").ids == split.members.ids


def test_hash_mismatch_after_file_changes(tmp_path: Path) -> None:
    folder, manifest, split = _folder_split(tmp_path)
    victim = folder / split.members.ids[0]
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(victim)
    with pytest.raises(LeakprobeError, match="data changed since the split was made"):
        load_split_side(manifest, "members")
    victim.unlink()
    with pytest.raises(LeakprobeError, match="no longer in"):
        load_split_side(manifest, "members")


def test_manifest_validation(tmp_path: Path) -> None:
    p = tmp_path / "m.json"
    with pytest.raises(LeakprobeError, match="does not exist"):
        load_manifest(p)
    p.write_text("{not json")
    with pytest.raises(LeakprobeError, match="JSON"):
        load_manifest(p)
    p.write_text(json.dumps({"format": "other/1"}))
    with pytest.raises(LeakprobeError, match="format"):
        load_manifest(p)
    p.write_text(json.dumps({"format": "leakprobe-split/1", "data": "digits"}))
    with pytest.raises(LeakprobeError, match="image_size, seed, members, nonmembers"):
        load_manifest(p)
    entry = {"id": "a", "sha256": "0" * 64}
    base = {"format": "leakprobe-split/1", "data": "digits", "image_size": 8, "seed": 0}
    p.write_text(json.dumps({**base, "members": [entry], "nonmembers": [{"id": "b"}]}))
    with pytest.raises(LeakprobeError, match=r"nonmembers\[0\]"):
        load_manifest(p)
    p.write_text(json.dumps({**base, "members": [entry], "nonmembers": [entry]}))
    with pytest.raises(LeakprobeError, match="both member and non-member"):
        load_manifest(p)


def test_save_manifest_needs_source(tmp_path: Path) -> None:
    data = _random_set(6)
    data.source = ""
    with pytest.raises(LeakprobeError, match="source"):
        save_manifest(make_split(data, 3), tmp_path / "m.json", seed=0)
