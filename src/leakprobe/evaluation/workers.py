"""Answer an audit's query plan on several processes or machines with Ray (``--workers N``).

Each streamed request of the plan (:mod:`leakprobe.evaluation.plan`) is cut into its chunks
(``request.chunk`` images each, the units the views are drawn in). Views and part crops are
drawn from one seeded generator, chunk after chunk, and how many numbers a chunk draws does
not depend on the pixels; so the driver replays the draws on a dummy 2 x 2 batch (cheap) to
learn the generator's state at the start of every chunk, and a worker given that state draws
exactly the views a one-process run draws. Workers are Ray actors, one per GPU where there
are GPUs (``gpus_per_worker``), CPU processes otherwise; each loads the target once from its
spec (the arguments of :func:`leakprobe.targets.families.load_target`) and reads the images
itself (files must be readable on every node at the same path). The driver hands out chunks,
keeps a few in flight per worker, and yields the answers in the seeded order, so every
feature, and the report, is that of a one-process run.

Ray is imported lazily; ``--ray-address ADDR`` joins an existing cluster (``auto``,
``ray://host:10001``), otherwise a local one with ``workers`` CPUs is started and shut down.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from typing import Any

import torch

from leakprobe.augment import random_resized_crop
from leakprobe.data.stream import Images, image_batches, select, shutdown_workers
from leakprobe.errors import LeakprobeError
from leakprobe.evaluation.plan import (
    Answer,
    PartQuery,
    StreamRequest,
    ViewQuery,
    answer_parts,
    answer_views,
    sorted_gaussian_reference,
)
from leakprobe.progress import count_queries, log, source_of

IN_FLIGHT = 2  # chunks queued per worker


def chunk_states(request: StreamRequest, n_images: int, token_count: int | None = None
                 ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """The generator state at the start of every chunk of ``request``, and PartCrop's
    reference (drawn after the first chunk's crops when the request has ``tokens``).

    The draws are replayed on (b, 3, 2, 2) zeros: the augmentations draw a fixed count of
    numbers per image and view whatever the pixels and the size.
    """
    g = torch.Generator().manual_seed(request.seed)
    states: list[torch.Tensor] = []
    reference = None
    aug = request.spec().augmentation(2) if isinstance(request, ViewQuery) else None
    for start in range(0, n_images, request.chunk):
        b = min(request.chunk, n_images - start)
        states.append(g.get_state())
        dummy = torch.zeros(b, 3, 2, 2)
        if aug is not None and isinstance(request, ViewQuery):
            aug(dummy, g, request.n_views)
        elif isinstance(request, PartQuery):
            random_resized_crop(dummy, 2, request.num_parts, request.crop_scale, flip_p=0.5,
                                generator=g)
            if request.tokens and reference is None:
                if token_count is None:
                    raise LeakprobeError("the workers need the target's token count")
                reference = sorted_gaussian_reference(request.num_parts, token_count, g)
    return states, reference


def answer_chunk(target, images: Images, request: StreamRequest, start: int, stop: int,
                 state: torch.Tensor, reference: torch.Tensor | None) -> Answer:
    """The answer to one chunk (images ``start:stop``), drawn from the generator ``state``."""
    g = torch.Generator()
    g.set_state(state)
    chunk = next(image_batches(select(images, list(range(start, stop))), stop - start,
                               target.input_size))
    if isinstance(request, ViewQuery):
        aug = request.spec().augmentation(target.input_size)
        return Answer(views=answer_views(target, chunk, request, aug, g))
    memo = {} if reference is None else {"reference": reference}
    return answer_parts(target, chunk, request, g, memo)


class _Worker:
    """One Ray actor: a target loaded from its spec, and the images (read where it runs)."""

    def __init__(self, spec: dict, images: Images, threads: int) -> None:
        os.environ.setdefault("LEAKPROBE_PROGRESS", "0")
        torch.set_num_threads(max(1, threads))
        from leakprobe.targets.families import load_target

        self.target = load_target(**spec)
        self.images = images

    def answer(self, request: StreamRequest, start: int, stop: int, state: torch.Tensor,
               reference: torch.Tensor | None) -> Answer:
        return answer_chunk(self.target, self.images, request, start, stop, state, reference)


def token_count(target) -> int | None:
    """Tokens per image at the input size, from one uncounted local call (None: unknown)."""
    fn = getattr(target, "_tokens_fn", None)
    device = getattr(target, "device", torch.device("cpu"))
    if fn is None:
        return None
    size = int(target.input_size)
    with torch.inference_mode():
        return int(fn(torch.zeros(1, 3, size, size, device=device)).shape[1])


class RayWorkers:
    """Answers a plan's streamed requests on ``workers`` Ray actors (see the module docstring).

    Args:
        spec: keyword arguments of :func:`~leakprobe.targets.families.load_target` that
            rebuild the target in a worker (``spec``, ``family``, ``arch``, ``image_size``,
            ``batch_size``, ``checkpoint_key``, ``query_precision``; ``device`` is set per
            worker).
        workers: actors to start.
        address: an existing Ray cluster (None: a local one with ``workers`` CPUs).
        gpus_per_worker: GPUs each actor asks for (default: 1 where this machine has a GPU
            and no ``address`` is given, else 0).
    """

    def __init__(self, *, spec: dict, workers: int, address: str | None = None,
                 gpus_per_worker: float | None = None) -> None:
        if workers < 1:
            raise LeakprobeError(f"--workers must be >= 1, got {workers}")
        if str(spec.get("spec", "")).startswith(("http://", "https://")):
            raise LeakprobeError("--workers answers a local model; an HTTP target is "
                                 "queried from this process")
        self.spec = dict(spec)
        self.workers = workers
        self.address = address
        if gpus_per_worker is None:
            gpus_per_worker = 1.0 if torch.cuda.is_available() and address is None else 0.0
        self.gpus_per_worker = gpus_per_worker
        self._actors: list[Any] = []
        self._started_here = False
        self._ray: Any = None

    def describe(self) -> dict:
        return {"workers": self.workers, "address": self.address or "local",
                "gpus_per_worker": self.gpus_per_worker}

    def connect(self) -> None:
        """Join the cluster (or start the local one) now: reference training that runs on
        Ray afterwards (``--reference-workers``) then uses the same cluster."""
        if self._ray is not None:
            return
        ray = _import_ray()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self._ray = ray
        if not ray.is_initialized():
            # no decoding process outlives a local cluster started here: a full test run hung
            # idle in the test after the Ray test; the pool restarts on the next read
            shutdown_workers()
            env = {k: v for k, v in os.environ.items() if k.startswith("LEAKPROBE_")}
            kwargs = {"runtime_env": {"env_vars": env}, "include_dashboard": False,
                      "logging_level": "ERROR", "log_to_driver": False}
            try:
                if self.address:
                    ray.init(address=self.address, **kwargs)
                else:
                    ray.init(num_cpus=self.workers, object_store_memory=256 * 2**20, **kwargs)
            except Exception as e:  # noqa: BLE001 - Ray raises many kinds; report one line
                where = self.address or f"a local cluster with {self.workers} CPUs"
                raise LeakprobeError(f"could not start Ray on {where}: {e}") from e
            self._started_here = True

    def _start(self, images: Images) -> None:
        if self._actors:
            return
        self.connect()
        ray = self._ray
        device = "cuda" if self.gpus_per_worker > 0 else "cpu"
        cpus = os.cpu_count() or 1
        threads = max(1, cpus // self.workers) if not self.address else 1
        actor = ray.remote(num_cpus=1, num_gpus=self.gpus_per_worker)(_Worker)
        shared = ray.put(images)
        self._actors = [actor.remote({**self.spec, "device": device}, shared, threads)
                        for _ in range(self.workers)]
        log(f"query workers: {self.workers} Ray actors "
            f"({self.address or 'local cluster'}, {device})")

    def answers(self, target, images: Images, request: StreamRequest,
                clean: torch.Tensor | None = None) -> Iterator[tuple[int, Answer]]:
        """``(start, answer)`` for each chunk, in order (as
        :func:`~leakprobe.evaluation.plan.stream_answers` yields them)."""
        n = int(images.shape[0])
        tokens = token_count(target) if isinstance(request, PartQuery) and request.tokens \
            else None
        states, reference = chunk_states(request, n, tokens)
        self._start(images)
        ray = self._ray
        spans = [(start, min(start + request.chunk, n)) for start in range(0, n, request.chunk)]
        pending: deque = deque()
        per = request.queries_per_image()
        next_span = 0
        try:
            while next_span < len(spans) or pending:
                while next_span < len(spans) and len(pending) < IN_FLIGHT * self.workers:
                    start, stop = spans[next_span]
                    actor = self._actors[next_span % self.workers]
                    pending.append((start, stop, actor.answer.remote(
                        request, start, stop, states[next_span], reference)))
                    next_span += 1
                start, stop, ref = pending.popleft()
                try:
                    answer = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    cause = e.as_instanceof_cause()
                    if isinstance(cause, LeakprobeError):
                        raise LeakprobeError(str(cause)) from e
                    raise
                # the worker's model batches are not seen here: the bar moves per chunk
                count_queries(per * (stop - start), source_of(target))
                if clean is not None:
                    answer.clean = clean[start:stop]
                yield start, answer
        finally:
            for *_, ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        """Stop the actors (and the local cluster this object started)."""
        if self._ray is None:
            return
        for a in self._actors:
            self._ray.kill(a)
        self._actors = []
        if self._started_here:
            self._ray.shutdown()
            self._started_here = False
            shutdown_workers()


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise LeakprobeError("--workers / --ray-address need Ray, which is not installed: "
                             "pip install 'leakprobe[distributed]'") from e
    return ray
