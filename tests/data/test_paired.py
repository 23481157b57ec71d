import numpy as np
import pytest
import torch
from PIL import Image

from leakprobe.data.images import ImageSet
from leakprobe.data.paired import load_paired_folder, save_paired_folder
from leakprobe.data.synthetic import make_synthetic
from leakprobe.errors import LeakprobeError


def _quantised(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round() / 255


def test_round_trip_image_targets(tmp_path):
    data = make_synthetic(5, 16, seed=1)
    targets = data.images.flip(-1)
    pairs = ImageSet(data.images, data.ids, extras={"targets": targets})
    save_paired_folder(pairs, tmp_path / "p")
    assert len(list((tmp_path / "p" / "inputs").glob("*.png"))) == 5
    loaded = load_paired_folder(tmp_path / "p", 16)
    assert loaded.ids == sorted(f"synthetic_1_{i}" for i in range(5))
    expect = [int(i.rsplit("_", 1)[1]) for i in loaded.ids]
    torch.testing.assert_close(loaded.images, _quantised(data.images[expect]), atol=1e-6, rtol=0)
    torch.testing.assert_close(loaded.extras["targets"], _quantised(targets[expect]), atol=1e-6,
                               rtol=0)
    with pytest.raises(LeakprobeError, match="already holds"):
        save_paired_folder(pairs, tmp_path / "p")
    save_paired_folder(pairs, tmp_path / "p", overwrite=True)


def test_round_trip_label_maps_with_other_input_extension(tmp_path):
    data = make_synthetic(4, 16, seed=0)
    save_paired_folder(data, tmp_path / "seg")  # no targets: masks are written
    # an input may have another extension than its target
    png = tmp_path / "seg" / "inputs" / "synthetic_0_0.png"
    Image.open(png).save(png.with_suffix(".bmp"))
    png.unlink()
    loaded = load_paired_folder(tmp_path / "seg", 16, num_classes=9)
    assert loaded.extras["masks"].dtype == torch.int64
    assert torch.equal(loaded.extras["masks"], data.extras["masks"])
    assert "targets" not in loaded.extras
    mode = Image.open(tmp_path / "seg" / "targets" / "synthetic_0_0.png").mode
    assert mode == "L"
    small = load_paired_folder(tmp_path / "seg", 8, num_classes=9)  # nearest: still classes
    assert small.extras["masks"].shape == (4, 8, 8)
    assert set(small.extras["masks"].unique().tolist()) <= set(range(9))


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def test_label_value_at_or_above_num_classes_names_file_and_value(tmp_path):
    _write(tmp_path / "inputs" / "a.png", np.zeros((8, 8, 3)))
    _write(tmp_path / "targets" / "a.png", np.full((8, 8), 7))
    with pytest.raises(LeakprobeError, match=r"a\.png.*label value 7"):
        load_paired_folder(tmp_path, 8, num_classes=5)
    assert load_paired_folder(tmp_path, 8, num_classes=8).extras["masks"].max() == 7
    _write(tmp_path / "targets" / "a.png", np.zeros((8, 8, 3)))  # RGB is not a label map
    with pytest.raises(LeakprobeError, match="mode L or P"):
        load_paired_folder(tmp_path, 8, num_classes=5)


def test_mismatched_names_are_listed(tmp_path):
    for name in ("a", "b", "c"):
        _write(tmp_path / "inputs" / f"{name}.png", np.zeros((8, 8, 3)))
    for name in ("a", "z"):
        _write(tmp_path / "targets" / f"{name}.jpg", np.zeros((8, 8, 3)))
    with pytest.raises(LeakprobeError, match=r"2 inputs have no target \(b, c\).*1 targets have no"
                                              r" input \(z\)"):
        load_paired_folder(tmp_path, 8)


def test_missing_empty_and_truncated(tmp_path):
    _write(tmp_path / "inputs" / "a.png", np.zeros((8, 8, 3)))
    with pytest.raises(LeakprobeError, match="no targets/"):
        load_paired_folder(tmp_path, 8)
    (tmp_path / "targets").mkdir()
    with pytest.raises(LeakprobeError, match="holds no images"):
        load_paired_folder(tmp_path, 8)
    raw = (tmp_path / "inputs" / "a.png").read_bytes()
    (tmp_path / "targets" / "a.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(LeakprobeError, match=r"targets/a\.png.*unreadable or truncated"):
        load_paired_folder(tmp_path, 8)
    with pytest.raises(LeakprobeError, match="does not exist"):
        load_paired_folder(tmp_path / "nope", 8)
    with pytest.raises(LeakprobeError, match="no ground truth"):
        save_paired_folder(ImageSet(torch.rand(1, 3, 4, 4), ["x"]), tmp_path / "out")
