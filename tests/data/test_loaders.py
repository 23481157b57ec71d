"""Loaders: image folders, IDX, CIFAR python archives, digits and the spec dispatcher."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from leakprobe.data.images import ImageSet
from leakprobe.data.loaders import (
    find_fashion_mnist,
    load_cifar,
    load_dataset,
    load_digits_set,
    load_idx,
    load_image_folder,
    save_image_folder,
)
from leakprobe.errors import LeakprobeError


def _rng_image(rng: np.random.Generator, h: int, w: int, channels: int) -> np.ndarray:
    shape = (h, w) if channels == 1 else (h, w, channels)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _mixed_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rng_image(rng, 20, 30, 1), mode="L").save(root / "a_gray.png")
    Image.fromarray(_rng_image(rng, 40, 40, 4), mode="RGBA").save(root / "b_rgba.png")
    Image.fromarray(_rng_image(rng, 25, 50, 3), mode="RGB").save(root / "c_rgb.JPG", quality=90)
    Image.fromarray(_rng_image(rng, 16, 16, 3), mode="RGB").quantize(8).save(root / "d_pal.png")
    Image.fromarray(_rng_image(rng, 9, 9, 3), mode="RGB").save(root / "e.bmp")
    (root / "notes.txt").write_text("not an image")


def test_folder_mixed_sizes_and_modes(tmp_path: Path) -> None:
    _mixed_folder(tmp_path / "imgs")
    data = load_image_folder(tmp_path / "imgs", 16)
    assert data.images.shape == (5, 3, 16, 16)
    assert data.images.dtype == torch.float32
    assert float(data.images.min()) >= 0.0 and float(data.images.max()) <= 1.0
    assert data.ids == ["a_gray.png", "b_rgba.png", "c_rgb.JPG", "d_pal.png", "e.bmp"]
    assert data.labels is None
    # gray input -> three equal channels
    assert torch.equal(data.images[0, 0], data.images[0, 1])
    # deterministic
    assert torch.equal(load_image_folder(tmp_path / "imgs", 16).images, data.images)


def test_class_subfolders_give_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for cls, n in (("cat", 2), ("ant", 1), ("dog", 3)):
        (tmp_path / cls).mkdir()
        for k in range(n):
            arr = _rng_image(rng, 12, 12, 3)
            Image.fromarray(arr).save(tmp_path / cls / f"{k}.png")
    data = load_image_folder(tmp_path, 8)
    assert data.images.shape == (6, 3, 8, 8)
    assert data.ids[0] == "ant/0.png"
    assert data.ids[1:3] == ["cat/0.png", "cat/1.png"]
    assert data.labels is not None
    assert data.labels.tolist() == [0, 1, 1, 2, 2, 2]


def test_truncated_png_names_the_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    Image.fromarray(_rng_image(rng, 32, 32, 3)).save(tmp_path / "good.png")
    Image.fromarray(_rng_image(rng, 32, 32, 3)).save(tmp_path / "bad.png")
    raw = (tmp_path / "bad.png").read_bytes()
    (tmp_path / "bad.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(LeakprobeError, match="bad.png"):
        load_image_folder(tmp_path, 16, stream=False)
    streamed = load_image_folder(tmp_path, 16)  # lists the files; the first read fails
    with pytest.raises(LeakprobeError, match="bad.png"):
        streamed.content_hashes()


def test_empty_and_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(LeakprobeError, match="no images"):
        load_image_folder(tmp_path / "empty", 16)
    with pytest.raises(LeakprobeError, match="does not exist"):
        load_image_folder(tmp_path / "nope", 16)


def test_save_and_reload_folder_is_exact(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(4, 3, 10, 10, generator=gen) * 255).round() / 255
    labels = torch.tensor([3, 0, 3, 1])
    ids = ["x/one.png", "two", "three.jpg", "four"]
    save_image_folder(ImageSet(images, ids, labels), tmp_path / "out")
    assert (tmp_path / "out" / "class_003" / "x_one.png").is_file()
    back = load_image_folder(tmp_path / "out", 10)
    assert back.ids == [
        "class_000/two.png",
        "class_001/four.png",
        "class_003/three.png",
        "class_003/x_one.png",
    ]
    assert torch.equal(back.images, images[[1, 3, 2, 0]])
    assert back.labels.tolist() == [0, 1, 2, 2]  # index of the sorted class folder names
    # refuses to mix into a folder that already holds images
    with pytest.raises(LeakprobeError, match="already holds"):
        save_image_folder(ImageSet(images, ids), tmp_path / "out")
    save_image_folder(ImageSet(images, ids), tmp_path / "out", overwrite=True)
    assert len(load_image_folder(tmp_path / "out", 10)) == 4


# ---------------------------------------------------------------------------------------------
# IDX


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_idx(
    folder: Path, prefix: str, n: int, seed: int, gz: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=(n,), dtype=np.uint8)
    for name, blob in (
        (f"{prefix}-images-idx3-ubyte", _idx_bytes(x, 0x803)),
        (f"{prefix}-labels-idx1-ubyte", _idx_bytes(y, 0x801)),
    ):
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / name).write_bytes(blob)
    return x, y


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    x, y = _write_idx(tmp_path, "train", 5, seed=0, gz=gz)
    xt, yt = _write_idx(tmp_path, "t10k", 3, seed=1, gz=gz)
    data = load_idx(tmp_path, 28)
    assert data.images.shape == (5, 3, 28, 28)
    assert torch.allclose(data.images[:, 1], torch.from_numpy(x).float() / 255)
    assert data.labels.tolist() == y.tolist()
    assert data.ids[2] == "idx:train:2"
    small = load_idx(tmp_path, 14, split="test")
    assert small.images.shape == (3, 3, 14, 14)
    assert small.ids == ["idx:test:0", "idx:test:1", "idx:test:2"]
    both = load_idx(tmp_path, 32, split="all")
    assert len(both) == 8 and both.labels.tolist() == y.tolist() + yt.tolist()
    assert float(both.images.min()) >= 0 and float(both.images.max()) <= 1
    spec = load_dataset(f"idx:{tmp_path}:test", 14)
    assert torch.equal(spec.images, small.images)
    assert spec.source == f"idx:{tmp_path}:test"


def test_idx_bad_magic(tmp_path: Path) -> None:
    _write_idx(tmp_path, "train", 2, seed=0)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(
        _idx_bytes(np.zeros((2, 28, 28), np.uint8), 0x801)
    )
    with pytest.raises(LeakprobeError, match="magic"):
        load_idx(tmp_path, 28)


def test_idx_truncated_data(tmp_path: Path) -> None:
    _write_idx(tmp_path, "train", 2, seed=0)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(LeakprobeError, match="train-images-idx3-ubyte"):
        load_idx(tmp_path, 28)


def test_find_fashion_mnist_bounded_search(tmp_path: Path) -> None:
    assert find_fashion_mnist(tmp_path) is None
    folder = tmp_path / "some-pkg" / "fashion"
    folder.mkdir(parents=True)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert find_fashion_mnist(tmp_path) == folder
    known = tmp_path / "dataset-fashion-mnist"
    known.mkdir()
    (known / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert find_fashion_mnist(tmp_path) == known


def test_fashion_mnist_missing_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    import leakprobe.data.loaders as loaders

    monkeypatch.setattr(loaders, "find_fashion_mnist", lambda: None)
    with pytest.raises(LeakprobeError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


# ---------------------------------------------------------------------------------------------
# CIFAR


def _cifar_batch(n: int, seed: int, label_key: str = "labels") -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"fake",
        label_key.encode(): rng.integers(0, 10, size=n).tolist(),
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"img{i}.png".encode() for i in range(n)],
    }


def _write_cifar10(folder: Path) -> dict[str, dict]:
    folder.mkdir(parents=True, exist_ok=True)
    batches = {f"data_batch_{i}": _cifar_batch(2, i) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(3, 9)
    for name, batch in batches.items():
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=3)  # test fixture only
    return batches


def test_cifar10_folder_and_tar(tmp_path: Path) -> None:
    batches = _write_cifar10(tmp_path / "cifar-10-batches-py")
    data = load_cifar(tmp_path, 32)
    assert data.images.shape == (10, 3, 32, 32)
    expected = torch.from_numpy(batches["data_batch_1"][b"data"][0]).view(3, 32, 32).float()
    assert torch.allclose(data.images[0], expected / 255)
    assert data.labels.tolist()[:2] == batches["data_batch_1"][b"labels"]
    test = load_cifar(tmp_path, 16, split="test")
    assert test.images.shape == (3, 3, 16, 16) and test.ids[0] == "cifar10:test:0"

    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    from_tar = load_dataset(f"cifar10:{archive}", 32)
    assert torch.equal(from_tar.images, data.images)
    assert from_tar.source == f"cifar10:{archive}"


def test_cifar100_folder(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 4), ("test", 2)):
        with open(folder / name, "wb") as f:
            pickle.dump(_cifar_batch(n, n, label_key="fine_labels"), f, protocol=3)
    data = load_dataset(f"cifar100:{tmp_path}:all", 8)
    assert data.images.shape == (6, 3, 8, 8)
    assert data.ids[-1] == "cifar100:test:1"


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch pwned_marker",))


def test_cifar_refuses_malicious_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar10(folder)
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": [1]}, f, protocol=3)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LeakprobeError, match="data_batch_3.*refused global"):
        load_cifar(tmp_path, 32)
    assert not (tmp_path / "pwned_marker").exists()


def test_cifar_missing_batches(tmp_path: Path) -> None:
    _write_cifar10(tmp_path)
    (tmp_path / "data_batch_4").unlink()
    with pytest.raises(LeakprobeError, match="data_batch_4"):
        load_cifar(tmp_path, 32)


# ---------------------------------------------------------------------------------------------
# built-ins and dispatcher


def test_digits_shape_and_labels() -> None:
    data = load_digits_set(16)
    assert data.images.shape == (1797, 3, 16, 16)
    assert set(data.labels.tolist()) == set(range(10))
    assert float(data.images.min()) >= 0 and float(data.images.max()) <= 1
    assert load_dataset("digits", 16).source == "digits"


def test_synthetic_dispatch(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def make_synthetic(n: int, image_size: int = 32, seed: int = 0) -> ImageSet:
        calls.append((n, image_size, seed))
        return ImageSet(torch.zeros(n, 3, image_size, image_size), [f"s:{i}" for i in range(n)])

    fake = types.ModuleType("leakprobe.data.synthetic")
    fake.make_synthetic = make_synthetic
    monkeypatch.setitem(sys.modules, "leakprobe.data.synthetic", fake)
    assert load_dataset("synthetic:4", 8).source == "synthetic:4"
    assert load_dataset("synthetic:4", 8, seed=3).source == "synthetic:4:3"
    assert load_dataset("synthetic:4:5", 8).source == "synthetic:4:5"
    assert calls == [(4, 8, 0), (4, 8, 3), (4, 8, 5)]
    with pytest.raises(LeakprobeError, match="synthetic:N"):
        load_dataset("synthetic:many")


def test_dispatch_errors(tmp_path: Path) -> None:
    with pytest.raises(LeakprobeError, match="accepted"):
        load_dataset("imagenet")
    manifest = tmp_path / "split.json"
    manifest.write_text("{}")
    with pytest.raises(LeakprobeError, match="load_split_side"):
        load_dataset(str(manifest))
    _mixed_folder(tmp_path / "imgs")
    data = load_dataset(str(tmp_path / "imgs"), 8)
    assert len(data) == 5 and data.source == str(tmp_path / "imgs")


def test_read_does_not_write(tmp_path: Path) -> None:
    """Loading a tar.gz reads it in memory: nothing appears next to it."""
    _write_cifar10(tmp_path / "src" / "cifar-10-batches-py")
    archive = tmp_path / "arc" / "c.tar.gz"
    archive.parent.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    archive.write_bytes(buf.getvalue())
    load_cifar(archive, 32, split="test")
    assert sorted(p.name for p in archive.parent.iterdir()) == ["c.tar.gz"]
