"""Member / non-member splits: disjoint by content, seeded, and saved as JSON manifests.

A manifest records the data spec, the image size and, per side, the ids and content hashes
(SHA-256 of the 8-bit image, see :meth:`ImageSet.content_hashes`) of the chosen images::

    {"format": "leakprobe-split/1", "data": "synthetic:2000", "image_size": 32, "seed": 0,
     "members": [{"id": "synthetic:17", "sha256": "..."}, ...], "nonmembers": [...]}

Loading a side re-loads the data from its spec and checks every hash, so a manifest can never
silently select different pictures than the ones it was made from.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from leakprobe.augment import resize
from leakprobe.data.images import ImageSet
from leakprobe.data.loaders import load_dataset, load_image_folder
from leakprobe.data.stream import LazyImages
from leakprobe.errors import LeakprobeError
from leakprobe.io import write_json

MANIFEST_FORMAT = "leakprobe-split/1"
SIDES = ("members", "nonmembers")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DIR_SPECS = ("idx", "cifar10", "cifar100")


@dataclass
class Split:
    """The two sides of a membership audit: images the model saw and images it did not."""

    members: ImageSet
    nonmembers: ImageSet


def shared_images(first: ImageSet, second: ImageSet) -> list[tuple[str, str]]:
    """(id in ``first``, id in ``second``) of every image of ``second`` also in ``first``.

    Images are compared by content hash, so a copy under another name is found too.
    """
    seen: dict[str, str] = {}
    for h, image_id in zip(first.content_hashes(), first.ids, strict=True):
        seen.setdefault(h, image_id)
    return [
        (seen[h], i)
        for h, i in zip(second.content_hashes(), second.ids, strict=True)
        if h in seen
    ]


def check_disjoint(members: ImageSet, nonmembers: ImageSet) -> None:
    """Raise when an image (by content hash) is on both sides.

    Args:
        members: the member images.
        nonmembers: the non-member images.
    Raises:
        LeakprobeError: naming how many images overlap and one example id pair.
    """
    overlap = shared_images(members, nonmembers)
    if overlap:
        m, n = overlap[0]
        raise LeakprobeError(
            f"members and non-members overlap: {len(overlap)} non-member images are identical "
            f"to member images (e.g. member {m!r} = non-member {n!r})"
        )


def check_shadow_disjoint(shadow: ImageSet, members: ImageSet, nonmembers: ImageSet,
                          what: str = "shadow") -> None:
    """Refuse attacker-owned data (shadow or reference data) that shares audited images.

    Args:
        shadow: the attacker's own images.
        members, nonmembers: the target's audited sets.
        what: what the attacker's data is for, in the message (``shadow``, ``reference``).
    Raises:
        LeakprobeError: naming the sets that overlap, how many images and one example, e.g.
            "the shadow data shares 12 images with the target's members (e.g. ...)".
    """
    found: list[str] = []
    example = ""
    for side, images in (("members", members), ("non-members", nonmembers)):
        overlap = shared_images(images, shadow)
        if overlap:
            found.append(f"{len(overlap)} images with the target's {side}" if not found
                         else f"{len(overlap)} with its {side}")
            if not example:
                a, s = overlap[0]
                example = f" (e.g. {side[:-1]} {a!r} = {what} {s!r})"
    if found:
        raise LeakprobeError(f"the {what} data shares {' and '.join(found)}{example}; "
                             f"{what} data must be the attacker's own images")


def _unique_positions(data: ImageSet) -> list[int]:
    seen: set[str] = set()
    keep = []
    for pos, h in enumerate(data.content_hashes()):
        if h not in seen:
            seen.add(h)
            keep.append(pos)
    return keep


def make_split(
    data: ImageSet, n_members: int, n_nonmembers: int | None = None, seed: int = 0
) -> Split:
    """Split a data set into disjoint members and non-members with a seeded permutation.

    Exact duplicates (same content hash) are dropped first (the first occurrence is kept),
    so the two sides are disjoint by content, not just by id. Each side keeps the random
    order of the permutation, so taking its first k images is a random sample.

    Args:
        data: the images to split.
        n_members: number of members (>= 1).
        n_nonmembers: number of non-members; None takes all remaining images.
        seed: seed of the permutation (same seed and data, same split).
    Returns:
        The Split.
    Raises:
        LeakprobeError: when the requested sizes do not fit the (deduplicated) data.
    """
    keep = _unique_positions(data)
    n = len(keep)
    dropped = len(data) - n
    note = f" ({dropped} exact duplicates removed)" if dropped else ""
    if n_members < 1:
        raise LeakprobeError(f"n_members must be at least 1, got {n_members}")
    if n_members >= n:
        raise LeakprobeError(
            f"n_members={n_members} leaves no non-members: the data has {n} distinct images{note}"
        )
    if n_nonmembers is None:
        n_nonmembers = n - n_members
    if n_nonmembers < 1:
        raise LeakprobeError(f"n_nonmembers must be at least 1, got {n_nonmembers}")
    if n_members + n_nonmembers > n:
        raise LeakprobeError(
            f"{n_members} members + {n_nonmembers} non-members need {n_members + n_nonmembers} "
            f"images, the data has {n} distinct images{note}"
        )
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen)
    positions = torch.tensor(keep, dtype=torch.long)[perm]
    members = data.subset(positions[:n_members])
    nonmembers = data.subset(positions[n_members : n_members + n_nonmembers])
    return Split(members, nonmembers)


def _portable_spec(spec: str) -> str:
    """Make the folder named by a spec absolute, so the manifest works from any directory."""
    name, sep, rest = spec.partition(":")
    if sep and name in _DIR_SPECS and rest:
        head, colon, tail = rest.rpartition(":")
        folder, suffix = (
            (head, colon + tail) if colon and tail in ("train", "test", "all") else (rest, "")
        )
        if Path(folder).exists():
            return f"{name}:{Path(folder).resolve()}{suffix}"
        return spec
    if spec == "digits" or name in ("synthetic", "fashion-mnist"):
        return spec  # named sets, never folders (load_dataset checks them first)
    if Path(spec).is_dir():
        return str(Path(spec).resolve())
    return spec


def save_manifest(split: Split, path: str | Path, seed: int) -> Path:
    """Save a split as a JSON manifest (atomically).

    Args:
        split: the split; both sides must carry the same non-empty ``source`` data spec.
        path: the JSON file to write.
        seed: the seed the split was made with (recorded for the report).
    Returns:
        The manifest path.
    """
    source = split.members.source
    if not source:
        raise LeakprobeError(
            "cannot save a split manifest: the images have no source data spec to reload from"
        )
    if split.nonmembers.source != source:
        raise LeakprobeError(
            f"members come from {source!r} but non-members from {split.nonmembers.source!r}; "
            "a manifest needs one data source"
        )
    if split.members.image_size != split.nonmembers.image_size:
        raise LeakprobeError("members and non-members have different image sizes")
    check_disjoint(split.members, split.nonmembers)
    ids = split.members.ids + split.nonmembers.ids
    if len(set(ids)) != len(ids):
        raise LeakprobeError("image ids are not unique across the split; a manifest needs them")
    manifest = {
        "format": MANIFEST_FORMAT,
        "data": _portable_spec(source),
        "image_size": split.members.image_size,
        "seed": int(seed),
        "members": [
            {"id": i, "sha256": h}
            for i, h in zip(split.members.ids, split.members.content_hashes(), strict=True)
        ],
        "nonmembers": [
            {"id": i, "sha256": h}
            for i, h in zip(split.nonmembers.ids, split.nonmembers.content_hashes(), strict=True)
        ],
    }
    return write_json(path, manifest)


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Read and validate a split manifest.

    Args:
        path: the JSON file.
    Returns:
        The manifest as a dict (keys ``format``, ``data``, ``image_size``, ``seed``,
        ``members``, ``nonmembers``).
    Raises:
        LeakprobeError: file missing, not JSON, wrong format, missing or malformed keys.
    """
    p = Path(path)
    if not p.is_file():
        raise LeakprobeError(f"split manifest {p} does not exist")
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LeakprobeError(f"{p}: not a readable JSON split manifest ({exc})") from exc
    if not isinstance(m, dict):
        raise LeakprobeError(f"{p}: a split manifest must be a JSON object")
    if m.get("format") != MANIFEST_FORMAT:
        raise LeakprobeError(f"{p}: format is {m.get('format')!r}, expected {MANIFEST_FORMAT!r}")
    missing = [k for k in ("data", "image_size", "seed", *SIDES) if k not in m]
    if missing:
        raise LeakprobeError(f"{p}: split manifest lacks key(s) {', '.join(missing)}")
    if not isinstance(m["data"], str) or not m["data"]:
        raise LeakprobeError(f"{p}: 'data' must be a non-empty data spec string")
    size = m["image_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise LeakprobeError(f"{p}: 'image_size' must be a positive integer, got {size!r}")
    if not isinstance(m["seed"], int) or isinstance(m["seed"], bool):
        raise LeakprobeError(f"{p}: 'seed' must be an integer, got {m['seed']!r}")
    for side in SIDES:
        entries = m[side]
        if not isinstance(entries, list) or not entries:
            raise LeakprobeError(f"{p}: '{side}' must be a non-empty list")
        for k, e in enumerate(entries):
            ok = (
                isinstance(e, dict)
                and isinstance(e.get("id"), str)
                and isinstance(e.get("sha256"), str)
                and _SHA256.match(e["sha256"]) is not None
            )
            if not ok:
                raise LeakprobeError(
                    f'{p}: {side}[{k}] must be {{"id": str, "sha256": 64 hex digits}}'
                )
    shared = {e["sha256"] for e in m["members"]} & {e["sha256"] for e in m["nonmembers"]}
    if shared:
        raise LeakprobeError(f"{p}: {len(shared)} images are listed as both member and non-member")
    return m


def load_split_side(
    manifest_path: str | Path, side: str, image_size: int | None = None
) -> ImageSet:
    """Re-load one side of a split from its manifest and verify every image's hash.

    The data is loaded from the manifest's ``data`` spec at the manifest's image size (hashes
    are only comparable at that size); a different ``image_size`` is then obtained by
    resizing the verified images (bilinear, antialiased; a streamed set when read).

    Args:
        manifest_path: the JSON manifest.
        side: ``"members"`` or ``"nonmembers"``.
        image_size: output side; None keeps the manifest's size.
    Returns:
        The images in manifest order (``source`` is the manifest's data spec).
    Raises:
        LeakprobeError: bad manifest, ids missing from the data, or any hash mismatch
            ("data changed since the split was made").
    """
    if side not in SIDES:
        raise LeakprobeError(f"side must be 'members' or 'nonmembers', got {side!r}")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise LeakprobeError(f"image_size must be a positive integer, got {image_size!r}")
    m = load_manifest(manifest_path)
    size = m["image_size"]
    data = load_dataset(m["data"], image_size=size)
    position: dict[str, int] = {}
    for pos, image_id in enumerate(data.ids):
        position.setdefault(image_id, pos)
    entries = m[side]
    absent = [e["id"] for e in entries if e["id"] not in position]
    if absent:
        raise LeakprobeError(
            f"{manifest_path}: data changed since the split was made: {len(absent)} {side} "
            f"ids are no longer in {m['data']!r} (e.g. {absent[0]!r})"
        )
    chosen = data.subset([position[e["id"]] for e in entries])
    bad = [
        e["id"] for e, h in zip(entries, chosen.content_hashes(), strict=True) if h != e["sha256"]
    ]
    if bad:
        raise LeakprobeError(
            f"{manifest_path}: data changed since the split was made: {len(bad)} of "
            f"{len(entries)} {side} images differ from their recorded hash (e.g. {bad[0]!r})"
        )
    if image_size is not None and image_size != size:
        pixels = chosen.pixels
        resized = (pixels.resized(image_size) if isinstance(pixels, LazyImages)
                   else resize(pixels, image_size).clamp_(0.0, 1.0))
        chosen = ImageSet(resized, chosen.ids, chosen.labels, chosen.extras, chosen.source)
    chosen.source = m["data"]
    return chosen


def load_images(spec_or_path: str | Path, image_size: int, side: str | None = None) -> ImageSet:
    """Load images for ``--members X`` / ``--nonmembers X`` style options.

    Args:
        spec_or_path: a split manifest (``.json``), an image folder, or a data spec.
        image_size: side of the square output images.
        side: which side of a manifest to load (required for a manifest).
    Returns:
        The ImageSet.
    """
    text = str(spec_or_path)
    path = Path(text)
    if path.suffix.lower() == ".json":
        if side is None:
            raise LeakprobeError(
                f"{text} is a split manifest: say which side to load (members or nonmembers)"
            )
        return load_split_side(path, side, image_size)
    if path.is_dir():
        return load_image_folder(path, image_size)
    return load_dataset(text, image_size=image_size)
