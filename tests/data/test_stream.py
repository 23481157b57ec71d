"""Streamed image sets: the same floats as the in-memory loaders, batch by batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leakprobe.data.images import ImageSet, concat
from leakprobe.data.limits import parse_bytes, set_data_workers, set_memory_cap
from leakprobe.data.loaders import load_image_folder, save_image_folder
from leakprobe.data.stream import LazyImages, image_batches, take
from leakprobe.data.synthetic import make_synthetic
from leakprobe.errors import LeakprobeError


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """70 PNGs of varied sizes and modes (RGBA, gray) in class folders."""
    root = tmp_path_factory.mktemp("stream")
    save_image_folder(make_synthetic(60, 24, seed=3), root / "imgs")
    rng = np.random.default_rng(0)
    (root / "imgs" / "odd").mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (31, 17, 4), dtype=np.uint8), "RGBA").save(
            root / "imgs" / "odd" / f"rgba{i}.png")
        Image.fromarray(rng.integers(0, 256, (9, 40), dtype=np.uint8), "L").save(
            root / "imgs" / "odd" / f"gray{i}.png")
    return root / "imgs"


@pytest.fixture(autouse=True)
def _defaults():
    yield
    set_memory_cap(None)
    set_data_workers(None)


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_folder_equals_in_memory(folder: Path, workers: int) -> None:
    set_data_workers(workers)
    eager = load_image_folder(folder, 20, stream=False)
    lazy = load_image_folder(folder, 20)
    assert lazy.streamed and not eager.streamed
    assert lazy.ids == eager.ids and lazy.shape == eager.shape == (70, 3, 20, 20)
    batches = list(lazy.batches(16))
    assert [b.shape[0] for b in batches] == [16, 16, 16, 16, 6]
    assert torch.equal(torch.cat(batches), eager.images)
    assert torch.equal(lazy.images, eager.images)
    assert lazy.content_hashes() == eager.content_hashes()
    order = torch.randperm(70, generator=torch.Generator().manual_seed(1))
    assert torch.equal(lazy.subset(order).images, eager.images[order])
    assert torch.equal(lazy.take([5, 0, 69]), eager.images[[5, 0, 69]])
    # resized when read, as the manifest loader resizes a verified in-memory set
    from leakprobe.augment import resize

    assert torch.equal(lazy.pixels.resized(12).load(),
                       resize(eager.images, 12).clamp_(0, 1))


def test_relative_paths_survive_a_change_of_directory(folder: Path, tmp_path: Path,
                                                     monkeypatch) -> None:
    """The decoding processes are shared and keep the directory they started in: a folder
    given relative to a later working directory still decodes (it failed before)."""
    set_data_workers(2)
    assert load_image_folder(folder, 20).images.shape[0] == 70  # the pool starts here
    (tmp_path / "work").mkdir()
    link = tmp_path / "work" / "imgs"
    link.symlink_to(folder, target_is_directory=True)
    monkeypatch.chdir(tmp_path / "work")
    relative = load_image_folder("imgs", 20)
    assert torch.equal(relative.images, load_image_folder(folder, 20, stream=False).images)


def test_batches_resize_like_the_whole_tensor(folder: Path) -> None:
    eager = load_image_folder(folder, 20, stream=False).images
    lazy = load_image_folder(folder, 20).pixels
    from_tensor = torch.cat(list(image_batches(eager, 32, size=28)))
    from_lazy = torch.cat(list(image_batches(lazy, 32, size=28)))
    assert torch.equal(from_tensor, from_lazy)
    assert torch.equal(take(lazy, torch.tensor([3, 1])), take(eager, [3, 1]))


def test_concat_mixes_streamed_and_in_memory(folder: Path) -> None:
    lazy = load_image_folder(folder, 20)
    memory = ImageSet(torch.rand(3, 3, 20, 20), ["a", "b", "c"], source="mem")
    both = concat([lazy.subset([4, 2]), memory, lazy.subset([9])])
    assert both.streamed and len(both) == 6
    expected = torch.cat([lazy.take([4, 2]), memory.images, lazy.take([9])])
    assert torch.equal(both.images, expected)
    assert torch.equal(torch.cat(list(both.batches(4))), expected)


def test_array_sets_stream_the_same_floats() -> None:
    from leakprobe.data.loaders import load_digits_set

    data = load_digits_set(20)
    assert data.streamed
    x = torch.from_numpy(
        np.asarray(__import__("sklearn.datasets").datasets.load_digits().images,
                   dtype=np.float32) / 16.0).unsqueeze(1)
    expected = torch.nn.functional.interpolate(
        x, size=(20, 20), mode="bilinear", antialias=True, align_corners=False
    ).clamp_(0, 1).expand(-1, 3, -1, -1)
    assert torch.equal(data.images, expected)
    assert torch.equal(torch.cat(list(data.batches(500))), expected)


def test_unreadable_file_fails_on_the_first_read_with_its_name(tmp_path: Path) -> None:
    save_image_folder(make_synthetic(40, 16, seed=0), tmp_path / "imgs")
    bad = sorted((tmp_path / "imgs").rglob("*.png"))[25]
    bad.write_bytes(bad.read_bytes()[:40])
    set_data_workers(2)
    lazy = load_image_folder(tmp_path / "imgs", 16)  # lists only
    with pytest.raises(LeakprobeError, match=bad.name):
        lazy.content_hashes()
    with pytest.raises(LeakprobeError, match=bad.name):
        for _ in lazy.batches(8):  # found in a decoding worker, raised here
            pass


def test_a_consumer_that_stops_early_stops_the_prefetch(folder: Path) -> None:
    set_data_workers(2)
    lazy = load_image_folder(folder, 20).pixels
    stream = lazy.batches(16)
    first = next(stream)
    stream.close()  # joins the prefetch thread
    assert first.shape == (16, 3, 20, 20)
    import threading

    assert not any(t.name == "leakprobe-prefetch" for t in threading.enumerate())


def test_memory_cap_refuses_holding_a_large_set_whole(folder: Path) -> None:
    lazy = load_image_folder(folder, 20)  # 70 x 3 x 20 x 20 x 4 = 336000 bytes
    set_memory_cap("100KB")
    with pytest.raises(LeakprobeError, match=r"above the memory cap of 100\.0 KB"):
        _ = lazy.images
    with pytest.raises(LeakprobeError, match="memory cap"):
        load_image_folder(folder, 20, stream=False)
    assert len(lazy.content_hashes()) == 70  # streaming needs no cap
    assert sum(b.shape[0] for b in lazy.batches(8)) == 70
    set_memory_cap("1MB")
    assert lazy.images.shape == (70, 3, 20, 20)


def test_parse_bytes_and_bad_settings(monkeypatch) -> None:
    assert parse_bytes("2GB") == 2 << 30
    assert parse_bytes("512MiB") == 512 << 20
    assert parse_bytes("1.5k") == 1536
    assert parse_bytes(100) == 100
    for bad in ("lots", "-1GB", "0", "3 parsecs"):
        with pytest.raises(LeakprobeError, match="memory size"):
            parse_bytes(bad)
    monkeypatch.setenv("LEAKPROBE_MEMORY_CAP", "1MB")
    from leakprobe.data.limits import data_workers, memory_cap

    assert memory_cap() == 1 << 20
    monkeypatch.setenv("LEAKPROBE_DATA_WORKERS", "x")
    with pytest.raises(LeakprobeError, match="LEAKPROBE_DATA_WORKERS"):
        data_workers()


def test_lazy_images_refuse_bad_sets() -> None:
    with pytest.raises(LeakprobeError, match="images of sizes"):
        LazyImages.concat([torch.rand(2, 3, 8, 8), torch.rand(2, 3, 9, 9)])
    with pytest.raises(IndexError):
        LazyImages.concat([torch.rand(2, 3, 8, 8)]).subset([5])
