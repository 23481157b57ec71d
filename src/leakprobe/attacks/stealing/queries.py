"""The attacker's paid queries: views of its images and the target's embeddings of them.

Each query is paid once: views and embeddings are cached on disk (safetensors, written
atomically after every chunk), so an interrupted steal resumes where it stopped and a budget
sweep reuses the prefix of one query stream. :func:`cached_embeddings` does the same for the
evaluation queries (the target's embeddings of the labelled probe images).

Views are quantised to 8 bits before they are sent (each pixel moves by at most 1/510) and
kept as uint8: the target embeds, and the surrogate later trains on, exactly the same floats,
the cache takes a quarter of float32's room (500 views at 224 px: 75 MB instead of 301 MB),
and over HTTP the views travel as uint8 losslessly (:mod:`leakprobe.serving.wire`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from leakprobe.augment import SSLAugmentation
from leakprobe.data.stream import Images, image_batches, take
from leakprobe.errors import LeakprobeError
from leakprobe.io import atomic_write
from leakprobe.progress import log, query_task, source_of, task
from leakprobe.serving.wire import dequantise, quantise
from leakprobe.targets.encoder import embed_images, resize

FINGERPRINT_BATCH = 256
#: ``format`` in a query cache's metadata; files without it hold float32 ``views`` (old).
CACHE_FORMAT = "uint8-views-1"


class QuantisedViews:
    """uint8 views (n, v, 3, S, S), read as float32 in [0, 1] when indexed.

    ``views[idx, pick]`` gives the floats ``k / 255`` the target embedded, so a stealing
    method indexes it as it would a float tensor; :attr:`levels` is the stored uint8 tensor.
    """

    def __init__(self, levels: torch.Tensor) -> None:
        if levels.dtype != torch.uint8:
            raise LeakprobeError(f"quantised views must be uint8, got {levels.dtype}")
        self.levels = levels

    @property
    def shape(self) -> torch.Size:
        return self.levels.shape

    def __len__(self) -> int:
        return self.levels.shape[0]

    def __getitem__(self, key) -> torch.Tensor:
        return dequantise(self.levels[key])

    def float(self) -> torch.Tensor:
        """All views as float32 (n, v, 3, S, S): four times the memory of :attr:`levels`."""
        return dequantise(self.levels)


class QueryCache:
    """Views (n, v, 3, S, S) of the attacker's images and the target's embeddings (n, v, D).

    With ``views == 1`` the single view is the clean image (what the conventional attack
    queries); with more, every view is a random SimCLR augmentation (Cont-Steal). Views are
    quantised to uint8 before the target sees them (<= 1/510 per pixel) and stored so
    (:class:`QuantisedViews`); ``views[idx, pick]`` reads them back as the exact floats sent.
    A cache file of the float32 format leakprobe wrote before is converted on load.

    Args:
        images: the attacker's query images (N, 3, H, W) in [0, 1], in query order (a tensor
            or a :class:`~leakprobe.data.stream.LazyImages`: only the images a budget buys
            are read, chunk by chunk; the paid views are kept, so memory grows with the budget,
            not with the query set).
        views: queried views per image (a query is one view embedded).
        size: side the views are made at (the target's input size).
        seed: seeds the views.
        path: cache file (None: memory only).
        augmentation: makes the views, ``(images, generator, n) -> (B, n, C, S, S)`` (None:
            the clean image for one view, SimCLR's augmentation for more).
        recipe: the name of the views (``clean``, ``simclr``, ...), recorded in the file: a
            cache of another recipe is refused rather than reused.

    A target with an ``answer_state()`` method (a
    :class:`~leakprobe.targets.defended.DefendedEncoder`: its noise generator and B4B
    coverage) has that state saved with every chunk, in the file's metadata, atomically
    with the answers it produced; :attr:`target_state` reads it back on a resume.
    """

    def __init__(self, images: Images, views: int, size: int, seed: int = 0,
                 path: str | Path | None = None, *,
                 augmentation: Callable[[torch.Tensor, torch.Generator, int], torch.Tensor]
                 | None = None,
                 recipe: str | None = None) -> None:
        if views < 1:
            raise LeakprobeError(f"views per image must be >= 1, got {views}")
        self.images = images
        self.views_per_image = views
        self.size = size
        self.seed = seed
        self.path = Path(path) if path else None
        self.augmentation = augmentation
        self.recipe = recipe or ("clean" if views == 1 and augmentation is None else "simclr")
        if self.recipe == "clean" and views != 1:
            raise LeakprobeError(f"the clean image is one view, not {views}")
        self.views = QuantisedViews(torch.empty(0, views, 3, size, size, dtype=torch.uint8))
        self.embeddings = torch.empty(0)
        #: the queried target's ``answer_state()`` after the last saved chunk (or None)
        self.target_state: dict | None = None
        if self.path is not None and self.path.exists():
            self._load()

    @property
    def n_done(self) -> int:
        return self.views.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes the paid views and embeddings take (in memory and, about, on disk)."""
        return (self.views.levels.numel() * self.views.levels.element_size()
                + self.embeddings.numel() * self.embeddings.element_size())

    @property
    def queries(self) -> int:
        return self.n_done * self.views_per_image

    def _load(self) -> None:
        assert self.path is not None
        try:
            state = load_file(str(self.path))
            with safe_open(str(self.path), framework="pt") as f:
                meta = dict(f.metadata() or {})
        except Exception as e:  # torn or foreign: say so in one line, never guess
            raise LeakprobeError(f"{self.path}: not a readable query cache "
                                 f"({type(e).__name__}); remove it to query again") from e
        if "views_u8" in state:
            levels = state["views_u8"]
        elif "views" in state and state["views"].dtype.is_floating_point:
            # the float32 format of earlier versions: the same views, 8-bit from now on
            levels = quantise(state["views"])
            log(f"{self.path}: query cache of the float32 format converted to uint8 views "
                "(each pixel moves by at most 1/510)")
        else:
            raise LeakprobeError(f"{self.path}: not a leakprobe query cache (no views); "
                                 "remove it to query again")
        if "embeddings" not in state or "seed" not in state or \
                levels.dtype != torch.uint8 or len(state["embeddings"]) != len(levels):
            raise LeakprobeError(f"{self.path}: a damaged query cache (views and embeddings "
                                 "disagree); remove it to query again")
        # files written before recipes were recorded hold the clean image or SimCLR views
        recipe = meta.get("recipe") or ("clean" if levels.shape[1] == 1 else "simclr")
        if levels.shape[1:] != self.views.shape[1:] or int(state["seed"]) != self.seed \
                or recipe != self.recipe:
            raise LeakprobeError(f"{self.path}: a query cache of other settings ({recipe} "
                                 f"views); remove it")
        self.views, self.embeddings = QuantisedViews(levels), state["embeddings"]
        if meta.get("target_state"):
            try:
                self.target_state = json.loads(meta["target_state"])
            except ValueError as e:
                raise LeakprobeError(f"{self.path}: a damaged query cache (its target "
                                     "state); remove it to query again") from e
        if "views" in state:
            self._save()  # rewritten in the compact format at once
        log(f"resuming: {self.queries} queries already paid ({self.path})")

    def _save(self) -> None:
        if self.path is None:
            return
        state = {"views_u8": self.views.levels.contiguous(),
                 "embeddings": self.embeddings.contiguous(), "seed": torch.tensor(self.seed)}
        meta = {"format": CACHE_FORMAT, "recipe": self.recipe}
        if self.target_state is not None:
            meta["target_state"] = json.dumps(self.target_state, separators=(",", ":"))
        atomic_write(self.path, _safetensors_writer(state, meta))

    def _make_views(self, start: int, stop: int) -> torch.Tensor:
        """The uint8 views (b, v, 3, S, S) of images ``start:stop``: the same on a resume."""
        chunk = self.batch(torch.arange(start, stop))
        if self.recipe == "clean":
            return quantise(chunk[:, None])
        # one generator per chunk start: resumed runs draw exactly the same views
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + start)
        make = self.augmentation or SSLAugmentation(size=self.size)
        return quantise(make(chunk, g, self.views_per_image))

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """Query images ``idx`` at the views' size (read from disk for a streamed set)."""
        return resize(take(self.images, idx), self.size)

    def fill(self, target, n_images: int, chunk: int = 256) -> None:
        """Query the target until ``n_images`` images (all their views) are embedded."""
        if n_images > len(self.images):
            raise LeakprobeError(
                f"the budget needs {n_images} query images at {self.views_per_image} views "
                f"each, only {len(self.images)} given: add query images or raise --views")
        starts = range(self.n_done, n_images, chunk)
        total = (n_images - self.n_done) * self.views_per_image
        with task("stealing: querying the target", max(total, 0), "queries",
                  source=source_of(target)):
            for start in starts:
                self._fill_chunk(target, start, min(start + chunk, n_images))

    def _fill_chunk(self, target, start: int, stop: int) -> None:
        """Embed the views of images ``start:stop`` and save the cache."""
        levels = self._make_views(start, stop)
        b, v = levels.shape[:2]
        emb = target.embed(dequantise(levels.reshape(b * v, *levels.shape[2:])))
        emb = emb.float().cpu().reshape(b, v, -1)
        self.views = QuantisedViews(torch.cat([self.views.levels, levels]))
        self.embeddings = emb if self.embeddings.numel() == 0 else \
            torch.cat([self.embeddings, emb])
        answer_state = getattr(target, "answer_state", None)
        if callable(answer_state):
            self.target_state = answer_state()
        self._save()


def _safetensors_writer(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> Callable[[Path], None]:
    """What :func:`atomic_write` calls to save ``tensors`` and ``metadata`` as safetensors."""
    return lambda p: save_file(tensors, str(p), metadata)


def fingerprint(images: Images, target) -> str:
    """What an embedding depends on: the exact images and the target's identity.

    A streamed set is hashed batch by batch (the same digest as its in-memory tensor).
    """
    h = hashlib.sha256()
    h.update(repr((tuple(images.shape), str(torch.float32), getattr(target, "name", None),
                   getattr(target, "embed_dim", None))).encode())
    for x in image_batches(images, FINGERPRINT_BATCH):
        h.update(x.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cached_embeddings(
    target, sets: dict[str, Images], path: str | Path | None = None
) -> tuple[dict[str, torch.Tensor], int]:
    """The target's embeddings of named image sets, each query paid once across runs.

    Every set is stored in ``path`` (safetensors, written atomically after each set) with a
    fingerprint of its images and of the target (its ``name``, e.g. the model path or URL the
    CLI loaded, and embedding size); a rerun with the same images and target reads them back
    without querying. A set whose images or target changed is embedded anew.

    Args:
        target: the queried encoder (``embed`` and, ideally, ``name`` / ``embed_dim``).
        sets: name -> images (N, 3, H, W), e.g. ``{"probe_train": ..., "probe_test": ...}``.
        path: cache file (None: no cache, every set is queried).
    Returns:
        ``(embeddings, queries)``: name -> embeddings (N, D), and the images sent to the
        target by this call (0 when everything came from the cache).
    """
    path = Path(path) if path else None
    stored: dict[str, torch.Tensor] = {}
    meta: dict[str, str] = {}
    if path is not None and path.exists():
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
            stored = load_file(str(path))
        except Exception as e:  # a torn or foreign file: pay the queries again
            log(f"ignoring unreadable embedding cache {path}: {e}")
            stored, meta = {}, {}
    out: dict[str, torch.Tensor] = {}
    paid = 0
    for name, images in sets.items():
        key = fingerprint(images, target)
        if name in stored and meta.get(name) == key and len(stored[name]) == len(images):
            out[name] = stored[name]
            continue
        if name in stored:
            log(f"{path}: the {name} images or the target changed; embedding them again")
        with query_task(f"stealing: querying the {name} images", len(images),
                        source_of(target)):
            out[name] = embed_images(target, images).float().cpu()
        paid += len(images)
        stored[name], meta[name] = out[name], key
        if path is not None:
            state = {k: v.contiguous() for k, v in stored.items()}
            atomic_write(path, _safetensors_writer(state, dict(meta)))
    if path is not None and paid < sum(len(v) for v in sets.values()):
        log(f"resuming: {sum(len(v) for v in sets.values()) - paid} evaluation queries "
            f"already paid ({path})")
    return out, paid
