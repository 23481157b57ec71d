"""Captioned image sets for the image-captioning membership audit (M4I, Hu et al. 2022).

* :func:`captions_from_scene` writes several different reference captions for one synthetic
  scene (seeded templates and synonyms);
* :func:`make_synthetic_captioned` is :func:`~leakprobe.data.synthetic.make_synthetic` with
  ``extras["captions"]`` (a list of reference captions per image);
* :func:`load_coco_captions` / :func:`save_coco_captions` read and write the COCO captions
  format (``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``),
  with images preprocessed exactly like :func:`~leakprobe.data.loaders.load_image_folder`;
* :func:`load_captioned_dataset` loads either from a spec (``synthetic:N[:SEED]``,
  ``FILE.json[:IMAGES]``), for ``--data`` / ``--members`` style options;
* :class:`Tokenizer` is a word-level vocabulary for caption models.

Words are ``[^\\W_]+`` runs of the lower-cased text (letters and digits; punctuation and
underscores separate words), the same split as :mod:`leakprobe.evaluation.text_metrics`.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from leakprobe.data.decode import read_image
from leakprobe.data.images import ImageSet
from leakprobe.data.loaders import check_image_size, parse_synthetic_spec, safe_name
from leakprobe.data.text import words
from leakprobe.errors import LeakprobeError
from leakprobe.io import write_json

# ---------------------------------------------------------------------------------------------
# captions written from synthetic scenes

_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_SIZE_WORDS = {
    "small": ("small", "little", "tiny"),
    "medium": ("medium", "medium sized", "mid sized"),
    "large": ("large", "big"),
}
_THING = ("shape", "object", "figure")
_OPENERS = ("there is", "we see", "the image shows", "a picture of", "an image with")
_BACKGROUNDS = ("a colourful background", "a textured background", "a gradient background")
MIN_CAPTION_WORDS = 4
MAX_CAPTION_WORDS = 20


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _number(k: int) -> str:
    return _NUMBERS[k] if 0 <= k < len(_NUMBERS) else str(k)


def _position_phrase(position: str, rng: random.Random) -> str:
    """``"top left"`` -> ``"at the top left"`` / ``"in the top left corner"`` / ..."""
    pos = position.strip().lower()
    if pos in ("center", "centre", "middle", ""):
        return rng.choice(("in the center", "in the middle", "near the center"))
    parts = pos.split()
    if len(parts) == 2 and parts[0] in ("top", "bottom") and parts[1] in ("left", "right"):
        upper = "upper" if parts[0] == "top" else "lower"
        return rng.choice((f"at the {pos}", f"in the {pos} corner", f"in the {upper} {parts[1]}"))
    if pos in ("left", "right"):
        return rng.choice((f"on the {pos}", f"at the {pos}", f"on the {pos} side"))
    if pos in ("top", "bottom"):
        return rng.choice((f"at the {pos}", f"near the {pos}"))
    return f"at the {pos}"


def _noun_phrase(obj: dict, rng: random.Random, size: bool, pos: bool) -> str:
    words = []
    if size and obj.get("size"):
        words.append(rng.choice(_SIZE_WORDS.get(obj["size"], (obj["size"],))))
    words += [obj["color"], obj["shape"]]
    text = " ".join(words)
    text = f"{_article(text)} {text}"
    if pos and obj.get("position") is not None:
        text += " " + _position_phrase(obj["position"], rng)
    return text


def _join(phrases: list[str]) -> str:
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _t_described(objs: list[dict], rng: random.Random) -> str:
    # "a large red circle at the top left and a blue square on the right"
    first = _noun_phrase(objs[0], rng, size=True, pos=True)
    rest = [_noun_phrase(o, rng, rng.random() < 0.5, rng.random() < 0.5) for o in objs[1:]]
    return _join([first, *rest])


def _t_there_is(objs: list[dict], rng: random.Random) -> str:
    # "there is a red circle and a small blue square"
    phrases = [_noun_phrase(o, rng, rng.random() < 0.5, False) for o in objs]
    return f"{rng.choice(_OPENERS)} {_join(phrases)}"


def _t_counted(objs: list[dict], rng: random.Random) -> str:
    # "two shapes: a red circle on the left and a blue square"
    thing = rng.choice(_THING)
    head = f"{_number(len(objs))} {thing}{'s' if len(objs) != 1 else ''}:"
    phrases = [
        _noun_phrase(o, rng, False, i == 0 or rng.random() < 0.4) for i, o in enumerate(objs)
    ]
    return f"{head} {_join(phrases)}"


def _t_position_first(objs: list[dict], rng: random.Random) -> str:
    # "at the top left there is a large red circle next to a green ring"
    where = _position_phrase(str(objs[0].get("position", "center")), rng)
    text = f"{where} there is {_noun_phrase(objs[0], rng, True, False)}"
    if len(objs) > 1:
        text += f" {rng.choice(('next to', 'beside', 'near'))} "
        text += _noun_phrase(objs[1], rng, False, False)
    return text


def _t_others(objs: list[dict], rng: random.Random) -> str:
    # "a red circle and two other shapes" / "a single red circle on a colourful background"
    thing = rng.choice(_THING)
    if len(objs) == 1:
        return f"a single {objs[0]['color']} {objs[0]['shape']} on {rng.choice(_BACKGROUNDS)}"
    k = len(objs) - 1
    other = f"{_number(k)} other {thing}{'s' if k != 1 else ''}"
    return f"{_noun_phrase(objs[0], rng, rng.random() < 0.5, False)} and {other}"


def _t_count_including(objs: list[dict], rng: random.Random) -> str:
    # "an image of three objects including a large red circle"
    thing = rng.choice(_THING)
    count = f"{_number(len(objs))} {thing}{'s' if len(objs) != 1 else ''}"
    head = rng.choice(("an image of", "a picture of", "a drawing of"))
    if len(objs) == 1:
        return f"{head} {count}, {_noun_phrase(objs[0], rng, True, False)}"
    word = rng.choice(("including", "with", "among them"))
    return f"{head} {count} {word} {_noun_phrase(objs[0], rng, True, False)}"


def _t_background(objs: list[dict], rng: random.Random) -> str:
    # "a red circle at the top on a textured background"
    return f"{_noun_phrase(objs[0], rng, rng.random() < 0.5, True)} on {rng.choice(_BACKGROUNDS)}"


_TEMPLATES: tuple[Callable[[list[dict], random.Random], str], ...] = (
    _t_described,
    _t_there_is,
    _t_counted,
    _t_position_first,
    _t_others,
    _t_count_including,
    _t_background,
)
_EMPTY_CAPTIONS = (
    "a colourful background with no shapes",
    "an empty image with no objects",
    "there are no shapes in this picture",
    "just a textured background and nothing else",
    "a gradient background without any figures",
)


def _check_scene(scene: Any) -> list[dict]:
    if not isinstance(scene, (list, tuple)):
        raise LeakprobeError(f"a scene must be a list of object dicts, got {type(scene).__name__}")
    for k, obj in enumerate(scene):
        if not isinstance(obj, dict) or not all(
            isinstance(obj.get(key), str) and obj.get(key) for key in ("shape", "color")
        ):
            raise LeakprobeError(f"scene object #{k} needs string 'shape' and 'color': {obj!r}")
    return [
        {
            "shape": o["shape"].lower(),
            "color": o["color"].lower(),
            "size": str(o["size"]).lower() if o.get("size") else None,
            "position": str(o["position"]).lower() if o.get("position") is not None else None,
        }
        for o in scene
    ]


def captions_from_scene(scene: list[dict], n: int = 5, seed: int = 0) -> list[str]:
    """Write ``n`` different reference captions for one synthetic scene.

    Every caption names the first (largest) object's colour and shape; the others are
    mentioned by some templates. Templates are used in a seeded shuffled order (so the ``n``
    captions differ in structure as well as in synonyms: "little"/"tiny", "object"/"figure",
    "at the top left"/"in the upper left", ...). Captions are lower case, without trailing
    punctuation, and 4 to 20 words long (counted by whitespace).

    Args:
        scene: object dicts with ``shape`` and ``color`` (strings) and optionally ``size``
            (``"small"``/``"medium"``/``"large"``) and ``position`` (``"top left"``, ...), as
            in ``make_synthetic(...).extras["scenes"][i]``.
        n: number of captions (>= 1).
        seed: the same ``(scene, n, seed)`` always gives the same captions.
    Returns:
        ``n`` captions, all different unless the scene admits fewer than ``n`` distinct ones
        (then the list cycles through those found).
    """
    if not isinstance(n, int) or n < 1:
        raise LeakprobeError(f"captions per image must be a positive integer, got {n!r}")
    objs = _check_scene(scene)
    rng = random.Random(seed)
    if not objs:
        pool = list(_EMPTY_CAPTIONS)
        rng.shuffle(pool)
        return [pool[i % len(pool)] for i in range(n)]
    order = list(_TEMPLATES)
    rng.shuffle(order)
    found: dict[str, None] = {}
    for attempt in range(60 * n + 60):
        template = order[attempt % len(order)]
        text = " ".join(template(objs, rng).split()).rstrip(" .,;:!?")
        if MIN_CAPTION_WORDS <= len(text.split()) <= MAX_CAPTION_WORDS:
            found.setdefault(text, None)
        if len(found) >= n:
            break
    pool = list(found)
    if not pool:  # unreachable for sane scenes: the shortest templates have 4-7 words
        pool = [f"an image of {objs[0]['color']} {objs[0]['shape']}"]
    return [pool[i % len(pool)] for i in range(n)]


def make_synthetic_captioned(
    n: int, image_size: int = 32, seed: int = 0, captions_per_image: int = 5
) -> ImageSet:
    """Synthetic images (see :func:`~leakprobe.data.synthetic.make_synthetic`) with captions.

    Args:
        n: number of images.
        image_size: square side in pixels.
        seed: generator seed for the images and the captions.
        captions_per_image: reference captions written per image.
    Returns:
        The ImageSet of ``make_synthetic(n, image_size, seed)`` (labels, masks, scenes) with
        ``extras["captions"]`` (one list of ``captions_per_image`` strings per image) and
        source ``synthetic-captions:N`` (``synthetic-captions:N:SEED`` for a non-zero seed).
    """
    from leakprobe.data.synthetic import make_synthetic

    data = make_synthetic(n, image_size, seed)
    data.extras["captions"] = [
        captions_from_scene(scene, captions_per_image, seed=seed * 1_000_003 + i)
        for i, scene in enumerate(data.extras["scenes"])
    ]
    data.source = f"synthetic-captions:{n}" if seed == 0 else f"synthetic-captions:{n}:{seed}"
    return data


# ---------------------------------------------------------------------------------------------
# COCO captions format


def _image_key(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise LeakprobeError(f"{where}: image id must be an integer or a string, got {value!r}")
    return str(value)


def load_coco_captions(
    json_path: str | Path, images_dir: str | Path | None = None, image_size: int = 32
) -> ImageSet:
    """Load a COCO-format captions file and its images.

    Every image is converted to 8-bit RGB and resized with PIL bicubic (antialiased), exactly
    like :func:`~leakprobe.data.loaders.load_image_folder`. Images keep the JSON's order;
    each image's captions keep the order of the annotations (whitespace-stripped).

    Args:
        json_path: ``{"images": [{"id", "file_name"}, ...], "annotations": [{"image_id",
            "caption"}, ...]}``; other keys are ignored.
        images_dir: folder that ``file_name`` is relative to (default: the JSON's folder).
        image_size: side of the square output images.
    Returns:
        An ImageSet with ids ``str(image id)``, ``extras["captions"]`` (list of reference
        captions per image), no labels, source ``str(json_path)``.
    Raises:
        LeakprobeError: unreadable or invalid JSON, missing keys, duplicate image ids, a
            missing or unreadable image file, an annotation for an unknown image id, an empty
            caption, or an image without any caption.
    """
    check_image_size(image_size)
    path = Path(json_path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LeakprobeError(f"captions file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LeakprobeError(f"{path}: cannot read captions file ({exc})") from exc
    except json.JSONDecodeError as exc:
        raise LeakprobeError(f"{path}: invalid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise LeakprobeError(f"{path}: expected a JSON object with 'images' and 'annotations'")
    for key in ("images", "annotations"):
        if not isinstance(doc.get(key), list):
            what = "missing" if key not in doc else "not a list"
            raise LeakprobeError(f"{path}: '{key}' is {what} (COCO captions format)")
    if not doc["images"]:
        raise LeakprobeError(f"{path}: 'images' is empty")
    folder = Path(images_dir) if images_dir is not None else path.parent
    ids: list[str] = []
    files: list[Path] = []
    captions: dict[str, list[str]] = {}
    for k, entry in enumerate(doc["images"]):
        where = f"{path}: images[{k}]"
        if not isinstance(entry, dict) or "id" not in entry or "file_name" not in entry:
            raise LeakprobeError(f"{where} needs 'id' and 'file_name'")
        key = _image_key(entry["id"], where)
        if key in captions:
            raise LeakprobeError(f"{path}: duplicate image id {key!r}")
        name = entry["file_name"]
        if not isinstance(name, str) or not name:
            raise LeakprobeError(f"{where}: 'file_name' must be a non-empty string")
        ids.append(key)
        files.append(folder / name)
        captions[key] = []
    for k, ann in enumerate(doc["annotations"]):
        where = f"{path}: annotations[{k}]"
        if not isinstance(ann, dict) or "image_id" not in ann or "caption" not in ann:
            raise LeakprobeError(f"{where} needs 'image_id' and 'caption'")
        key = _image_key(ann["image_id"], where)
        if key not in captions:
            raise LeakprobeError(f"{where}: caption for unknown image id {key!r}")
        text = ann["caption"]
        if not isinstance(text, str):
            raise LeakprobeError(f"{where}: caption must be a string, got {text!r}")
        text = " ".join(text.split())
        if not text:
            raise LeakprobeError(f"{where}: empty caption for image id {key!r}")
        captions[key].append(text)
    for key in ids:
        if not captions[key]:
            raise LeakprobeError(f"{path}: image id {key!r} has no caption")
    for key, file in zip(ids, files, strict=True):
        if not file.is_file():
            raise LeakprobeError(f"{path}: image file {file} (image id {key!r}) does not exist")
    arrays = [torch.from_numpy(read_image(p, image_size)) for p in files]
    images = torch.stack(arrays).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    return ImageSet(
        images, ids, None, extras={"captions": [captions[k] for k in ids]}, source=str(path)
    )


def load_captioned_dataset(
    spec: str, image_size: int = 32, seed: int = 0, images_dir: str | Path | None = None
) -> ImageSet:
    """Load captioned images from a spec: the captioned counterpart of ``load_dataset``.

    Args:
        spec: ``synthetic:N[:SEED]`` (:func:`make_synthetic_captioned`), a COCO captions file
            ``FILE.json``, or ``FILE.json:IMAGES`` with the folder its file names resolve
            against.
        image_size: side of the square output images.
        seed: generator seed for ``synthetic`` (a seed in the spec takes precedence).
        images_dir: folder the file names of ``FILE.json`` resolve against (default: the
            JSON's folder); ``FILE.json:IMAGES`` takes precedence.
    Returns:
        The ImageSet, with ``extras["captions"]``.
    """
    spec = str(spec)
    if spec.startswith("synthetic:"):
        n, data_seed = parse_synthetic_spec(spec, seed)
        return make_synthetic_captioned(n, image_size, data_seed)
    path, _, folder = spec.partition(".json:")
    json_path = path + ".json" if folder else spec
    return load_coco_captions(json_path, folder or images_dir, image_size)


def save_coco_captions(data: ImageSet, json_path: str | Path, images_dir: str | Path) -> Path:
    """Write an ImageSet with ``extras["captions"]`` as PNGs plus a COCO captions JSON.

    PNG names are the sanitised ids (as in :func:`~leakprobe.data.loaders.save_image_folder`;
    a clash gets ``-<position>``); ``file_name`` is the path relative to the JSON's folder,
    so ``load_coco_captions(json_path)`` finds the images with no ``images_dir``. Image ids
    are the set's ids (strings). The JSON is written
    last and atomically, so a complete JSON always names existing images.

    Args:
        data: the set; every image needs at least one non-empty caption.
        json_path: the JSON file to write.
        images_dir: folder for the PNGs (created when missing; same names are overwritten).
    Returns:
        The JSON path.
    """
    caps = data.extras.get("captions")
    if caps is None or len(caps) != len(data):
        raise LeakprobeError("the image set has no extras['captions'] (one list per image)")
    for image_id, refs in zip(data.ids, caps, strict=True):
        if (
            isinstance(refs, str)
            or not refs
            or not all(isinstance(c, str) and c.strip() for c in refs)
        ):
            raise LeakprobeError(f"image {image_id!r}: needs a list of non-empty captions")
    if len(set(data.ids)) != len(data.ids):
        raise LeakprobeError("the image set has duplicate ids")
    folder = Path(images_dir)
    if folder.exists() and not folder.is_dir():
        raise LeakprobeError(f"cannot write images to {folder}: it is a file")
    folder.mkdir(parents=True, exist_ok=True)
    pixels_uint8 = (data.images.clamp(0, 1) * 255).round().to(torch.uint8)
    pixels = pixels_uint8.permute(0, 2, 3, 1).contiguous().numpy()
    used: set[str] = set()
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i, image_id in enumerate(data.ids):
        name = safe_name(image_id)
        if name in used:
            name = f"{name[:-4]}-{i}.png"
        used.add(name)
        Image.fromarray(np.ascontiguousarray(pixels[i]), mode="RGB").save(
            folder / name, format="PNG"
        )
        images.append({"id": image_id, "file_name": _relative_name(folder / name, json_path)})
        for text in caps[i]:
            annotations.append(
                {"id": len(annotations), "image_id": image_id, "caption": text.strip()}
            )
    return write_json(json_path, {"images": images, "annotations": annotations})


# ---------------------------------------------------------------------------------------------
# word-level tokenizer

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = 0, 1, 2, 3


class Tokenizer:
    """Word-level vocabulary: ``<pad>``=0, ``<bos>``=1, ``<eos>``=2, ``<unk>``=3, then words.

    Build it with :meth:`fit`; words are ordered by decreasing count, then alphabetically,
    so the same captions always give the same ids.
    """

    def __init__(self, vocab: Sequence[str]) -> None:
        vocab = list(vocab)
        if tuple(vocab[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise LeakprobeError(f"tokenizer vocabulary must start with {list(SPECIAL_TOKENS)}")
        if len(set(vocab)) != len(vocab):
            raise LeakprobeError("tokenizer vocabulary has duplicate words")
        self.itos: list[str] = vocab
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(vocab)}

    @classmethod
    def fit(cls, captions: Sequence[str], min_count: int = 1) -> Tokenizer:
        """Vocabulary of the words seen at least ``min_count`` times in ``captions``."""
        if isinstance(captions, str):
            raise LeakprobeError("Tokenizer.fit needs a list of captions, not one string")
        counts = Counter(w for text in captions for w in words(text))
        kept = sorted(
            (w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w)
        )
        return cls([*SPECIAL_TOKENS, *(w for w in kept if w not in SPECIAL_TOKENS)])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str, max_len: int) -> list[int]:
        """``[<bos>, w1, ..., <eos>]``; words past ``max_len - 2`` are dropped (eos is kept).

        Unknown words map to ``<unk>``. No padding (see :meth:`encode_batch`).
        """
        if not isinstance(max_len, int) or max_len < 2:
            raise LeakprobeError(f"max_len must be an integer >= 2, got {max_len!r}")
        ids = [self.stoi.get(w, UNK) for w in words(text)][: max_len - 2]
        return [BOS, *ids, EOS]

    def encode_batch(self, texts: Sequence[str], max_len: int) -> torch.Tensor:
        """(N, max_len) int64 tensor of :meth:`encode` results padded with ``<pad>`` (0)."""
        out = torch.full((len(texts), max_len), PAD, dtype=torch.long)
        for i, text in enumerate(texts):
            ids = self.encode(text, max_len)
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def decode(self, ids: Sequence[int] | torch.Tensor, keep_unk: bool = False) -> str:
        """Words of ``ids`` up to the first ``<eos>``, specials skipped, joined by spaces.

        Args:
            ids: token ids (a list or a 1-D tensor).
            keep_unk: write ``<unk>`` for unknown-word tokens instead of skipping them.
        """
        if isinstance(ids, torch.Tensor):
            ids = ids.reshape(-1).tolist()
        out = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if not 0 <= i < len(self.itos):
                raise LeakprobeError(f"token id {i} outside the vocabulary of {len(self)}")
            if i >= len(SPECIAL_TOKENS) or (i == UNK and keep_unk):
                out.append(self.itos[i])
        return " ".join(out)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description: ``{"kind": "word", "vocab": [...]}``."""
        return {"kind": "word", "lowercase": True, "vocab": list(self.itos)}

    @classmethod
    def from_dict(cls, d: Any) -> Tokenizer:
        """Rebuild a tokenizer saved with :meth:`to_dict`."""
        if (
            not isinstance(d, dict)
            or d.get("kind") != "word"
            or not isinstance(d.get("vocab"), list)
            or not all(isinstance(w, str) for w in d["vocab"])
        ):
            raise LeakprobeError(
                "not a saved word tokenizer: need {'kind': 'word', 'vocab': [...]}"
            )
        return cls(d["vocab"])


def _relative_name(image: Path, json_path: str | Path) -> str:
    """``image`` relative to the JSON's folder (POSIX separators, as COCO files use)."""
    return Path(os.path.relpath(image.resolve(), Path(json_path).resolve().parent)).as_posix()
