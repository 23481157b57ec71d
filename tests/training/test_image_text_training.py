"""`leakprobe.training.image_text`: a CLIP-style dual encoder is trained, saved and read back
with safetensors only (its memorisation is measured in tests/workflows)."""

from __future__ import annotations

import json

import pytest
import torch

from leakprobe.data.captions import Tokenizer, load_coco_captions, make_synthetic_captioned
from leakprobe.errors import LeakprobeError
from leakprobe.training.image_text import (
    DualEncoder,
    clip_loss,
    load_trained_image_text,
    train_image_text,
    train_target_image_text,
)
from leakprobe.training.trainer import TrainConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """`train_target_image_text` on 20 synthetic images, 2 epochs, 20 non-members beside."""
    data = make_synthetic_captioned(40, 16, seed=3)
    members, nonmembers = data.subset(range(20)), data.subset(range(20, 40))
    out = tmp_path_factory.mktemp("clip")
    paths = train_target_image_text(members, out_dir=out, epochs=2, batch_size=8, lr=1e-3,
                                    seed=0, device="cpu", embed_dim=16, amp="off",
                                    nonmembers=nonmembers)
    return out, paths, members, nonmembers


def test_the_folder_holds_weights_tokenizer_recipe_and_both_sides(saved):
    out, paths, members, nonmembers = saved
    for key in ("weights", "tokenizer", "model", "members", "nonmembers", "images", "split"):
        assert paths[key].exists(), key
    meta = json.loads((out / "model.json").read_text())
    assert meta["kind"] == "image-text" and meta["recipe"]["arch"] == "resnet-tiny"
    assert meta["embed_dim"] == 16 and meta["input_size"] == 16 and meta["n_members"] == 20
    assert len(meta["loss_history"]) == 2 and 0 < meta["temperature"] < 1
    assert not list(out.glob("*.pt")) and not list(out.glob("*.pth"))  # nothing to unpickle
    again = load_coco_captions(out / "members.json", image_size=16)
    assert again.ids == members.ids and again.extras["captions"] == members.extras["captions"]


def test_the_loaded_model_answers_like_the_trained_one(saved):
    out, _, members, _ = saved
    model = load_trained_image_text(out, device="cpu")
    assert isinstance(model, DualEncoder) and model.input_size == 16
    img = model.embed_images(members.images[:4])
    txt = model.embed_texts([members.extras["captions"][i][0] for i in range(4)])
    assert img.shape == txt.shape == (4, 16) and img.dtype == torch.float32
    assert torch.allclose(img.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(txt.norm(dim=1), torch.ones(4), atol=1e-5)
    again = load_trained_image_text(out)
    assert torch.equal(again.embed_images(members.images[:4]), img)
    # unknown words map to <unk>; a bigger image is resized to the model's side
    assert model.embed_texts(["zebra quokka"]).shape == (1, 16)
    big = torch.nn.functional.interpolate(members.images[:2], size=32)
    assert model.embed_images(big).shape == (2, 16)
    assert model.embed_texts([]).shape == (0, 16)
    with pytest.raises(LeakprobeError, match="list of captions"):
        model.embed_texts("one string")  # type: ignore[arg-type]


def test_loading_refuses_foreign_or_incomplete_folders(saved, tmp_path):
    out, *_ = saved
    with pytest.raises(LeakprobeError, match="no image_text.safetensors"):
        load_trained_image_text(tmp_path)
    for name in ("image_text.safetensors", "tokenizer.json"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    (tmp_path / "model.json").write_text(json.dumps({"kind": "captioner"}))
    with pytest.raises(LeakprobeError, match="not an image-text model"):
        load_trained_image_text(tmp_path)
    (tmp_path / "model.json").unlink()
    assert load_trained_image_text(tmp_path).embed_dim == 16  # model.json is optional
    (tmp_path / "tokenizer.json").write_text(json.dumps(
        {"kind": "word", "vocab": ["<pad>", "<bos>", "<eos>", "<unk>", "red"]}))
    with pytest.raises(LeakprobeError, match="words but the weights have"):
        load_trained_image_text(tmp_path)
    (tmp_path / "image_text.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(LeakprobeError, match="cannot read safetensors"):
        load_trained_image_text(tmp_path)


def test_the_loss_is_clips_symmetric_infonce():
    img = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    loss = clip_loss(img, img, torch.tensor(100.0))
    assert float(loss) < 1e-3  # matched pairs far apart from the rest: nothing to learn
    shuffled = clip_loss(img, img.roll(1, 0), torch.tensor(100.0))
    assert float(shuffled) > 1.0


def test_training_is_seeded_and_needs_captions():
    data = make_synthetic_captioned(8, 16, seed=1)
    tok = Tokenizer.fit([c for cs in data.extras["captions"] for c in cs])
    config = TrainConfig(epochs=1, batch_size=4, lr=1e-3, seed=5, device="cpu", amp="off")
    a, _ = train_image_text(data, tok, config)
    b, _ = train_image_text(data, tok, config)
    assert torch.equal(a.embed_images(data.images), b.embed_images(data.images))
    data.extras.pop("captions")
    with pytest.raises(LeakprobeError, match="captions"):
        train_image_text(data, tok, config)
