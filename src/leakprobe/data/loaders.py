"""Loaders that turn files on disk (or built-in sets) into :class:`ImageSet` objects.

Every loader returns float32 images in [0, 1] of one square size, and every image of one
source goes through exactly the same preprocessing, so that members and non-members can never
be told apart by how they were loaded.

Accepted data specs (:func:`load_dataset`)::

    synthetic:N[:SEED]            procedural images (leakprobe.data.synthetic)
    digits                        scikit-learn's 8x8 digits, upsampled
    fashion-mnist[:train|test|all]  Debian's dataset-fashion-mnist package
    idx:DIR[:train|test|all]      MNIST-format IDX files in DIR
    cifar10:DIR[:train|test|all]  CIFAR-10 python batches (folder or .tar.gz)
    cifar100:DIR[:train|test|all] CIFAR-100 python archive (folder or .tar.gz)
    PATH                          a folder of images (flat, or one subfolder per class)
"""

from __future__ import annotations

import gzip
import io
import pickle
import re
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from leakprobe.data.images import ImageSet
from leakprobe.data.stream import LazyImages
from leakprobe.errors import LeakprobeError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})
SPLITS = ("train", "test", "all")

ACCEPTED_SPECS = (
    "synthetic:N[:SEED], digits, fashion-mnist[:train|test|all], idx:DIR[:train|test|all], "
    "cifar10:DIR[:split], cifar100:DIR[:split], or a folder of images"
)

FASHION_MNIST_DIRS = (
    Path("/usr/share/dataset-fashion-mnist"),
    Path("/usr/share/fashion-mnist"),
    Path("/usr/share/datasets/fashion-mnist"),
)

# The only globals a CIFAR python batch may reference: what numpy needs to rebuild an array.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}

_MAX_ARCHIVE_MEMBER = 1 << 30  # 1 GiB: far above any CIFAR batch


# ---------------------------------------------------------------------------------------------
# image folders


def _is_image(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES


def images_in(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if _is_image(p)), key=lambda p: p.name)


def check_image_size(image_size: int) -> int:
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 1:
        raise LeakprobeError(f"image_size must be a positive integer, got {image_size!r}")
    return image_size


def load_image_folder(path: str | Path, image_size: int, *, stream: bool = True) -> ImageSet:
    """Load every image of a folder, resized to ``image_size`` x ``image_size``.

    A folder holding image files directly is *flat*: ids are file names and there are no
    labels (subfolders are then ignored). A folder holding no image files directly but
    immediate subfolders with images is a *class folder*: labels are the index of the
    subfolder name among the sorted subfolder names, ids are ``"sub/file.png"``.
    Every image is converted to 8-bit RGB and resized with PIL bicubic (antialiased), the
    same way for every file. Order is sorted and deterministic.

    Args:
        path: the folder.
        image_size: side of the square output images.
        stream: True (default): only the file list is read now, and the images are decoded
            batch by batch when a step reads them (in worker processes; an unreadable file
            is found by the first full pass, e.g. the audit's overlap check, before any
            query). False: every image is decoded now into one float tensor.
    Returns:
        An ImageSet whose ``source`` is ``str(path)``.
    Raises:
        LeakprobeError: folder missing, no images, or (``stream=False``) an unreadable or
            truncated image.
    """
    check_image_size(image_size)
    root = Path(path)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise LeakprobeError(f"image folder {root} {what}")
    files = images_in(root)
    labels: list[int] | None = None
    if files:
        ids = [p.name for p in files]
    else:
        subdirs = sorted(
            (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.name,
        )
        ids, labels = [], []
        for label, sub in enumerate(subdirs):
            sub_files = images_in(sub)
            files.extend(sub_files)
            ids.extend(f"{sub.name}/{p.name}" for p in sub_files)
            labels.extend([label] * len(sub_files))
    if not files:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise LeakprobeError(
            f"no images ({suffixes}) found in {root} or in its immediate subfolders"
        )
    label_t = None if labels is None else torch.tensor(labels, dtype=torch.long)
    lazy = LazyImages.from_files(files, image_size)
    pixels = lazy if stream else lazy.load(f"loading {root}")
    return ImageSet(pixels, ids, label_t, source=str(path))


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def remove_images(existing: list[Path], root: Path, *, overwrite: bool) -> None:
    """Delete the images a folder already holds before it is written, when allowed."""
    if existing and not overwrite:
        raise LeakprobeError(
            f"{root} already holds {len(existing)} images (e.g. {existing[0].name}); "
            "choose an empty folder or pass overwrite=True"
        )
    for f in existing:
        f.unlink()


def safe_name(image_id: str) -> str:
    stem = image_id
    low = stem.lower()
    for suffix in IMAGE_SUFFIXES:
        if low.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    stem = _UNSAFE.sub("_", stem).lstrip(".") or "image"
    return stem[:200] + ".png"


def save_image_folder(images: ImageSet, path: str | Path, overwrite: bool = False) -> Path:
    """Write an ImageSet as 8-bit PNGs that :func:`load_image_folder` reads back exactly.

    File names are the sanitised ids (characters outside ``[A-Za-z0-9._-]`` become ``_``;
    a clash gets a ``-<position>`` suffix). With labels, each image goes into a class folder
    ``class_<label:03d>``.

    Args:
        images: the set to write.
        path: destination folder (created when missing).
        overwrite: when False, a destination that already holds images is an error; when
            True, the images the loader would read there are deleted first.
    Returns:
        The destination folder.
    """
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise LeakprobeError(f"cannot write images to {root}: it is a file")
    root.mkdir(parents=True, exist_ok=True)
    existing = images_in(root) + [
        f
        for d in root.iterdir()
        if d.is_dir() and not d.name.startswith(".")
        for f in images_in(d)
    ]
    remove_images(existing, root, overwrite=overwrite)
    pixels_uint8 = (images.images.clamp(0, 1) * 255).round().to(torch.uint8)
    pixels = pixels_uint8.permute(0, 2, 3, 1).contiguous().numpy()
    labels = None if images.labels is None else images.labels.tolist()
    used: set[Path] = set()
    for i, image_id in enumerate(images.ids):
        folder = root if labels is None else root / f"class_{int(labels[i]):03d}"
        target = folder / safe_name(image_id)
        if target in used:
            target = target.with_name(f"{target.stem}-{i}.png")
        used.add(target)
        folder.mkdir(exist_ok=True)
        Image.fromarray(pixels[i], mode="RGB").save(target, format="PNG")
    return root


# ---------------------------------------------------------------------------------------------
# IDX (MNIST format)

_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801


def _read_maybe_gz(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:
        raise LeakprobeError(f"{path}: cannot read ({exc})") from exc


def _parse_idx(path: Path, expected_magic: int) -> np.ndarray:
    raw = _read_maybe_gz(path)
    if len(raw) < 4:
        raise LeakprobeError(f"{path}: too short to be an IDX file")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise LeakprobeError(
            f"{path}: bad IDX magic number 0x{magic:08x} (expected 0x{expected_magic:08x})"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise LeakprobeError(f"{path}: IDX header truncated")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise LeakprobeError(
            f"{path}: IDX data has {len(raw) - header} bytes, header {dims} needs {expected}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(folder: Path, prefix: str, kind: str) -> Path:
    """``train-images-idx3-ubyte[.gz]`` (also the ``train-images.idx3-ubyte`` spelling)."""
    ndim = 3 if kind == "images" else 1
    names = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
    for name in names:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise LeakprobeError(f"{folder}: no {names[0]} or {names[0]}.gz found")


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise LeakprobeError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def load_idx(dir: str | Path, image_size: int, split: str = "train") -> ImageSet:
    """Load MNIST-format IDX files (MNIST, Fashion-MNIST, ...).

    Args:
        dir: folder with ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
            ``t10k-images-idx3-ubyte[.gz]`` and ``t10k-labels-idx1-ubyte[.gz]``.
        image_size: output side; gray images are resized (when read, batch by batch) with bilinear
            antialiased interpolation and repeated to 3 channels.
        split: ``"train"``, ``"test"`` or ``"all"`` (train then test).
    Returns:
        An ImageSet with labels and ids ``"idx:<split>:<index>"``.
    """
    check_image_size(image_size)
    _check_split(split)
    folder = Path(dir)
    if not folder.is_dir():
        raise LeakprobeError(f"IDX folder {folder} does not exist")
    parts = ["train", "test"] if split == "all" else [split]
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    ids: list[str] = []
    for part in parts:
        prefix = "train" if part == "train" else "t10k"
        img_path = _find_idx(folder, prefix, "images")
        lab_path = _find_idx(folder, prefix, "labels")
        x = _parse_idx(img_path, _IDX_IMAGES_MAGIC)
        y = _parse_idx(lab_path, _IDX_LABELS_MAGIC)
        if x.shape[0] != y.shape[0]:
            raise LeakprobeError(
                f"{img_path} has {x.shape[0]} images but {lab_path} has {y.shape[0]} labels"
            )
        xs.append(x)
        ys.append(y)
        ids.extend(f"idx:{part}:{i}" for i in range(x.shape[0]))
    if len({x.shape[1:] for x in xs}) != 1:
        raise LeakprobeError(f"{folder}: train and test images have different sizes")
    gray = torch.from_numpy(np.concatenate(xs)).unsqueeze(1)  # uint8, resized when read
    images = LazyImages.from_array(gray, image_size, scale=255.0)
    labels = torch.from_numpy(np.concatenate(ys).astype(np.int64))
    return ImageSet(images, ids, labels, source=f"idx:{folder}:{split}")


def find_fashion_mnist(search_root: str | Path = "/usr/share") -> Path | None:
    """Locate Fashion-MNIST IDX files as installed by Debian's ``dataset-fashion-mnist``.

    Checks the package's usual folders first, then a bounded search (two levels deep)
    under ``search_root`` for ``*train-images-idx3-ubyte*`` whose path mentions "fashion".

    Args:
        search_root: where to look; ``/usr/share`` for the system packages.
    Returns:
        The folder holding the files, or None when not found.
    """
    root = Path(search_root)
    known = [root / d.relative_to("/usr/share") for d in FASHION_MNIST_DIRS]
    for folder in known:
        if folder.is_dir() and any(folder.glob("*train-images*idx3-ubyte*")):
            return folder
    patterns = ("*/*train-images*idx3-ubyte*", "*/*/*train-images*idx3-ubyte*")
    for pattern in patterns:
        try:
            hits = sorted(root.glob(pattern))
        except OSError:
            continue
        for hit in hits:
            if "fashion" in str(hit.relative_to(root)).lower():
                return hit.parent
    return None


# ---------------------------------------------------------------------------------------------
# CIFAR python archives


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, bytes, ints and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        if name == "ndarray":
            return np.ndarray
        if name == "dtype":
            return np.dtype
        import importlib

        try:
            return importlib.import_module("numpy._core.multiarray")._reconstruct
        except (ImportError, AttributeError):  # numpy < 2
            return importlib.import_module("numpy.core.multiarray")._reconstruct


def _unpickle_batch(raw: bytes, where: str) -> dict[str, Any]:
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise LeakprobeError(f"{where}: not a plain CIFAR batch, {exc}") from exc
    except Exception as exc:  # malformed pickles raise many types
        raise LeakprobeError(f"{where}: cannot read CIFAR batch ({exc})") from exc
    if not isinstance(obj, dict):
        raise LeakprobeError(f"{where}: CIFAR batch is not a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _batch_arrays(batch: dict[str, Any], where: str, label_key: str) -> tuple[np.ndarray, ...]:
    data = batch.get("data")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072:
        raise LeakprobeError(f"{where}: 'data' must be a (N, 3072) array")
    if label_key not in batch:
        raise LeakprobeError(f"{where}: missing '{label_key}'")
    labels = np.asarray(batch[label_key], dtype=np.int64).reshape(-1)
    if labels.shape[0] != data.shape[0]:
        raise LeakprobeError(f"{where}: {data.shape[0]} images but {labels.shape[0]} labels")
    return data.astype(np.uint8, copy=False), labels


def _cifar_files(kind: str, part: str) -> list[str]:
    if kind == "cifar10":
        return [f"data_batch_{i}" for i in range(1, 6)] if part == "train" else ["test_batch"]
    return [part]


def _read_cifar_members(path: Path, names: set[str]) -> tuple[dict[str, bytes], str]:
    """name -> raw bytes for the batch files found in a folder or a .tar.gz (in memory)."""
    found: dict[str, bytes] = {}
    if path.is_dir():
        for sub in ("cifar-10-batches-py", "cifar-100-python", "."):
            folder = path / sub
            for name in names - set(found):
                if (folder / name).is_file():
                    found[name] = (folder / name).read_bytes()
        return found, str(path)
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if not member.isfile() or base not in names or base in found:
                    continue
                if member.size > _MAX_ARCHIVE_MEMBER:
                    raise LeakprobeError(f"{path}: member {member.name} is implausibly large")
                f = tar.extractfile(member)
                if f is not None:
                    found[base] = f.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise LeakprobeError(f"{path}: cannot read archive ({exc})") from exc
    return found, str(path)


def load_cifar(
    dir: str | Path, image_size: int, split: str = "train", kind: str | None = None
) -> ImageSet:
    """Load a CIFAR-10 or CIFAR-100 python archive without running arbitrary pickle code.

    The batches are read with a restricted unpickler that can only rebuild containers,
    bytes, numbers and numpy arrays: any other global (``os.system`` ...) is refused.

    Args:
        dir: a folder holding the batches (directly, or in ``cifar-10-batches-py/`` /
            ``cifar-100-python/``), or the downloaded ``.tar.gz`` (read in memory).
        image_size: output side (32 keeps the originals; otherwise, when read, bilinear
            antialiased interpolation).
        split: ``"train"``, ``"test"`` or ``"all"``.
        kind: ``"cifar10"`` or ``"cifar100"``; detected from the file names when None.
    Returns:
        An ImageSet with labels (CIFAR-100: fine labels) and ids ``"<kind>:<split>:<i>"``.
    """
    check_image_size(image_size)
    _check_split(split)
    path = Path(dir)
    if not path.exists():
        raise LeakprobeError(f"CIFAR data {path} does not exist")
    if kind not in (None, "cifar10", "cifar100"):
        raise LeakprobeError(f"CIFAR kind must be cifar10 or cifar100, got {kind!r}")
    parts = ["train", "test"] if split == "all" else [split]
    kinds = [kind] if kind else ["cifar10", "cifar100"]
    names = {name for k in kinds for part in parts for name in _cifar_files(k, part)}
    raw, where = _read_cifar_members(path, names)  # one pass, also over a .tar.gz
    if kind is None:
        if any(name.startswith(("data_batch_", "test_batch")) for name in raw):
            kind = "cifar10"
        elif raw:
            kind = "cifar100"
        else:
            raise LeakprobeError(f"{where}: no CIFAR-10 or CIFAR-100 python batches found")
    label_key = "labels" if kind == "cifar10" else "fine_labels"
    wanted = [name for part in parts for name in _cifar_files(kind, part)]
    missing = [name for name in wanted if name not in raw]
    if missing:
        raise LeakprobeError(f"{where}: missing {kind} batch files: {', '.join(missing)}")
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    ids: list[str] = []
    for part in parts:
        count = 0
        for name in _cifar_files(kind, part):
            label = f"{where}:{name}"
            x, y = _batch_arrays(_unpickle_batch(raw[name], label), label, label_key)
            xs.append(x)
            ys.append(y)
            count += x.shape[0]
        ids.extend(f"{kind}:{part}:{i}" for i in range(count))
    pixels = torch.from_numpy(np.concatenate(xs)).view(-1, 3, 32, 32)  # uint8
    images = LazyImages.from_array(pixels, image_size, scale=255.0)
    labels = torch.from_numpy(np.concatenate(ys))
    return ImageSet(images, ids, labels, source=f"{kind}:{dir}:{split}")


# ---------------------------------------------------------------------------------------------
# built-in sets and the dispatcher


def load_digits_set(image_size: int = 32) -> ImageSet:
    """scikit-learn's digits (1797 images, 8x8, values 0..16) as an RGB ImageSet.

    Args:
        image_size: output side; upsampled with bilinear interpolation.
    Returns:
        An ImageSet with labels 0..9 and ids ``"digits:<i>"``.
    """
    from sklearn.datasets import load_digits

    check_image_size(image_size)
    bunch = load_digits()
    x = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0).unsqueeze(1)
    images = LazyImages.from_array(x, image_size)
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    ids = [f"digits:{i}" for i in range(images.shape[0])]
    return ImageSet(images, ids, labels, source="digits")


def _split_suffix(rest: str, spec: str) -> tuple[str, str]:
    """``"DIR:test"`` -> (``"DIR"``, ``"test"``); no known suffix -> split ``"train"``."""
    head, sep, tail = rest.rpartition(":")
    if sep and tail in SPLITS:
        rest = head
    else:
        tail = "train"
    if not rest:
        raise LeakprobeError(f"data spec {spec!r} names no folder")
    return rest, tail


def parse_synthetic_spec(spec: str, seed: int = 0) -> tuple[int, int]:
    """``synthetic:N[:SEED]`` -> (N, SEED); ``seed`` when the spec names none.

    Raises:
        LeakprobeError: not of that form, or N < 1.
    """
    name, _, rest = str(spec).partition(":")
    parts = rest.split(":")
    try:
        if name != "synthetic" or len(parts) > 2:
            raise ValueError
        n = int(parts[0])
        if len(parts) == 2:
            seed = int(parts[1])
    except ValueError:
        raise LeakprobeError(
            f"bad data spec {spec!r}: expected synthetic:N or synthetic:N:SEED"
        ) from None
    if n < 1:
        raise LeakprobeError(f"bad data spec {spec!r}: N must be positive")
    return n, seed


def load_dataset(spec: str, image_size: int = 32, seed: int = 0) -> ImageSet:
    """Load a data set from a spec string (see the module docstring for the forms).

    Args:
        spec: ``synthetic:N[:SEED]``, ``digits``, ``fashion-mnist[:split]``,
            ``idx:DIR[:split]``, ``cifar10:DIR[:split]``, ``cifar100:DIR[:split]`` or the
            path of an image folder. Splits are ``train`` (default), ``test`` or ``all``.
        image_size: side of the square output images.
        seed: generator seed for ``synthetic`` (a seed in the spec takes precedence).
    Returns:
        The ImageSet, with ``source`` set to the spec (for ``synthetic`` with a non-zero
        seed, ``synthetic:N:SEED`` so that the spec alone reproduces the set).
    """
    check_image_size(image_size)
    spec = str(spec)
    name, _, rest = spec.partition(":")
    if name == "synthetic" and rest:
        n, seed = parse_synthetic_spec(spec, seed)
        from leakprobe.data.synthetic import make_synthetic

        data = make_synthetic(n, image_size, seed)
        data.source = f"synthetic:{n}" if seed == 0 else f"synthetic:{n}:{seed}"
        return data
    if spec == "digits":
        return load_digits_set(image_size)
    if name == "fashion-mnist" and (not rest or rest in SPLITS):
        folder = find_fashion_mnist()
        if folder is None:
            raise LeakprobeError(
                "Fashion-MNIST not found: run `apt-get install dataset-fashion-mnist`, "
                "or download the IDX files and use idx:DIR"
            )
        data = load_idx(folder, image_size, rest or "train")
        data.source = spec
        return data
    if name == "idx" and rest:
        idx_dir, split = _split_suffix(rest, spec)
        data = load_idx(idx_dir, image_size, split)
        data.source = spec
        return data
    if name in ("cifar10", "cifar100") and rest:
        cifar_dir, split = _split_suffix(rest, spec)
        data = load_cifar(cifar_dir, image_size, split, kind=name)
        data.source = spec
        return data
    path = Path(spec)
    if path.suffix.lower() == ".json" and path.is_file():
        raise LeakprobeError(
            f"{spec} is a split manifest, not a data set: load one side of it with "
            "leakprobe.data.splits.load_split_side(path, 'members' or 'nonmembers')"
        )
    if path.is_dir():
        data = load_image_folder(path, image_size)
        data.source = spec
        return data
    if path.suffix.lower() in (".gz", ".tgz") and path.is_file():
        raise LeakprobeError(f"{spec}: for a CIFAR archive use cifar10:{spec} or cifar100:{spec}")
    raise LeakprobeError(
        f"unknown data spec or missing folder {spec!r}; accepted: {ACCEPTED_SPECS}"
    )
