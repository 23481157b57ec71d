"""Image sets that do not have to fit in memory.

A :class:`LazyImages` is N images of one square size that are read only when a batch of them
is needed: files are decoded in parallel worker processes (PIL, in
:func:`leakprobe.data.decode.decode_files`) and travel as uint8 until they become the float
batch that enters a model; array data sets (IDX, CIFAR) keep their small native pixels and are
resized batch by batch. Memory then stays flat as the data grows: an audit holds a few batches
of pixels, never the set.

Every consumer reads images through :func:`image_batches` (in order) or :func:`take`
(arbitrary positions), which accept an in-memory ``(N, 3, S, S)`` tensor as well, so the same
code serves both and, with the same seed, gives the same numbers: a lazily read batch holds
exactly the floats the in-memory loader would have produced for those images.

Holding a whole lazy set in memory (``ImageSet.images`` on a step that does not stream) is
allowed up to a memory cap (:func:`leakprobe.data.limits.memory_cap`) and refused above it
with a one-line error, instead of the process being killed by the kernel.
"""

from __future__ import annotations

import atexit
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from leakprobe.augment import resize
from leakprobe.data.decode import decode_files
from leakprobe.data.limits import check_fits, data_workers
from leakprobe.errors import LeakprobeError
from leakprobe.progress import task

PREFETCH_BATCHES = 2  # decoded batches waiting ahead of the model
LOAD_BATCH = 256  # images decoded per step when a whole set is loaded (the progress steps)
_MIN_TASK = 8  # images per decoding task: below this a worker costs more than it saves
_MAX_TASK = 64


_pool: dict[int, Executor] = {}
_pool_lock = threading.Lock()


def _executor(workers: int) -> Executor:
    """The process pool of ``workers`` decoders, started once (spawn: no forked torch state)."""
    import multiprocessing

    with _pool_lock:
        if workers not in _pool:
            for old in _pool.values():
                old.shutdown(wait=False, cancel_futures=True)
            _pool.clear()
            _pool[workers] = ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        return _pool[workers]


def shutdown_workers() -> None:
    """Stop the decoding processes (they restart on the next read)."""
    with _pool_lock:
        for pool in _pool.values():
            pool.shutdown(wait=True, cancel_futures=True)
        _pool.clear()


atexit.register(shutdown_workers)


# ---------------------------------------------------------------------------------------------
# sources: where the pixels of a lazy set come from


@dataclass(frozen=True, eq=False)
class FileSource:
    """Image files, each decoded to ``image_size`` by :func:`leakprobe.data.decode.read_image`."""

    paths: tuple[str, ...]
    image_size: int

    def __len__(self) -> int:
        return len(self.paths)

    def decode(self, positions: np.ndarray) -> np.ndarray:
        """(n, 3, S, S) uint8 of the files at ``positions``, in parallel when worthwhile."""
        names = [self.paths[int(i)] for i in positions]
        workers = data_workers()
        if workers < 1 or len(names) < 2 * _MIN_TASK:
            return decode_files(names, self.image_size)
        per = min(_MAX_TASK, max(_MIN_TASK, -(-len(names) // workers)))
        chunks = [names[i:i + per] for i in range(0, len(names), per)]
        parts = list(_executor(workers).map(decode_files, chunks,
                                            [self.image_size] * len(chunks)))
        return np.concatenate(parts)

    def load(self, positions: np.ndarray) -> torch.Tensor:
        return to_float(self.decode(positions))


@dataclass(frozen=True, eq=False)
class ArraySource:
    """Pixels of an array data set at their native size, resized batch by batch.

    ``base`` is ``(M, C, h, w)`` (C = 1 gray or 3 RGB), uint8 or float; a batch is
    ``base[i].float() / scale``, resized to ``image_size`` (:func:`leakprobe.augment.resize`,
    clamped to [0, 1]) and, when gray, repeated to 3 channels: exactly what the in-memory
    loaders compute for the whole set.
    """

    base: torch.Tensor
    scale: float
    image_size: int

    def __len__(self) -> int:
        return int(self.base.shape[0])

    def load(self, positions: np.ndarray) -> torch.Tensor:
        x = self.base[torch.from_numpy(np.asarray(positions, dtype=np.int64))].float()
        if self.scale != 1.0:
            x.div_(self.scale)
        out = resize(x, self.image_size)
        if out is not x:
            out = out.clamp_(0.0, 1.0)
        return out.expand(-1, 3, -1, -1).contiguous() if out.shape[1] == 1 else out


@dataclass(frozen=True, eq=False)
class TensorSource:
    """Images already in memory (a lazy set concatenated with an in-memory one)."""

    images: torch.Tensor

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def load(self, positions: np.ndarray) -> torch.Tensor:
        return self.images[torch.from_numpy(np.asarray(positions, dtype=np.int64))]


Source = FileSource | ArraySource | TensorSource


def _malloc_trim() -> Callable[[], object]:
    """glibc's ``malloc_trim(0)``, or a no-op where there is none (macOS, musl)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
        trim.argtypes = [ctypes.c_size_t]
        return lambda: trim(0)
    except (OSError, AttributeError):
        return lambda: None


# Decoded batches arrive in the process pool's result thread, so glibc allocates them in that
# thread's arena, and the main thread frees them there; with glibc's dynamic mmap threshold
# the freed pages stay in the arena: on a 20k-image audit the RSS grew by ~100 KB per image.
# Trimming after every streamed batch hands them back (measured: flat RSS, ~1 ms per batch).
release_memory = _malloc_trim()


def to_float(pixels: np.ndarray) -> torch.Tensor:
    """(n, 3, S, S) uint8 -> float32 in [0, 1], as the in-memory folder loader computes it."""
    return torch.from_numpy(pixels).float().div_(255.0)


# ---------------------------------------------------------------------------------------------
# the lazy set


class LazyImages:
    """N images of one square size, read from their sources only when a batch is needed.

    Selecting (:meth:`subset`), concatenating (:meth:`concat`) and resizing (:meth:`resized`)
    cost no decoding. :meth:`batches` yields float32 batches in order, decoding the next
    batches in worker processes while the current one is in the model; :meth:`load` returns
    the images at given positions as one tensor.

    Args:
        sources: where the pixels come from (all of one image size).
        which: (N,) index into ``sources`` of each image.
        index: (N,) position of each image in its source.
        size: output side (None: the sources' size); other sizes are resized per batch with
            the loaders' antialiased bilinear resize.
    """

    def __init__(self, sources: Sequence[Source], which: np.ndarray | None = None,
                 index: np.ndarray | None = None, size: int | None = None) -> None:
        self.sources = tuple(sources)
        if not self.sources:
            raise LeakprobeError("a lazy image set needs at least one source")
        sizes = {s.image_size for s in self.sources}
        if len(sizes) != 1:
            raise LeakprobeError(f"lazy image sources of different sizes {sorted(sizes)}")
        if which is None or index is None:
            which = np.concatenate([np.full(len(s), k, dtype=np.int32)
                                    for k, s in enumerate(self.sources)])
            index = np.concatenate([np.arange(len(s), dtype=np.int64) for s in self.sources])
        self.which = np.asarray(which, dtype=np.int32)
        self.index = np.asarray(index, dtype=np.int64)
        self.native_size = sizes.pop()
        self.size = int(size or self.native_size)

    @classmethod
    def from_files(cls, paths: Sequence[str | os.PathLike], image_size: int) -> LazyImages:
        """Images decoded from ``paths`` on demand. Relative paths are made absolute now: the
        decoding processes are shared and keep the working directory they started in."""
        return cls([FileSource(tuple(os.path.abspath(p) for p in paths), int(image_size))])

    @classmethod
    def from_array(cls, base: torch.Tensor, image_size: int, scale: float = 1.0) -> LazyImages:
        return cls([ArraySource(base, float(scale), int(image_size))])

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), 3, self.size, self.size)

    @property
    def nbytes(self) -> int:
        """Bytes the set would take in memory as float32."""
        return len(self) * 3 * self.size * self.size * 4

    @property
    def reads_files(self) -> bool:
        return any(isinstance(s, FileSource) for s in self.sources)

    def __repr__(self) -> str:
        kinds = sorted({type(s).__name__ for s in self.sources})
        return f"LazyImages(n={len(self)}, size={self.size}, sources={'+'.join(kinds)})"

    def subset(self, index: torch.Tensor | Sequence[int] | np.ndarray | slice) -> LazyImages:
        """The images at ``index`` (positions or a slice), still unread."""
        if isinstance(index, slice):
            sel: np.ndarray | slice = index
        else:
            sel = np.asarray(torch.as_tensor(index, dtype=torch.long).numpy(), dtype=np.int64)
            if sel.size and (sel.min() < -len(self) or sel.max() >= len(self)):
                raise IndexError(f"index out of range for {len(self)} images")
        return LazyImages(self.sources, self.which[sel], self.index[sel], self.size)

    def resized(self, size: int) -> LazyImages:
        """The same images at side ``size`` (resized when read)."""
        return LazyImages(self.sources, self.which, self.index, size)

    @staticmethod
    def concat(parts: Sequence[LazyImages | torch.Tensor]) -> LazyImages:
        """One lazy set of ``parts`` in order (in-memory tensors become memory sources)."""
        lazies = [p if isinstance(p, LazyImages) else LazyImages([TensorSource(p)])
                  for p in parts]
        sizes = {p.size for p in lazies}
        if len(sizes) != 1:
            raise LeakprobeError(f"cannot concatenate images of sizes {sorted(sizes)}")
        sources: list[Source] = []
        which, index = [], []
        for p in lazies:
            offset = len(sources)
            sources.extend(p.sources)
            which.append(p.which + offset)
            index.append(p.index)
        natives = {p.native_size for p in lazies}
        if len(natives) != 1:
            raise LeakprobeError(
                f"cannot concatenate images read at different native sizes {sorted(natives)}")
        return LazyImages(sources, np.concatenate(which), np.concatenate(index), lazies[0].size)

    # -- reading ------------------------------------------------------------------------------

    def _decode_files(self, sel: np.ndarray) -> dict[int, np.ndarray]:
        """uint8 pixels of the file-backed images among ``sel`` (the slow part), by source."""
        out = {}
        which = self.which[sel]
        for k in np.unique(which):
            src = self.sources[int(k)]
            if isinstance(src, FileSource):
                out[int(k)] = src.decode(self.index[sel][which == k])
        return out

    def _assemble(self, sel: np.ndarray, decoded: dict[int, np.ndarray]) -> torch.Tensor:
        which = self.which[sel]
        index = self.index[sel]
        kinds = np.unique(which)
        if len(kinds) == 1:
            k = int(kinds[0])
            x = to_float(decoded[k]) if k in decoded else self.sources[k].load(index)
        else:
            x = torch.empty(len(sel), 3, self.native_size, self.native_size)
            for k in kinds:
                mask = which == k
                part = to_float(decoded[int(k)]) if int(k) in decoded \
                    else self.sources[int(k)].load(index[mask])
                x[torch.from_numpy(np.flatnonzero(mask))] = part
        if self.size != self.native_size:
            x = resize(x, self.size).clamp_(0.0, 1.0)
        return x

    def read(self, positions: np.ndarray | Sequence[int]) -> torch.Tensor:
        """Float32 images at ``positions`` (one batch: no memory cap check)."""
        sel = np.asarray(positions, dtype=np.int64)
        return self._assemble(sel, self._decode_files(sel))

    def load(self, what: str = "this step") -> torch.Tensor:
        """All images as one float32 tensor, refused above the memory cap (see module doc).

        Files are decoded :data:`LOAD_BATCH` at a time (the same floats as one read), under a
        progress task ``decoding N images``.
        """
        check_fits(len(self), self.size, what)
        if not self.reads_files:
            return self.read(np.arange(len(self)))
        out = torch.empty(len(self), 3, self.size, self.size)
        with task(f"decoding {len(self)} images", len(self), "images") as bar:
            start = 0
            for x in self.batches(LOAD_BATCH):
                out[start:start + x.shape[0]] = x
                start += x.shape[0]
                bar.advance(x.shape[0])
        return out

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Float32 batches of ``batch_size`` images in order; files decode ahead in workers."""
        spans = [np.arange(s, min(s + batch_size, len(self)))
                 for s in range(0, len(self), max(int(batch_size), 1))]
        if not self.reads_files or len(spans) < 2:
            for sel in spans:
                yield self.read(sel)
            return
        for sel, decoded in _prefetched(self._decode_files, spans, PREFETCH_BATCHES):
            x = self._assemble(sel, decoded)
            del decoded
            release_memory()
            yield x


def _prefetched(fetch: Callable[[np.ndarray], dict], spans: list[np.ndarray],
                depth: int) -> Iterator[tuple[np.ndarray, dict]]:
    """``(span, fetch(span))`` in order, computed up to ``depth`` spans ahead in a thread.

    The thread only waits for the decoding processes (no torch work off the main thread, so
    no competing OpenMP pools); an error is re-raised in the consumer, and a consumer that
    stops early stops the thread.
    """
    done: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        for span in spans:
            try:
                item: tuple = (span, fetch(span), None)
            except BaseException as exc:  # handed to the consumer
                item = (span, None, exc)
            while not stop.is_set():
                try:
                    done.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set() or item[2] is not None:
                return

    thread = threading.Thread(target=produce, name="leakprobe-prefetch", daemon=True)
    thread.start()
    try:
        for _ in spans:
            span, decoded, exc = done.get()
            if exc is not None:
                raise exc
            yield span, decoded
    finally:
        stop.set()
        thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# reading either kind of image collection

Images = torch.Tensor | LazyImages


def image_batches(images: Images, batch_size: int, size: int | None = None
                  ) -> Iterator[torch.Tensor]:
    """Float batches of ``images`` (a tensor or :class:`LazyImages`) in order, resized to
    ``size`` (None: as they are).

    For a tensor this is ``resize(images, size).split(batch_size)``, the historical code path;
    a lazy set yields the same floats batch by batch.
    """
    if isinstance(images, LazyImages):
        for x in images.batches(batch_size):
            yield x if size is None else resize(x, size)
        return
    yield from (images if size is None else resize(images, size)).split(batch_size)


def take(images: Images, positions: torch.Tensor | np.ndarray | Sequence[int]) -> torch.Tensor:
    """The float images at ``positions`` (one batch) of a tensor or :class:`LazyImages`."""
    if isinstance(images, LazyImages):
        return images.read(np.asarray(torch.as_tensor(positions).numpy(), dtype=np.int64))
    return images[torch.as_tensor(positions, dtype=torch.long)]


def select(images: Images, positions: torch.Tensor | np.ndarray | Sequence[int]) -> Images:
    """``images`` at ``positions`` without reading a lazy set (a tensor is indexed)."""
    if isinstance(images, LazyImages):
        return images.subset(positions)
    return images[torch.as_tensor(positions, dtype=torch.long)]


def materialize(images: Images, what: str = "this step") -> torch.Tensor:
    """All of ``images`` as one tensor (a lazy set is read, under the memory cap)."""
    return images.load(what) if isinstance(images, LazyImages) else images
