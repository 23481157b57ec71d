"""`leakprobe.training.captioning`: a CNN-LSTM target memorises its members and is saved."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import types
from collections import Counter
from pathlib import Path

import pytest
import torch

from leakprobe.data.images import ImageSet
from leakprobe.data.splits import make_split
from leakprobe.data.synthetic import make_synthetic
from leakprobe.errors import LeakprobeError
from leakprobe.targets.captioner import ModuleCaptioner, load_captioner
from leakprobe.training.captioning import encode_captions, train_captioner, train_target_captioner
from leakprobe.training.trainer import TrainConfig

SMALL = {"embed_dim": 64, "hidden": 128, "width": 8}


class StandInTokenizer:
    """Word-level tokenizer with the interface of ``leakprobe.data.captions.Tokenizer``."""

    SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")

    def __init__(self, words: list[str]) -> None:
        self.itos = list(self.SPECIALS) + list(words)
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def fit(cls, captions: list[str], min_count: int = 1) -> StandInTokenizer:
        counts = Counter(w for c in captions for w in c.lower().split())
        return cls(sorted(w for w, n in counts.items() if n >= min_count))

    def encode(self, text: str, max_len: int) -> list[int]:
        ids = [1] + [self.stoi.get(w, 3) for w in text.lower().split()] + [2]
        return ids[:max_len]

    def decode(self, ids: list[int]) -> str:
        words = []
        for i in ids:
            if i == 2:
                break
            if i > 2:
                words.append(self.itos[i] if i < len(self.itos) else "<unk>")
        return " ".join(words)

    def to_dict(self) -> dict:
        return {"vocab": self.itos}

    @classmethod
    def from_dict(cls, d: dict) -> StandInTokenizer:
        return cls(d["vocab"][len(cls.SPECIALS):])

    def __len__(self) -> int:
        return len(self.itos)


def stand_in_captioned(n: int, image_size: int = 32, seed: int = 0) -> ImageSet:
    data = make_synthetic(n, image_size, seed)
    caps = []
    for scene in data.extras["scenes"]:
        o = scene[0]
        caps.append([f"a {o['size']} {o['color']} {o['shape']} at the {o['position']}",
                     f"a {o['color']} {o['shape']}"])
    data.extras["captions"] = caps
    return data


def stand_in_save_coco(data: ImageSet, json_path, images_dir) -> Path:
    from PIL import Image

    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    entries, annotations = [], []
    for k, (image_id, refs) in enumerate(zip(data.ids, data.extras["captions"], strict=True)):
        name = image_id.replace(":", "_") + ".png"
        arr = (data.images[k].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
        Image.fromarray(arr).save(images_dir / name)
        entries.append({"id": k, "file_name": name})
        annotations += [{"image_id": k, "caption": c} for c in refs]
    Path(json_path).write_text(json.dumps({"images": entries, "annotations": annotations}))
    return Path(json_path)


@pytest.fixture
def captions(monkeypatch):
    """The real ``leakprobe.data.captions`` when present, else an equivalent stand-in."""
    if importlib.util.find_spec("leakprobe.data.captions") is not None:
        return importlib.import_module("leakprobe.data.captions")
    fake = types.ModuleType("leakprobe.data.captions")
    fake.Tokenizer = StandInTokenizer
    fake.make_synthetic_captioned = stand_in_captioned
    fake.save_coco_captions = stand_in_save_coco
    monkeypatch.setitem(sys.modules, "leakprobe.data.captions", fake)
    return fake


def _tokenizer(captions, data: ImageSet):
    return captions.Tokenizer.fit([c for refs in data.extras["captions"] for c in refs])


def test_encode_captions_pads_and_cuts(captions):
    data = captions.make_synthetic_captioned(4, 16, 0)
    tok = _tokenizer(captions, data)
    seqs = encode_captions(tok, ["a b c d e f g h", data.extras["captions"][0][0]], 5)
    assert seqs.shape == (2, 6) and seqs.dtype == torch.long
    assert int(seqs[0, 0]) == 1 and int(seqs[1, 0]) == 1


def test_captioner_memorises_members(captions):
    data = captions.make_synthetic_captioned(16, 32, 0)
    tok = _tokenizer(captions, data)
    config = TrainConfig(epochs=100, batch_size=4, lr=5e-3, seed=0, device="cpu")
    model, history = train_captioner(data, tok, config)
    assert len(history) == 100 and history[-1] < 0.2 * history[0]
    target = ModuleCaptioner(model, tok, device="cpu")
    generated = target.caption(data.images)
    assert target.queries == 16 and len(generated) == 16
    hits = sum(g in refs for g, refs in zip(generated, data.extras["captions"], strict=True))
    assert hits >= 4, (hits, generated[:4], data.extras["captions"][:4])


def test_training_is_seeded(captions):
    data = captions.make_synthetic_captioned(8, 16, 1)
    tok = _tokenizer(captions, data)
    config = TrainConfig(epochs=2, batch_size=4, seed=3, device="cpu")
    _, a = train_captioner(data, tok, config, SMALL)
    _, b = train_captioner(data, tok, config, SMALL)
    assert a == b


def test_missing_captions_are_refused(captions):
    data = make_synthetic(4, 16, 0)
    tok = captions.Tokenizer.fit(["a red circle"])
    with pytest.raises(LeakprobeError, match="captions"):
        train_captioner(data, tok, TrainConfig(epochs=1, device="cpu"))
    data.extras["captions"] = [["a red circle"], [], ["x"], ["y"]]
    with pytest.raises(LeakprobeError, match="no usable reference captions"):
        train_captioner(data, tok, TrainConfig(epochs=1, device="cpu"))


def test_train_target_captioner_writes_everything(captions, tmp_path):
    data = captions.make_synthetic_captioned(12, 16, 0)
    split = make_split(data, 6, seed=0)
    config = TrainConfig(epochs=2, batch_size=4, seed=0, device="cpu")
    paths = train_target_captioner(split, config, tmp_path / "t", SMALL)
    out = tmp_path / "t"
    for name in ("captioner.safetensors", "captioner.torchscript.pt", "tokenizer.json",
                 "model.json", "split.json", "members.json", "nonmembers.json"):
        assert (out / name).is_file(), name
    assert (out / "images").is_dir() and any((out / "images").iterdir())
    assert set(paths) >= {"weights", "torchscript", "tokenizer", "model", "split", "members",
                          "nonmembers", "images"}
    meta = json.loads((out / "model.json").read_text())
    assert meta["kind"] == "captioner" and meta["arch"] == "cnn-lstm"
    assert len(meta["loss_history"]) == 2 and meta["n_members"] == 6
    assert meta["arch_kwargs"]["width"] == 8 and meta["input_size"] == 16
    # the tokenizer only knows the members' words
    def words_of(data: ImageSet) -> set[str]:
        return {w for refs in data.extras["captions"] for c in refs
                for w in re.findall(r"[^\W_]+", c.lower())}

    tok = captions.Tokenizer.from_dict(json.loads((out / "tokenizer.json").read_text()))
    assert set(tok.itos[4:]) == words_of(split.members)
    assert not words_of(split.nonmembers) - words_of(split.members) & set(tok.itos)
    assert json.loads((out / "split.json").read_text())["members"][0]["id"] == split.members.ids[0]
    # both saved forms load and agree
    folder = load_captioner(str(out), device="cpu")
    script = load_captioner(str(out / "captioner.torchscript.pt"), device="cpu")
    x = split.nonmembers.images
    assert folder.caption(x) == script.caption(x)
