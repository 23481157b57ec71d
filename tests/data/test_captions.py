"""Captions: synthetic scene captions, the COCO captions format and the word tokenizer."""

from __future__ import annotations

import json
import re

import pytest
import torch

from leakprobe.data.captions import (
    BOS,
    EOS,
    UNK,
    Tokenizer,
    captions_from_scene,
    load_coco_captions,
    make_synthetic_captioned,
    save_coco_captions,
    words,
)
from leakprobe.errors import LeakprobeError

SCENE = [
    {"shape": "circle", "color": "red", "size": "large", "position": "top left"},
    {"shape": "square", "color": "blue", "size": "small", "position": "right"},
]


def test_captions_from_scene_vary_and_describe_the_scene():
    caps = captions_from_scene(SCENE, n=5, seed=0)
    assert len(caps) == 5 and len(set(caps)) == 5
    for c in caps:
        assert c == c.lower() and c == c.strip()
        assert not re.search(r"[.,;:!?]$", c)
        assert 4 <= len(c.split()) <= 20
        assert {"red", "circle"} <= set(words(c))  # the largest object, always
    assert any({"blue", "square"} <= set(words(c)) for c in caps)
    assert captions_from_scene(SCENE, 5, seed=0) == caps
    assert captions_from_scene(SCENE, 5, seed=1) != caps


def test_captions_from_scene_single_object_and_errors():
    caps = captions_from_scene([{"shape": "ring", "color": "orange"}], n=8, seed=3)
    assert len(caps) == 8 and len(set(caps)) >= 5
    assert all("orange ring" in c for c in caps)
    assert len(captions_from_scene([], n=2)) == 2
    with pytest.raises(LeakprobeError):
        captions_from_scene([{"shape": "ring"}])
    with pytest.raises(LeakprobeError):
        captions_from_scene(SCENE, n=0)


def test_make_synthetic_captioned():
    data = make_synthetic_captioned(12, image_size=16, seed=2, captions_per_image=4)
    assert data.source == "synthetic-captions:12:2"
    assert make_synthetic_captioned(3, 16).source == "synthetic-captions:3"
    caps = data.extras["captions"]
    assert len(caps) == 12 and all(len(c) == 4 and len(set(c)) == 4 for c in caps)
    for scene, refs in zip(data.extras["scenes"], caps, strict=True):
        for c in refs:
            assert {scene[0]["color"], scene[0]["shape"]} <= set(words(c))
    assert caps[0] != caps[1]
    sub = data.subset([3, 1])
    assert sub.extras["captions"] == [caps[3], caps[1]]
    again = make_synthetic_captioned(12, image_size=16, seed=2, captions_per_image=4)
    assert again.extras["captions"] == caps


def test_coco_round_trip(tmp_path):
    data = make_synthetic_captioned(5, image_size=16, seed=1, captions_per_image=3)
    path = save_coco_captions(data, tmp_path / "caps.json", tmp_path / "imgs")
    doc = json.loads(path.read_text())
    assert len(doc["images"]) == 5 and len(doc["annotations"]) == 15
    loaded = load_coco_captions(path, image_size=16)  # file_names are relative to the JSON
    assert loaded.ids == data.ids
    assert loaded.extras["captions"] == data.extras["captions"]
    assert torch.equal((loaded.images * 255).round(), (data.images.clamp(0, 1) * 255).round())
    # images next to the JSON: images_dir defaults to the JSON's folder
    save_coco_captions(data, tmp_path / "imgs" / "caps.json", tmp_path / "imgs")
    beside = load_coco_captions(tmp_path / "imgs" / "caps.json", image_size=8)
    assert beside.images.shape == (5, 3, 8, 8) and beside.source.endswith("caps.json")


def _coco(tmp_path, images, annotations, names=("a.png", "b.png")):
    from PIL import Image

    for name in names:
        Image.new("RGB", (10, 12), (200, 30, 30)).save(tmp_path / name)
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def test_coco_integer_ids_and_caption_order(tmp_path):
    path = _coco(
        tmp_path,
        [{"id": 7, "file_name": "a.png"}, {"id": 3, "file_name": "b.png"}],
        [
            {"image_id": 3, "caption": "A dog. "},
            {"image_id": 7, "caption": "a  cat"},
            {"image_id": 3, "caption": "two dogs"},
        ],
    )
    data = load_coco_captions(path, image_size=8)
    assert data.ids == ["7", "3"]
    assert data.extras["captions"] == [["a cat"], ["A dog.", "two dogs"]]
    assert data.images.shape == (2, 3, 8, 8) and data.labels is None


GOOD_IMAGES = [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}]
GOOD_ANNS = [{"image_id": 1, "caption": "a red thing"}, {"image_id": 2, "caption": "blue"}]


@pytest.mark.parametrize(
    "images, annotations, needle",
    [
        (
            [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "gone.png"}],
            GOOD_ANNS,
            "gone.png",
        ),
        (GOOD_IMAGES, [{"image_id": 1, "caption": "a red thing"}], "no caption"),
        (GOOD_IMAGES, [*GOOD_ANNS, {"image_id": 2, "caption": "   "}], "empty caption"),
        (GOOD_IMAGES, [*GOOD_ANNS, {"image_id": 9, "caption": "x"}], "unknown image id"),
        ([*GOOD_IMAGES, {"id": 1, "file_name": "b.png"}], GOOD_ANNS, "duplicate image id"),
        ([{"id": 1}], GOOD_ANNS, "file_name"),
        (GOOD_IMAGES, [{"image_id": 1}], "caption"),
    ],
)
def test_coco_errors(tmp_path, images, annotations, needle):
    path = _coco(tmp_path, images, annotations)
    with pytest.raises(LeakprobeError, match=needle) as info:
        load_coco_captions(path)
    assert "\n" not in str(info.value)


def test_coco_bad_files(tmp_path):
    with pytest.raises(LeakprobeError, match="does not exist"):
        load_coco_captions(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LeakprobeError, match="invalid JSON"):
        load_coco_captions(bad)
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(LeakprobeError, match="annotations"):
        load_coco_captions(bad)
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(LeakprobeError, match="JSON object"):
        load_coco_captions(bad)


def test_save_needs_captions(tmp_path):
    from leakprobe.data.synthetic import make_synthetic

    with pytest.raises(LeakprobeError, match="captions"):
        save_coco_captions(make_synthetic(2, 16), tmp_path / "c.json", tmp_path / "i")


def test_tokenizer_round_trip_and_unknown_words():
    tok = Tokenizer.fit(["a red circle", "A red square, top-left!", "a circle"])
    assert len(tok) == 4 + 6  # specials + a, red, circle, square, top, left
    assert tok.stoi["<pad>"] == 0 and (BOS, EOS, UNK) == (1, 2, 3)
    assert tok.stoi["a"] == 4 and tok.stoi["circle"] == 5  # by count, then alphabetical
    ids = tok.encode("A red circle", max_len=10)
    assert ids[0] == BOS and ids[-1] == EOS and len(ids) == 5
    assert tok.decode(ids) == "a red circle"
    assert tok.decode([*ids, 7, 8]) == "a red circle"  # stops at eos
    unk = tok.encode("a purple circle", 10)
    assert unk[2] == UNK
    assert tok.decode(unk) == "a circle" and tok.decode(unk, keep_unk=True) == "a <unk> circle"
    assert tok.encode("a red circle square", 4) == [BOS, tok.stoi["a"], tok.stoi["red"], EOS]
    batch = tok.encode_batch(["a", "red circle"], 6)
    assert batch.tolist() == [[1, 4, 2, 0, 0, 0], [1, 6, 5, 2, 0, 0]]
    again = Tokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again.itos == tok.itos and again.decode(torch.tensor(ids)) == "a red circle"
    rare = Tokenizer.fit(["a red circle", "a circle"], min_count=2)
    assert rare.itos[4:] == ["a", "circle"]
    with pytest.raises(LeakprobeError):
        Tokenizer.from_dict({"vocab": ["x"]})
    with pytest.raises(LeakprobeError):
        tok.decode([99])
