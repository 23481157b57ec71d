import json

import pytest
import torch

from leakprobe.data.paired import load_paired_folder
from leakprobe.data.splits import make_split
from leakprobe.data.synthetic import make_synthetic
from leakprobe.errors import LeakprobeError
from leakprobe.training.image2image import (
    TASKS,
    make_task_pairs,
    train_image2image,
    train_target_image2image,
)
from leakprobe.training.trainer import TrainConfig

SMALL = {"width": 8, "depth": 2}


@pytest.fixture(scope="module")
def data():
    return make_synthetic(16, 16, seed=0)


def test_colorize_input_is_gray_and_target_is_the_image(data):
    pairs = make_task_pairs(data, "colorize")
    x = pairs.images
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
    assert torch.equal(pairs.extras["targets"], data.images)
    assert pairs.ids == data.ids and torch.equal(pairs.labels, data.labels)
    assert set(pairs.extras) == {"targets"}


def test_denoise_is_seeded_noise_of_sigma_02(data):
    a, b = make_task_pairs(data, "denoise", seed=3), make_task_pairs(data, "denoise", seed=3)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, make_task_pairs(data, "denoise", seed=4).images)
    diff = a.images - data.images
    assert float(a.images.min()) >= 0.0 and float(a.images.max()) <= 1.0
    assert 0.12 < float(diff.std()) < 0.2  # clamping shrinks it a little


def test_edges2image_and_segment(data):
    edges = make_task_pairs(data, "edges2image").images
    assert torch.equal(edges[:, 0], edges[:, 2])
    assert torch.allclose(edges.amax(dim=(1, 2, 3)), torch.ones(16))
    assert float(edges.min()) >= 0.0
    seg = make_task_pairs(data, "segment")
    assert torch.equal(seg.images, data.images)
    assert torch.equal(seg.extras["masks"], data.extras["masks"])
    no_masks = data.subset(range(4))
    no_masks.extras.pop("masks")
    with pytest.raises(LeakprobeError, match="masks"):
        make_task_pairs(no_masks, "segment")
    with pytest.raises(LeakprobeError, match="unknown image-to-image task"):
        make_task_pairs(data, "inpaint")
    assert TASKS == {"colorize": 3, "denoise": 3, "edges2image": 3, "segment": None}


def test_unet_overfits_denoise(data):
    pairs = make_task_pairs(data, "denoise")
    config = TrainConfig(epochs=15, batch_size=4, lr=5e-3, seed=0, device="cpu")
    model, history = train_image2image(pairs, "denoise", "unet-small", config, None,
                                       arch_kwargs=SMALL)
    assert len(history) == 15
    assert history[-1] < 0.75 * history[0]  # about 0.55-0.6 over seeds
    with torch.no_grad():
        out = model(pairs.images[:2])
    assert out.shape == (2, 3, 16, 16)


def test_train_target_image2image_writes_everything(tmp_path):
    split = make_split(make_synthetic(12, 16, seed=0), 6, seed=0)
    config = TrainConfig(epochs=1, batch_size=6, seed=0, device="cpu")
    paths = train_target_image2image(split, "segment", "unet-small", config, tmp_path,
                                     num_classes=9, arch_kwargs=SMALL)
    for name in ("translator.safetensors", "translator.torchscript.pt", "model.json",
                 "split.json"):
        assert (tmp_path / name).is_file(), name
    assert set(paths) >= {"weights", "torchscript", "model", "split", "members", "nonmembers"}
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["kind"] == "image2image" and meta["task"] == "segment"
    assert meta["num_classes"] == 9 and meta["arch"] == "unet-small"
    assert meta["arch_kwargs"]["out_channels"] == 9 and len(meta["loss_history"]) == 1
    members = load_paired_folder(paths["members"], 16, num_classes=9)
    nonmembers = load_paired_folder(paths["nonmembers"], 16, num_classes=9)
    assert len(members) == 6 and len(nonmembers) == 6
    scripted = torch.jit.load(str(paths["torchscript"]))
    probs = scripted(members.images[:2])
    assert probs.shape == (2, 9, 16, 16)


def test_train_target_image2image_image_task_writes_image_pairs(tmp_path):
    split = make_split(make_synthetic(8, 16, seed=0), 4, seed=0)
    config = TrainConfig(epochs=1, batch_size=4, seed=0, device="cpu")
    paths = train_target_image2image(split, "colorize", "unet-small", config, tmp_path,
                                     arch_kwargs=SMALL)
    members = load_paired_folder(paths["members"], 16)
    assert torch.equal(members.images[:, 0], members.images[:, 1])  # gray inputs
    assert not torch.equal(members.extras["targets"][:, 0], members.extras["targets"][:, 1])
    meta = json.loads(paths["model"].read_text())
    assert meta["num_classes"] is None and meta["arch_kwargs"]["output"] == "sigmoid"
