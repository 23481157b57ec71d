"""The one base of every local target: probe -> batch -> check -> count, written once.

A target wraps a model of one family (encoder, image-to-image model, captioner) behind the
query interface the attacks use. Whatever the family, a target

1. **probes** the model once on a seeded (2, 3, S, S) batch (not counted): a model that fails
   there is refused with ``model NAME rejects (2,3,S,S) inputs: ...``;
2. **batches** every query: images are checked to be (B, 3, H, W), resized to the input side
   when the family asks for it, and split into ``batch_size`` chunks run under
   ``torch.inference_mode`` on the target's device;
3. **checks** every answer with the family's hook, :meth:`TargetBase.check_output` (finite
   (B, D) embeddings, finite images in [0, 1], integer token ids or strings, ...);
4. **counts** the images queried, charged in full before the first chunk runs, against an
   optional budget (:class:`QueryCounter`).

The helpers every target and the HTTP clients share (:class:`QueryCounter`, :func:`resize`,
:func:`check_images`, :func:`positive`, :func:`input_size_of`) live here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch

from leakprobe.augment import resize
from leakprobe.errors import BudgetExceededError, LeakprobeError
from leakprobe.progress import count_queries

Piece = TypeVar("Piece")

PROBE_IMAGES = 2  # images in the probe batch (seeded, never counted)


class QueryCounter:
    """Counts images sent to a target and enforces an optional budget."""

    def __init__(self, budget: int | None = None) -> None:
        self.budget = budget
        self.used = 0

    def charge(self, n: int) -> None:
        """Pay for ``n`` images, or raise :class:`BudgetExceededError` (nothing charged)."""
        if self.budget is not None and self.used + n > self.budget:
            raise BudgetExceededError(
                f"query budget exhausted: {self.used} of {self.budget} used, {n} more requested"
            )
        self.used += n
        count_queries(n)  # advances the progress bar of the step that pays for them


def check_images(images: torch.Tensor) -> None:
    """Refuse anything but a (B, 3, H, W) batch."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise LeakprobeError(f"images must be (B,3,H,W), got {tuple(images.shape)}")


def positive(value: int, what: str) -> int:
    """``value`` if it is >= 1, else a clear error naming ``what``."""
    if value < 1:
        raise LeakprobeError(f"{what} must be >= 1, got {value}")
    return int(value)


def input_size_of(given: int | None, model: object) -> int:
    """The input side: the one given, else the model's declared ``input_size``, else 32."""
    if given is not None:
        return positive(given, "--image-size")
    declared = getattr(model, "input_size", None)
    return int(declared) if isinstance(declared, int) and declared > 0 else 32


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class TargetBase:
    """Probe -> batch -> check -> count for a model of one family (see the module docstring).

    A family's target subclasses this, calls ``super().__init__`` once its model is ready,
    sets ``device`` when it runs a model (the probe and the queries are moved there), and
    implements :meth:`check_output`, the family's check of one answer. Its query methods
    (``embed``, ``translate``, ``caption``) are then one call to :meth:`_batched` or
    :meth:`_batched_tensor`.

    Args:
        model: the wrapped model (its ``input_size`` and type name are the defaults).
        name: shown in reports and errors (default: the model's type name).
        input_size: square side the model expects (default: ``model.input_size`` or 32).
        batch_size: images per model call.
        budget: optional maximum number of images queried.

    Attributes:
        kind: the family (``encoder``, ``image2image``, ``captioner``).
        probe_hint: appended to the error of a model that rejects the probe batch.
        resizes_queries: whether every query is resized to ``input_size`` first.
        counter: the :class:`QueryCounter` of this target; ``queries`` is its count.
    """

    kind: ClassVar[str] = ""
    probe_hint: ClassVar[str] = ""
    resizes_queries: bool = False
    device: torch.device

    def __init__(
        self,
        model: object,
        *,
        name: str = "",
        input_size: int | None = None,
        batch_size: int,
        budget: int | None = None,
    ) -> None:
        self.input_size = input_size_of(input_size, model)
        self.batch_size = positive(batch_size, "batch size")
        self.counter = QueryCounter(budget)
        self.name = name or type(model).__name__

    @property
    def queries(self) -> int:
        """Images queried so far (the probe is not counted)."""
        return self.counter.used

    # ---- the family's hook ----------------------------------------------------------------

    def check_output(self, out: object, n: int) -> Any:
        """The family's check of one answer for ``n`` images: return it (cleaned) or raise."""
        raise NotImplementedError(f"{type(self).__name__} must define check_output")

    def _check_tensor(
        self, out: object, n: int, ndim: int, what: str, nonfinite: str | None = None
    ) -> torch.Tensor:
        """``out`` must be a finite tensor with ``ndim`` dims and ``n`` rows.

        ``what`` names the expected output (``(B,D) embeddings``); ``nonfinite`` names it in
        the NaN/inf error (default: ``values (WHAT)``).
        """
        if not isinstance(out, torch.Tensor) or out.ndim != ndim or out.shape[0] != n:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise LeakprobeError(f"model {self.name} must return {what}, got {shape}")
        if not torch.isfinite(out).all():
            raise LeakprobeError(f"model {self.name} returned NaN/inf "
                                 f"{nonfinite or f'values ({what})'}")
        return out

    # ---- probe ------------------------------------------------------------------------------

    def _probe_batch(self) -> torch.Tensor:
        """The seeded probe images (2, 3, S, S) on the target's device."""
        s = self.input_size
        x = torch.rand(PROBE_IMAGES, 3, s, s, generator=torch.Generator().manual_seed(0))
        return x.to(self.device)

    def _probe_call(self, fn: Callable, x: torch.Tensor | None = None) -> object:
        """``fn`` on the probe batch (or ``x``), uncounted; any failure is a bad model."""
        x = self._probe_batch() if x is None else x
        try:
            with torch.inference_mode():
                return fn(x)
        except Exception as e:  # any failure of user code is a bad model for this input
            s = self.input_size
            raise LeakprobeError(f"model {self.name} rejects ({PROBE_IMAGES},3,{s},{s}) inputs: "
                                 f"{first_line(e)}{self.probe_hint}") from e

    # ---- batch, check, count ----------------------------------------------------------------

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Check a query batch and resize it when the family asks for it."""
        check_images(images)
        return resize(images, self.input_size) if self.resizes_queries else images

    def _call(self, fn: Callable, chunk: torch.Tensor) -> object:
        """One model call on one chunk (moved to the device as float32, inference mode)."""
        with torch.inference_mode():
            return fn(chunk.to(self.device, torch.float32, non_blocking=True))

    def _batched(
        self,
        fn: Callable,
        images: torch.Tensor,
        read: Callable[[object, int], Piece] | None = None,
    ) -> list[Piece]:
        """Prepare ``images``, pay for all of them, then answer them chunk by chunk.

        Args:
            fn: the model call (``module``, ``generate``, ``tokens``, ...).
            images: the (B, 3, H, W) query.
            read: turns one raw answer for ``n`` images into the piece kept (checked, on
                the CPU, decoded); default: :meth:`check_output`.
        Returns:
            One piece per chunk, in order.
        """
        images = self._prepare(images)
        self.counter.charge(images.shape[0])
        read = read or self.check_output
        return [read(self._call(fn, chunk), chunk.shape[0])
                for chunk in images.split(self.batch_size)]

    def _batched_tensor(
        self,
        fn: Callable,
        images: torch.Tensor,
        check: Callable[[object, int], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """:meth:`_batched` for tensor answers: each checked chunk as CPU float32, joined."""
        check = check or self.check_output
        outs = self._batched(fn, images, lambda out, n: check(out, n).float().cpu())
        return torch.cat(outs) if outs else torch.empty(0)
