"""B4B: answer each client according to how much of the embedding space it has covered.

Dubinski, Pawlak, Boenisch, Trzcinski, Dziedzic, "Bucks for Buckets (B4B): Active Defenses
Against Stealing Encoders", NeurIPS 2023 (reference code: github stapaw/
b4b-active-encoder-defense). A thief's queries spread over the data and cover a large part
of the encoder's output space; a legitimate client, solving one downstream task, covers a
small part. B4B measures the coverage of each client and adds noise that grows quickly with
it, so a thief pays in answer quality and a legitimate client hardly notices.

The paper's facts, as implemented here:

- **Coverage** (:class:`CoverageTracker`): ``hashes`` = 20 random-hyperplane LSH functions of
  ``bits`` = 12 bits each, so 4096 buckets per hash. Hash ``h`` maps an embedding ``e`` to
  the bucket whose bit ``j`` is ``e . p_hj > 0``, the hyperplanes ``p_hj`` drawn from a
  standard normal (the reference's ``np.random.randn(dim, 12)`` per hash, through the
  origin, no offset). Coverage is the mean over hashes of the percentage of that hash's
  buckets the client's answered embeddings have occupied so far. As in the reference
  (``end2end-stealing/buckets.py``), the **clean** embedding the encoder computes is hashed,
  not the noisy answer, and embeddings are **not normalised** first (a sign pattern through
  the origin does not change when a row is scaled, so normalising would change nothing).
  Hyperplanes are regenerated from their seed and the embedding width, so a tracker's state
  is its occupied buckets only (:meth:`CoverageTracker.to_state`).
- **Noise** (:func:`noise_std`): Gaussian noise ``N(0, sigma^2)`` on every coordinate of the
  answer, ``sigma(c) = lambda * (exp(ln(alpha / lambda) * c / beta) - 1)`` with ``c`` the
  client's coverage in percent, clipped at 0; defaults ``lambda = 1e-6``, ``alpha = 1``,
  ``beta = 80`` (``sigma(0) = 0``, ``sigma(beta) = alpha - lambda``). Departure: ``c`` is
  the coverage **before** the request (the reference precomputes coverage per batch of a
  fixed query order and reads it, shifted by a batch-size factor, for the batch it noises,
  so its ``c`` includes part of the batch itself); the reference script's default ``alpha``
  is 0.8, the paper's and ours 1.
- **Per-user transformations** against sybil accounts (:class:`UserTransform`, optional):
  each client's answers go through its own secret map, so answers bought with two accounts
  do not live in one space and cannot be pooled without paying for a mapping first. The
  reference's ``AffineTransform`` scales and shifts every coordinate by its own factor
  (``scale``, ``shift`` uniform in [-1, 1]); its ``PadAndShuffleTransform`` appends
  ``pad_dim`` fixed random coordinates and permutes all of them. Here ``affine`` is the
  former, ``shuffle`` a secret permutation of the coordinates, ``affine-shuffle`` both
  (affine first, as the reference composes them). Departures: a scale is drawn with
  magnitude in [0.1, 1] (uniform [-1, 1] can scale a coordinate to almost 0, destroying it
  for the legitimate user too), and no padding (constant coordinates carry no information
  and a thief drops them after two answers; without them the served width stays the
  encoder's). The noise is added before the transformation, as in the reference.

One request is one update: ``sigma`` from the coverage before it, then its clean embeddings
are hashed into the client's buckets (:meth:`B4BClient.answer`). The answers therefore depend
on how a client's queries are grouped into requests; a local
:class:`~leakprobe.targets.defended.DefendedEncoder` groups them as ``leakprobe serve
encoder`` with its default ``--max-batch`` would.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from leakprobe.errors import LeakprobeError

__all__ = ["B4B", "B4BClient", "CoverageTracker", "TRANSFORMS", "UserTransform", "noise_std"]

#: The paper's noise schedule defaults.
DEFAULT_LAMBDA = 1e-6
DEFAULT_ALPHA = 1.0
DEFAULT_BETA = 80.0
#: The paper's LSH: 20 hashes of 12 bits (4096 buckets each).
DEFAULT_HASHES = 20
DEFAULT_BITS = 12
#: Per-user transformations (``transform=`` of a ``b4b`` spec).
TRANSFORMS = ("none", "affine", "shuffle", "affine-shuffle")
_MIN_SCALE = 0.1
_STATE_FORMAT = "b4b-coverage-1"


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise LeakprobeError(f"b4b {name} must be a finite number > 0, got {value!r}")
    return value


def noise_std(coverage: float, *, lam: float = DEFAULT_LAMBDA, alpha: float = DEFAULT_ALPHA,
              beta: float = DEFAULT_BETA) -> float:
    """B4B's noise std for a client of ``coverage`` percent.

    ``sigma(c) = lam * (exp(ln(alpha / lam) * c / beta) - 1)``, clipped at 0 (the
    reference's ``get_stdev``): 0 at ``c = 0``, ``alpha - lam`` at ``c = beta``, growing
    exponentially in between and beyond.

    Args:
        coverage: the client's coverage in percent (0 to 100).
        lam, alpha, beta: the schedule (the paper's lambda, alpha, beta).
    """
    lam, alpha, beta = _positive("lambda", lam), _positive("alpha", alpha), \
        _positive("beta", beta)
    exponent = min(math.log(alpha / lam) * float(coverage) / beta, 700.0)
    return max(lam * (math.exp(exponent) - 1.0), 0.0)


@lru_cache(maxsize=8)
def _hyperplanes(dim: int, hashes: int, bits: int, seed: int) -> torch.Tensor:
    """The (hashes, dim, bits) float64 normal hyperplanes of a seed (shared, read-only)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(hashes, dim, bits, generator=g, dtype=torch.float64)


class CoverageTracker:
    """One client's occupied LSH buckets and its coverage (B4B's bucket count).

    Args:
        dim: the embedding width.
        hashes: independent hash functions (the paper: 20).
        bits: hyperplanes per hash; each hash has ``2 ** bits`` buckets (the paper: 12).
        seed: seeds the hyperplanes (the same seed and width give the same hash functions).

    Attributes:
        occupied: (hashes, 2 ** bits) bool, the buckets some answered embedding fell in.
        answered: embeddings hashed so far.
    """

    def __init__(self, dim: int, *, hashes: int = DEFAULT_HASHES, bits: int = DEFAULT_BITS,
                 seed: int = 0) -> None:
        if dim < 1 or hashes < 1 or not 1 <= bits <= 24:
            raise LeakprobeError(f"b4b coverage needs dim >= 1, hashes >= 1 and 1 <= bits <= "
                                 f"24, got dim={dim}, hashes={hashes}, bits={bits}")
        self.dim, self.hashes, self.bits, self.seed = int(dim), int(hashes), int(bits), int(seed)
        self.occupied = torch.zeros(self.hashes, 2 ** self.bits, dtype=torch.bool)
        self.answered = 0

    @property
    def coverage(self) -> float:
        """Mean over hashes of the percentage of buckets occupied (0 to 100)."""
        return float(self.occupied.sum()) * 100.0 / self.occupied.numel()

    def buckets(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, hashes) bucket index of each embedding under each hash (int64).

        Computed in float64 on the CPU, so the same embeddings give the same buckets on
        every device.
        """
        emb = embeddings.detach().to("cpu", torch.float64)
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise LeakprobeError(f"b4b coverage hashes (B, {self.dim}) embeddings, got "
                                 f"{tuple(emb.shape)}")
        planes = _hyperplanes(self.dim, self.hashes, self.bits, self.seed)
        signs = torch.einsum("bd,hdk->bhk", emb, planes) > 0
        weights = 2 ** torch.arange(self.bits, dtype=torch.int64)
        return (signs.to(torch.int64) * weights).sum(-1)

    def update(self, embeddings: torch.Tensor) -> None:
        """Occupy the buckets of (B, dim) ``embeddings`` (the clean answers of a request)."""
        if embeddings.shape[0] == 0:
            return
        idx = self.buckets(embeddings)
        rows = torch.arange(self.hashes).expand_as(idx)
        self.occupied[rows.reshape(-1), idx.reshape(-1)] = True
        self.answered += int(embeddings.shape[0])

    def to_state(self) -> dict:
        """JSON-able state: the settings, ``answered``, ``coverage`` (for reading) and each
        hash's occupied buckets as a base64 bitmap (512 bytes a hash at 12 bits)."""
        bitmaps = np.packbits(self.occupied.numpy(), axis=1)
        return {"format": _STATE_FORMAT, "dim": self.dim, "hashes": self.hashes,
                "bits": self.bits, "seed": self.seed, "answered": self.answered,
                "coverage": round(self.coverage, 6),
                "occupied": [base64.b64encode(row.tobytes()).decode("ascii")
                             for row in bitmaps]}

    @classmethod
    def from_state(cls, state: object) -> CoverageTracker:
        """The tracker :meth:`to_state` wrote (hyperplanes regenerated from its seed).

        Raises:
            LeakprobeError: not such a state, or bitmaps of the wrong size.
        """
        try:
            assert isinstance(state, dict) and state.get("format") == _STATE_FORMAT
            tracker = cls(int(state["dim"]), hashes=int(state["hashes"]),
                          bits=int(state["bits"]), seed=int(state["seed"]))
            rows = [np.frombuffer(base64.b64decode(r, validate=True), dtype=np.uint8)
                    for r in state["occupied"]]
            size = 2 ** tracker.bits
            bits = np.stack([np.unpackbits(r)[:size] for r in rows])
            assert bits.shape == (tracker.hashes, size) and \
                all(len(r) == (size + 7) // 8 for r in rows)
            tracker.occupied = torch.from_numpy(bits.astype(bool))
            tracker.answered = int(state["answered"])
        except (AssertionError, KeyError, TypeError, ValueError) as e:
            raise LeakprobeError("not a b4b coverage state (damaged or of another "
                                 "version)") from e
        return tracker


class UserTransform:
    """A client's secret map of its answers (B4B's defence against sybil accounts).

    ``affine``: ``y = x * scale + shift`` per coordinate (``|scale|`` uniform in [0.1, 1]
    with a random sign, ``shift`` uniform in [-1, 1]); ``shuffle``: a secret permutation of
    the coordinates; ``affine-shuffle``: affine, then the permutation; ``none``: the
    identity. Invertible (:meth:`inverse`), seeded per client.

    Args:
        dim: the embedding width.
        kind: one of :data:`TRANSFORMS`.
        seed: the client's transform seed.
    """

    def __init__(self, dim: int, *, kind: str, seed: int) -> None:
        if kind not in TRANSFORMS:
            raise LeakprobeError(f"unknown b4b transform {kind!r}; use {', '.join(TRANSFORMS)}")
        self.dim, self.kind, self.seed = int(dim), kind, int(seed)
        g = torch.Generator().manual_seed(self.seed)
        magnitude = _MIN_SCALE + (1 - _MIN_SCALE) * torch.rand(dim, generator=g)
        sign = torch.where(torch.rand(dim, generator=g) < 0.5, -1.0, 1.0)
        self.scale = magnitude * sign
        self.shift = 2 * torch.rand(dim, generator=g) - 1
        self.permutation = torch.randperm(dim, generator=g)
        self.affine = kind in ("affine", "affine-shuffle")
        self.shuffle = kind in ("shuffle", "affine-shuffle")

    def __call__(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, dim) answers mapped (affine first, then the permutation)."""
        out = embeddings
        if self.affine:
            out = out * self.scale.to(out) + self.shift.to(out)
        if self.shuffle:
            out = out[:, self.permutation.to(out.device)]
        return out

    def inverse(self, answers: torch.Tensor) -> torch.Tensor:
        """The map undone: ``inverse(self(x)) == x`` up to float rounding."""
        out = answers
        if self.shuffle:
            out = out[:, torch.argsort(self.permutation).to(out.device)]
        if self.affine:
            out = (out - self.shift.to(out)) / self.scale.to(out)
        return out


def _number_text(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class B4B:
    """The B4B defence's settings (the state of each client is a :class:`B4BClient`).

    Attributes:
        lam, alpha, beta: the noise schedule (:func:`noise_std`; spelt ``lambda`` in specs).
        transform: the per-user transformation (:data:`TRANSFORMS`; ``none`` by default).
        hashes, bits: the LSH (the paper's 20 x 12 bits).

    Raises:
        LeakprobeError: a non-positive or non-finite ``lam``/``alpha``/``beta``, an unknown
            ``transform`` or bad LSH sizes.
    """

    lam: float = DEFAULT_LAMBDA
    alpha: float = DEFAULT_ALPHA
    beta: float = DEFAULT_BETA
    transform: str = "none"
    hashes: int = DEFAULT_HASHES
    bits: int = DEFAULT_BITS

    def __post_init__(self) -> None:
        for name, value in (("lambda", self.lam), ("alpha", self.alpha), ("beta", self.beta)):
            _positive(name, value)
        if self.transform not in TRANSFORMS:
            raise LeakprobeError(f"unknown b4b transform {self.transform!r}; use "
                                 f"{', '.join(TRANSFORMS)}")
        if self.hashes < 1 or not 1 <= self.bits <= 24:
            raise LeakprobeError(f"b4b needs hashes >= 1 and 1 <= bits <= 24, got "
                                 f"{self.hashes} and {self.bits}")

    @property
    def spec(self) -> str:
        """``b4b`` for the paper's settings, else ``b4b:NAME=VALUE,...`` (only the settings
        that differ, in the order lambda, alpha, beta, transform, hashes, bits)."""
        default = B4B()
        parts = [f"{name}={text}" for name, value, text in (
            ("lambda", self.lam, _number_text(self.lam)),
            ("alpha", self.alpha, _number_text(self.alpha)),
            ("beta", self.beta, _number_text(self.beta)),
            ("transform", self.transform, self.transform),
            ("hashes", self.hashes, str(self.hashes)),
            ("bits", self.bits, str(self.bits)),
        ) if value != getattr(default, {"lambda": "lam"}.get(name, name))]
        return "b4b" + (":" + ",".join(parts) if parts else "")

    def to_dict(self) -> dict:
        """What ``/v1/info`` announces under ``defence.b4b``."""
        return {"lambda": self.lam, "alpha": self.alpha, "beta": self.beta,
                "transform": self.transform, "hashes": self.hashes, "bits": self.bits}

    def noise_std(self, coverage: float) -> float:
        """:func:`noise_std` with these settings."""
        return noise_std(coverage, lam=self.lam, alpha=self.alpha, beta=self.beta)

    def client(self, dim: int, *, seed: int, transform_seed: int) -> B4BClient:
        """A fresh client (no coverage) answering ``dim``-wide embeddings."""
        return B4BClient(self, CoverageTracker(dim, hashes=self.hashes, bits=self.bits,
                                               seed=seed), transform_seed=transform_seed)


class B4BClient:
    """One client under B4B: its coverage, its transformation, and how it is answered.

    Args:
        settings: the defence's settings.
        tracker: the client's coverage so far.
        transform_seed: seeds the client's :class:`UserTransform` (unused for ``none``).
    """

    def __init__(self, settings: B4B, tracker: CoverageTracker, *, transform_seed: int) -> None:
        self.settings = settings
        self.tracker = tracker
        self.transform_seed = int(transform_seed)
        self.transform = None if settings.transform == "none" else \
            UserTransform(tracker.dim, kind=settings.transform, seed=self.transform_seed)

    @property
    def coverage(self) -> float:
        """The client's coverage in percent."""
        return self.tracker.coverage

    @property
    def noise_std(self) -> float:
        """The std the client's next answer gets (from its coverage now)."""
        return self.settings.noise_std(self.tracker.coverage)

    def answer(self, embeddings: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
        """One request's clean (B, dim) embeddings as the client receives them.

        ``sigma`` comes from the coverage before the request; the clean embeddings are then
        hashed into the client's buckets; the answer is ``clean + sigma * N(0, 1)`` (drawn
        in float32 on the CPU from ``generator``, B * dim draws whatever ``sigma``, so the
        stream advances the same way at every coverage), through the client's transform.
        """
        sigma = self.noise_std
        self.tracker.update(embeddings)
        draw = torch.randn(tuple(embeddings.shape), generator=generator, dtype=torch.float32)
        out = embeddings + sigma * draw.to(device=embeddings.device, dtype=embeddings.dtype) \
            if sigma > 0 else embeddings
        return self.transform(out) if self.transform is not None else out

    def to_state(self) -> dict:
        """JSON-able state: the tracker's and the transform seed."""
        return {"tracker": self.tracker.to_state(), "transform_seed": self.transform_seed}

    @classmethod
    def from_state(cls, settings: B4B, state: object) -> B4BClient:
        """The client :meth:`to_state` wrote, under ``settings`` (whose schedule and
        transform may have changed since; the buckets and seeds are the state's).

        Raises:
            LeakprobeError: a damaged state.
        """
        if not isinstance(state, dict) or "tracker" not in state:
            raise LeakprobeError("not a b4b client state (damaged or of another version)")
        try:
            seed = int(state.get("transform_seed", 0))
        except (TypeError, ValueError) as e:
            raise LeakprobeError("not a b4b client state (bad transform seed)") from e
        return cls(settings, CoverageTracker.from_state(state["tracker"]), transform_seed=seed)
