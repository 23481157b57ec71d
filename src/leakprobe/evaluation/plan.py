"""One query plan per audit: every distinct query is paid once and shared by the attacks.

Before the first query the audit asks each attack what it will send the target for every
image (:meth:`~leakprobe.attacks.membership._common.MembershipAttack.query_requests`). A
request is a frozen, hashable description:

- :class:`CleanQuery`: the clean image's embedding (1 query per image);
- :class:`ViewQuery`: ``n_views`` augmented views of each image, drawn chunk by chunk of
  ``chunk`` images from one generator seeded with ``seed`` (exactly the loop every view attack
  ran on its own, so an attack's views do not change when they are shared);
- :class:`PartQuery`: PartCrop's ``num_parts`` part crops of each image, and, with
  ``tokens``, the whole image's tokens and the method's seeded Gaussian reference.

Equal requests are paid once: ``encodermi-vector``, ``-set`` and ``-threshold`` ask the same
:class:`ViewQuery`, ``lpla-p1/p2/pinf`` the same one, and the clean image is embedded once for
``baseline-norm``, LpLA, ``baseline-consistency`` and ``partcrop-pooled``. An attack then turns
each chunk's shared :class:`Answer` into its features (``chunk_features``) and finishes them
(``finish_features``): features are computed while the chunk is in memory, so memory stays
flat in the number of images. Attacks that declare no requests (calibrated attacks, infonce,
other families) keep querying on their own through ``features`` and are counted as such.

A :class:`FeatureCache` keeps each attack's finished features on disk (atomically, keyed by
the target, the images, their query order and the attack's parameters): a killed audit rerun
with the same command pays no query twice. :class:`QueryPlan` is what ``--dry-run`` prints and
what ``check_audit_plan`` and ``context.total_queries`` count.

Progress: each request group is one ``queries`` task (``encodermi-vector, encodermi-set:
querying``) bound to the target (:func:`leakprobe.progress.query_task`), moved by the target
as each model batch is answered; an attack that queries on its own gets one task over its
queries (a calibrated attack's population samples included; its reference encoders' queries
have tasks of their own), and the audit's ``audit: queries`` task
(:func:`leakprobe.evaluation.audit.run_audit`) counts the whole plan.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leakprobe.data.stream import Images, image_batches
from leakprobe.io import atomic_write
from leakprobe.progress import log, query_task, source_of

CLEAN_CHUNK = 512  # clean images read per step (the target re-batches them)


# ---- requests ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class CleanQuery:
    """The clean image's embedding: one query per image, no randomness."""

    def queries_per_image(self) -> int:
        return 1

    def describe(self) -> str:
        return "clean image"

    def relative_cost(self, input_size: int) -> float:
        return 1.0


@dataclass(frozen=True)
class ViewQuery:
    """``n_views`` augmented views of every image (the view attacks' loop).

    Attributes:
        recipe: the resolved view recipe as sorted ``(key, value)`` pairs
            (:meth:`leakprobe.views.ViewSpec.to_dict` less its label).
        n_views: views per image.
        seed: seeds the one generator the views are drawn from.
        chunk: images whose views are drawn (and embedded) together; the random stream
            depends on it, so it is part of the request.
    """

    recipe: tuple[tuple[str, Any], ...]
    n_views: int
    seed: int
    chunk: int

    @classmethod
    def of(cls, spec, n_views: int, seed: int, chunk: int) -> ViewQuery:
        """The request for ``n_views`` views of :class:`~leakprobe.views.ViewSpec` ``spec``."""
        values = spec.to_dict()
        values.pop("preset", None)
        recipe = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                              for k, v in values.items()))
        return cls(recipe, int(n_views), int(seed), int(chunk))

    def spec(self):
        from leakprobe.views import ViewSpec

        return ViewSpec(**dict(self.recipe))

    def queries_per_image(self) -> int:
        return self.n_views

    def describe(self) -> str:
        scale = dict(self.recipe).get("crop_scale", ("?", "?"))
        return (f"{self.n_views} views (crop {scale[0]:g}-{scale[1]:g}, seed {self.seed}, "
                f"{self.chunk} images a draw)")

    def relative_cost(self, input_size: int) -> float:
        return float(self.n_views)


@dataclass(frozen=True)
class PartQuery:
    """PartCrop's part crops (and, with ``tokens``, the whole image's tokens).

    The generator seeded with ``seed`` draws each chunk's crops; with ``tokens`` it also
    draws the method's sorted-Gaussian reference once, right after the first chunk's crops
    (the order of PartCrop's own loop, kept so its numbers do not change).
    """

    num_parts: int
    crop_scale: tuple[float, float]
    part_size: int | None
    seed: int
    chunk: int
    tokens: bool

    def queries_per_image(self) -> int:
        return self.num_parts + (1 if self.tokens else 0)

    def size(self, input_size: int) -> int:
        return self.part_size or max(input_size // 2, 1)

    def describe(self) -> str:
        what = " + the whole image's tokens" if self.tokens else ""
        return (f"{self.num_parts} part crops (scale {self.crop_scale[0]:g}-"
                f"{self.crop_scale[1]:g}, seed {self.seed}){what}")

    def relative_cost(self, input_size: int) -> float:
        # a forward costs about its pixel count (a ViT's tokens, a CNN's map)
        area = (self.size(input_size) / max(input_size, 1)) ** 2
        return self.num_parts * area + (1.0 if self.tokens else 0.0)


Request = CleanQuery | ViewQuery | PartQuery
StreamRequest = ViewQuery | PartQuery


@dataclass
class Answer:
    """The target's answers for one chunk of images (what attacks turn into features).

    Attributes:
        clean: (b, D) clean embeddings, when any attack of the group asked for them.
        views: (b, n, D) view embeddings (:class:`ViewQuery`).
        parts: (b, K, D) part embeddings (:class:`PartQuery`).
        tokens: (b, L, D) whole-image tokens (:class:`PartQuery` with ``tokens``).
        reference: (K, L) PartCrop's Gaussian reference (drawn once, shared by all chunks).
        refused: why a :class:`PartQuery` with ``tokens`` paid no part (no tokens, or tokens
            of another width than the embeddings): its readers refuse the target.
    """

    clean: torch.Tensor | None = None
    views: torch.Tensor | None = None
    parts: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    reference: torch.Tensor | None = None
    refused: str | None = None  # why the parts were not queried (tokens unusable)


def split_requests(requests: Sequence[Request]) -> tuple[StreamRequest | None, bool]:
    """An attack's requests as (its streamed request or None, whether it needs the clean one).

    Raises:
        ValueError: more than one streamed request (one attack reads one stream).
    """
    streams = [r for r in requests if not isinstance(r, CleanQuery)]
    if len(streams) > 1:
        raise ValueError("an attack may ask for at most one view or part request")
    return (streams[0] if streams else None), any(isinstance(r, CleanQuery) for r in requests)


# ---- answering one request -----------------------------------------------------------------


def sorted_gaussian_reference(n: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """(n, length) distributions shaped like a Gaussian bell over positions (PartCrop's
    reference: sorted standard-normal draws through their Gaussian density, normalised)."""
    draws = torch.randn(n, length, generator=generator).sort(dim=1).values
    mu, sd = draws.mean(1, keepdim=True), draws.std(1, keepdim=True)
    dens = torch.exp(-((draws - mu) ** 2) / (2 * sd**2)) / (math.sqrt(2 * math.pi) * sd)
    return dens / dens.sum(1, keepdim=True)


def answer_views(target, chunk: torch.Tensor, request: ViewQuery, aug,
                 g: torch.Generator) -> torch.Tensor:
    """(b, n, D) embeddings of ``request.n_views`` views of ``chunk`` drawn from ``g``."""
    views = aug(chunk, g, request.n_views)
    b = views.shape[0]
    return target.embed(views.reshape(b * request.n_views, *views.shape[2:])).view(
        b, request.n_views, -1)


def answer_parts(target, chunk: torch.Tensor, request: PartQuery, g: torch.Generator,
                 state: dict) -> Answer:
    """One chunk of a :class:`PartQuery`, in PartCrop's order of draws and queries."""
    from leakprobe.augment import random_resized_crop

    size = request.size(target.input_size)
    parts = random_resized_crop(chunk, size, request.num_parts, request.crop_scale,
                                flip_p=0.5, generator=g)
    tokens = None
    if request.tokens:
        tokens = target.tokens(chunk)  # before the parts: a bad target is refused early
        width = int(getattr(target, "embed_dim", 0) or 0)
        if tokens is None:
            return Answer(refused="the target exposes no tokens")
        if width and tokens.shape[-1] != width:
            return Answer(tokens=tokens, refused=f"its tokens have width {tokens.shape[-1]} "
                          f"and its embeddings {width} (not one space)")
    b, k = parts.shape[:2]
    part_emb = target.embed(parts.reshape(b * k, *parts.shape[2:])).view(b, k, -1)
    if tokens is not None and "reference" not in state:
        state["reference"] = sorted_gaussian_reference(request.num_parts, tokens.shape[1], g)
    return Answer(parts=part_emb, tokens=tokens, reference=state.get("reference"))


def stream_answers(target, images: Images, request: StreamRequest,
                   clean: torch.Tensor | None = None) -> Iterator[tuple[int, Answer]]:
    """``(start, answer)`` for each chunk of ``images`` under ``request``, in order.

    ``clean`` (N, D), when given, is sliced into each answer.
    """
    g = torch.Generator().manual_seed(request.seed)
    state: dict = {}
    aug = request.spec().augmentation(target.input_size) if isinstance(request, ViewQuery) \
        else None
    start = 0
    for chunk in image_batches(images, request.chunk, target.input_size):
        if isinstance(request, ViewQuery):
            answer = Answer(views=answer_views(target, chunk, request, aug, g))
        else:
            answer = answer_parts(target, chunk, request, g, state)
        b = chunk.shape[0]
        if clean is not None:
            answer.clean = clean[start:start + b]
        yield start, answer
        start += b


def clean_embeddings(target, images: Images) -> torch.Tensor:
    """(N, D) embeddings of the clean images, read :data:`CLEAN_CHUNK` at a time."""
    parts = [target.embed(x) for x in image_batches(images, CLEAN_CHUNK, target.input_size)]
    return torch.cat(parts) if parts else torch.empty(0)


# ---- the plan ----------------------------------------------------------------------------------


@dataclass
class PlannedRequest:
    """One distinct request of a plan and the attacks that read it."""

    request: Request
    attacks: list[str]

    def queries(self, n_images: int) -> int:
        return self.request.queries_per_image() * n_images


@dataclass
class QueryPlan:
    """What an audit will ask of the target: distinct requests, shared, and the rest.

    Attributes:
        n_images: audited images.
        requests: the distinct requests of planned attacks, each with its readers.
        unplanned: attack name -> queries it pays on its own (per image, extra).
        shared_with: unplanned attack -> the one whose queries it reuses (calibrated attacks
            of one statistic share the target's and the population's answers).
        per_attack: attack name -> queries per image it needs (as if it ran alone).
        input_size: the target's input side (for the cost weights).
    """

    n_images: int
    requests: list[PlannedRequest] = field(default_factory=list)
    unplanned: dict[str, tuple[int, int]] = field(default_factory=dict)
    per_attack: dict[str, int] = field(default_factory=dict)
    input_size: int = 0
    shared_with: dict[str, str] = field(default_factory=dict)

    @property
    def queries_per_image(self) -> int:
        """Queries per image the plan pays (shared requests once)."""
        return (sum(r.request.queries_per_image() for r in self.requests)
                + sum(per for per, _ in self.unplanned.values()))

    @property
    def total_queries(self) -> int:
        """Every query of the plan (population samples of calibrated attacks: at most)."""
        return (self.queries_per_image * self.n_images
                + sum(extra for _, extra in self.unplanned.values()))

    @property
    def unshared_queries(self) -> int:
        """What the attacks would pay each on its own (today's sum over attacks)."""
        return (sum(self.per_attack.values()) * self.n_images
                + sum(extra for _, extra in self.unplanned.values()))

    def relative_cost(self) -> float:
        """Plan cost in full-size forwards per image (part crops weigh by their area)."""
        size = self.input_size or 1
        return (sum(r.request.relative_cost(size) for r in self.requests)
                + sum(per for per, _ in self.unplanned.values()))

    def to_dict(self) -> dict[str, Any]:
        """The plan as the report's ``context.query_plan`` records it."""
        return {
            "images": self.n_images,
            "queries_per_image": self.queries_per_image,
            "total_queries": self.total_queries,
            "queries_without_sharing": self.unshared_queries,
            "requests": [{"what": r.request.describe(), "kind": type(r.request).__name__,
                          "queries_per_image": r.request.queries_per_image(),
                          "queries": r.queries(self.n_images), "attacks": r.attacks}
                         for r in self.requests],
            "unplanned": {name: {"queries_per_image": per, "extra_queries": extra}
                          for name, (per, extra) in self.unplanned.items()},
            "shared_with": dict(self.shared_with),
        }

    def lines(self, seconds_per_query: float | None = None) -> list[str]:
        """The plan in words (printed before the first query and by ``--dry-run``)."""
        out = [f"query plan: {self.n_images} images x {self.queries_per_image} queries per "
               f"image = {self.total_queries} queries"
               + (f" (without sharing: {self.unshared_queries})"
                  if self.unshared_queries != self.total_queries else "")]
        for r in self.requests:
            out.append(f"  {r.queries(self.n_images):>9}  {r.request.describe()}: "
                       f"{', '.join(r.attacks)}")
        for name, (per, extra) in self.unplanned.items():
            more = f" + {extra} population samples (at most)" if extra else ""
            also = [a for a, b in self.shared_with.items() if b == name]
            readers = f", shared by {', '.join(also)}" if also else ""
            if not per:
                out.append(f"  {extra:>9}  {name}: population samples (at most; its audited "
                           f"images' answers shared with {self.shared_with.get(name, '-')})")
                continue
            out.append(f"  {per * self.n_images + extra:>9}  {name} (queries on its own"
                       f"{readers}){more}")
        if seconds_per_query is not None:
            est = seconds_per_query * self.relative_cost() * self.n_images
            out.append(f"  estimated query time: {_duration(est)} "
                       f"({1 / max(seconds_per_query, 1e-12):.3g} full-size images/s measured "
                       "on a probe batch; scorer fits come on top)")
        return out


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def attack_requests(attack, target) -> tuple[Request, ...] | None:
    """The attack's declared requests (None: it queries on its own)."""
    fn = getattr(attack, "query_requests", None)
    return None if fn is None else fn(target)


def build_plan(attacks: Sequence, target, n_images: int) -> QueryPlan:
    """The plan of ``attacks`` on ``target`` for ``n_images`` images (nothing is queried)."""
    plan = QueryPlan(n_images, input_size=int(getattr(target, "input_size", 0)))
    index: dict[Request, PlannedRequest] = {}
    shared: dict[Any, str] = {}
    for attack in attacks:
        per = int(attack.queries_per_image(target))
        plan.per_attack[attack.name] = per
        requests = attack_requests(attack, target)
        if requests is None:
            share = getattr(attack, "query_share_key", None)
            key = share(target) if share is not None else None
            # extras shared apart from the per-image answers (an image-text calibrated
            # attack reads the uncalibrated one's answers and pays its population once)
            extra_share = getattr(attack, "extra_share_key", None)
            extra_key = extra_share(target) if extra_share is not None else None
            extra_paid = extra_key is not None and extra_key in shared
            if extra_key is not None and not extra_paid:
                shared[extra_key] = attack.name
            if key is not None and key in shared:  # e.g. lira-X and rmia-X: one statistic
                plan.shared_with[attack.name] = shared[key]
                extra = 0 if extra_paid or extra_key is None else int(
                    attack.extra_queries(target))
                if extra:
                    plan.unplanned[attack.name] = (0, extra)
                continue
            if key is not None:
                shared[key] = attack.name
            extra = 0 if extra_paid else int(attack.extra_queries(target))
            if per or extra:
                plan.unplanned[attack.name] = (per, extra)
            continue
        for req in requests:
            if req not in index:
                index[req] = PlannedRequest(req, [])
                plan.requests.append(index[req])
            index[req].attacks.append(attack.name)
    return plan


def time_probe(target, n: int = 4) -> float | None:
    """Seconds per full-size image of one uncounted forward of the target (None: unknown).

    Only local targets (with a ``module``) are probed: a remote target's queries cost money.
    """
    module = getattr(target, "module", None)
    device = getattr(target, "device", None)
    if module is None or device is None:
        return None
    size = int(target.input_size)
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    precision = getattr(target, "query_precision", "fp32")
    try:
        with torch.inference_mode():
            module(x[:1])  # warm-up
            t0 = time.perf_counter()
            if precision == "bf16":
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    module(x)
            else:
                module(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return (time.perf_counter() - t0) / n
    except Exception:  # a probe is advice only
        return None


# ---- the cache ------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return repr(value)


class FeatureCache:
    """Finished features of attacks on disk, so a rerun of a killed audit pays nothing twice.

    Each entry is one ``.npy`` file written atomically, named by the SHA-256 of what decides
    the features: ``identity`` (the target: model spec, file size and time, input size,
    precision), the images' ids, their query order, the attack's ``features_key()`` (its name
    and parameters, or those of the attack whose features it reuses) and its requests. The
    cache never holds images, only features.
    """

    def __init__(self, folder: str | Path, identity: dict) -> None:
        self.folder = Path(folder)
        self.identity = _jsonable(identity)
        self.hits = 0

    def key(self, what: str, attack=None, *, ids: Sequence[str], order: int,
            requests: Any = None) -> str:
        blob = json.dumps({"what": what, "target": self.identity, "ids": list(ids),
                           "order": order, "requests": _jsonable(
                               [asdict(r) for r in requests] if requests else None),
                           "attack": None if attack is None else
                           _jsonable(attack.features_key())},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def load(self, key: str) -> np.ndarray | None:
        path = self.folder / f"{key}.npy"
        if not path.exists():
            return None
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # a damaged entry is recomputed
        self.hits += 1
        return arr

    def save(self, key: str, value: np.ndarray) -> None:
        def write(path: Path) -> None:
            with open(path, "wb") as f:
                np.save(f, np.asarray(value), allow_pickle=False)

        atomic_write(self.folder / f"{key}.npy", write)


# ---- running the plan ------------------------------------------------------------------------


class PlanRunner:
    """Pays a plan's requests lazily, once each, and hands every attack its features.

    ``features(attack)`` runs the attack's whole request group the first time any of its
    members asks (every attack reading the same request gets its features from the same
    pass) and keeps the others' features until they are asked for. With a cache, finished
    features are stored on disk and reused.

    Args:
        attacks: the attacks of the plan (planned or not).
        target: the queried encoder.
        images: the images in query order (a tensor or LazyImages).
        ids: their ids, in the same order (cache keys).
        order: the seed of the query order (cache keys).
        cache: optional :class:`FeatureCache`.
        workers: optional :class:`~leakprobe.evaluation.workers.ShardAnswerer` that answers
            the streamed requests on several processes.
    """

    def __init__(self, attacks: Sequence, target, images: Images, *, ids: Sequence[str],
                 order: int, cache: FeatureCache | None = None, workers=None) -> None:
        self.attacks = list(attacks)
        self.target = target
        self.images = images
        self.ids = list(ids)
        self.order = order
        self.cache = cache
        self.workers = workers
        self.plan = build_plan(self.attacks, target, len(self.ids))
        self._done: dict[int, np.ndarray] = {}
        self._clean: torch.Tensor | None = None

    def _key(self, attack) -> str | None:
        if self.cache is None or not getattr(attack, "cacheable", True):
            return None
        return self.cache.key("features", attack, ids=self.ids, order=self.order,
                              requests=attack_requests(attack, self.target))

    def cached(self, attack) -> np.ndarray | None:
        key = self._key(attack)
        return None if key is None or self.cache is None else self.cache.load(key)

    def features(self, attack) -> np.ndarray:
        """The attack's (N, F) features in query order, paid at most once."""
        i = self._index(attack)
        if i in self._done:
            return self._done.pop(i)
        hit = self.cached(attack)
        if hit is not None:
            log(f"{attack.name}: features from the cache ({self._key(attack)}.npy)")
            return hit
        requests = attack_requests(attack, self.target)
        if requests is None:
            total = (attack.queries_per_image(self.target) * len(self.ids)
                     + int(attack.extra_queries(self.target)))  # population samples
            with query_task(f"{attack.name}: querying", total, source_of(self.target)):
                feats = attack.features(self.target, self.images)
            self._store(attack, feats)
            return feats
        stream, _ = split_requests(requests)
        group = [a for a in self.attacks if self._index(a) not in self._done
                 and a is not attack and _same_stream(a, stream, self.target)
                 and self.cached(a) is None]
        out = self.run_group([attack, *group], stream)
        for a, f in zip(group, out[1:], strict=True):
            self._done[self._index(a)] = f
        return out[0]

    def _index(self, attack) -> int:
        for i, a in enumerate(self.attacks):
            if a is attack:
                return i
        raise ValueError(f"{attack.name} is not part of this plan")

    def _store(self, attack, feats: np.ndarray) -> None:
        key = self._key(attack)
        if key is not None and self.cache is not None:
            self.cache.save(key, feats)

    def clean(self) -> torch.Tensor:
        """(N, D) clean embeddings, paid once (and cached)."""
        if self._clean is None:
            key = None if self.cache is None else self.cache.key(
                "clean", ids=self.ids, order=self.order)
            hit = None if key is None or self.cache is None else self.cache.load(key)
            if hit is not None:
                self._clean = torch.from_numpy(hit)
            else:
                with query_task("clean images: querying", len(self.ids),
                                source_of(self.target)):
                    self._clean = clean_embeddings(self.target, self.images)
                if key is not None and self.cache is not None:
                    self.cache.save(key, self._clean.numpy())
        return self._clean

    def run_group(self, attacks: list, stream: StreamRequest | None) -> list[np.ndarray]:
        """Features of ``attacks`` that all read ``stream`` (None: the clean request only)."""
        needs_clean = any(split_requests(attack_requests(a, self.target) or ())[1]
                          for a in attacks)
        clean = self.clean() if needs_clean else None
        pieces: list[list[torch.Tensor]] = [[] for _ in attacks]
        names = ", ".join(a.name for a in attacks)
        if stream is None:
            assert clean is not None
            for start in range(0, clean.shape[0], CLEAN_CHUNK):
                answer = Answer(clean=clean[start:start + CLEAN_CHUNK])
                for piece, a in zip(pieces, attacks, strict=True):
                    piece.append(a.chunk_features(answer))
        else:
            total = stream.queries_per_image() * len(self.ids)
            with query_task(f"{names}: querying", total, source_of(self.target)):
                answers = (self.workers.answers(self.target, self.images, stream, clean)
                           if self.workers is not None
                           else stream_answers(self.target, self.images, stream, clean))
                for _, answer in answers:
                    for piece, a in zip(pieces, attacks, strict=True):
                        piece.append(a.chunk_features(answer))
        out = []
        for piece, a in zip(pieces, attacks, strict=True):
            feats = a.finish_features(torch.cat(piece).double().numpy())
            self._store(a, feats)
            out.append(feats)
        return out


def _same_stream(attack, stream: StreamRequest | None, target) -> bool:
    requests = attack_requests(attack, target)
    return requests is not None and split_requests(requests)[0] == stream


def planned_features(attack, target, images: Images) -> np.ndarray:
    """``attack``'s features on ``images`` through a one-attack plan (its ``features``)."""
    n = int(images.shape[0])
    runner = PlanRunner([attack], target, images, ids=[str(i) for i in range(n)], order=0)
    requests = attack_requests(attack, target) or ()
    return runner.run_group([attack], split_requests(requests)[0])[0]


