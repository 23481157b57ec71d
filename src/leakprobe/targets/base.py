"""The one base of every local target: probe -> batch -> check -> count, written once.

A target wraps a model of one family (encoder, image-to-image model, captioner) behind the
query interface the attacks use. Whatever the family, a target

1. **probes** the model once on a seeded (2, 3, S, S) batch (not counted): a model that fails
   there is refused with ``model NAME rejects (2,3,S,S) inputs: ...``;
2. **batches** every query: images are checked to be (B, 3, H, W), resized to the input side
   when the family asks for it, and split into ``batch_size`` chunks run under
   ``torch.inference_mode`` on the target's device, in the target's query precision
   (``fp32``, or ``bf16`` autocast with answers returned as float32; a model that fails
   under bf16 on the probe is queried in fp32, with one line saying so). ``batch_size="auto"``
   is chosen once after the probe (:mod:`leakprobe.targets.batching`), and scaled per query
   by its images' area (half-size parts: 4x as many per call);
3. **checks** every answer with the family's hook, :meth:`TargetBase.check_output` (finite
   (B, D) embeddings, finite images in [0, 1], integer token ids or strings, ...);
4. **counts** the images queried, charged in full before the first chunk runs, against an
   optional budget (:class:`QueryCounter`); the progress bar advances as each chunk (one
   model call of ``batch_size`` images) is answered, so its rate and time left follow the
   model. The counter is the target's progress ``source``
   (:func:`leakprobe.progress.source_of`): a query task bound to it takes this target's
   queries only, never a reference encoder's.

Convolutional modules (two or more ``Conv2d``) get their queries in the channels-last memory
format when the probe answers the same in it: measured on this project's 2-core AMD EPYC, one
thread, fp32, resnet-tiny at 32 px went from 537 to 681 images/s (batch 64) and at 16 px (the
part crops) from 1822 to 2588; ResNet-50 and the ViTs at 224 px neither gained nor lost (4.47
vs 4.35, 4.09 vs 4.12 images/s), and the answers moved by float rounding only (<= 5e-8 for the
ResNets); a PartCrop audit of resnet-tiny queried 1556 instead of 1274 images/s. A model
that fails on a channels-last query gets the default layout from then on.
``torch.compile`` is not used: on the same machine (1 thread) it made resnet-tiny 27% faster
(710 vs 560 images/s) but took 52 s to compile and 28 s more for each new input shape (the
half-size parts), while a demo audit's 20k queries take ~30 s; ViT-S/16 at 224 px gained 7%
(4.9 vs 4.6 images/s) for 49 s + 64 s, ResNet-50 5% (4.2 vs 4.0) for 73 s + 135 s.
Attention already runs through ``scaled_dot_product_attention``
(:mod:`leakprobe.models.public`; ``nn.MultiheadAttention`` in :mod:`leakprobe.models.vit`).

The helpers every target and the HTTP clients share (:class:`QueryCounter`, :func:`resize`,
:func:`check_images`, :func:`positive`, :func:`input_size_of`) live here too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch

from leakprobe.augment import resize
from leakprobe.errors import BudgetExceededError, LeakprobeError
from leakprobe.precision import resolve_query_precision
from leakprobe.progress import count_queries, log
from leakprobe.targets.batching import (
    AUTO,
    MAX_BATCH,
    auto_batch_size,
    check_batch_size,
    pow2_floor,
)

Piece = TypeVar("Piece")

PROBE_IMAGES = 2  # images in the probe batch (seeded, never counted)
AUTO_FALLBACK_BATCH = 64  # batch_size="auto" of a target that measures none (callables)


class QueryCounter:
    """Counts images sent to a target and enforces an optional budget."""

    def __init__(self, budget: int | None = None) -> None:
        self.budget = budget
        self.used = 0

    def charge(self, n: int, *, progress: bool = True) -> None:
        """Pay for ``n`` images, or raise :class:`BudgetExceededError` (nothing charged).

        Args:
            n: images about to be queried.
            progress: advance the progress bar now by ``n``; False when the caller reports
                them as they are answered (:meth:`answered`), chunk by chunk.
        """
        if self.budget is not None and self.used + n > self.budget:
            raise BudgetExceededError(
                f"query budget exhausted: {self.used} of {self.budget} used, {n} more requested"
            )
        self.used += n
        if progress:
            count_queries(n, self)  # advances the progress bar of the step that pays for them

    def answered(self, n: int) -> None:
        """``n`` images paid with ``charge(..., progress=False)`` were answered (one model
        batch): the progress task counting this target's queries advances by ``n``."""
        count_queries(n, self)


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


def _float32(out: object) -> object:
    """A floating tensor answer as float32 (bf16 autocast answers); anything else as is."""
    if isinstance(out, torch.Tensor) and out.is_floating_point() and out.dtype != torch.float32:
        return out.float()
    return out


def convolutional(module: object) -> bool:
    """Whether ``module`` (a torch or TorchScript module) holds two or more ``Conv2d``.

    A ViT's one convolution (its patch embedding) does not count: ViTs gain nothing from
    channels-last inputs.
    """
    if not isinstance(module, torch.nn.Module):
        return False
    convs = sum(isinstance(m, torch.nn.Conv2d) or getattr(m, "original_name", "") == "Conv2d"
                for m in module.modules())
    return convs >= 2


class TargetBase:
    """Probe -> batch -> check -> count for a model of one family (see the module docstring).

    A family's target subclasses this, sets ``device`` when it runs a model (the probe and
    the queries are moved there), calls ``super().__init__`` once its model is ready, and
    implements :meth:`check_output`, the family's check of one answer. Its query methods
    (``embed``, ``translate``, ``caption``) are then one call to :meth:`_batched` or
    :meth:`_batched_tensor`. After its probe it calls :meth:`_settle` (memory format and
    ``batch_size="auto"``).

    Args:
        model: the wrapped model (its ``input_size`` and type name are the defaults).
        name: shown in reports and errors (default: the model's type name).
        input_size: square side the model expects (default: ``model.input_size`` or 32).
        batch_size: images per model call, or ``"auto"``: measured once after the probe
            (:func:`~leakprobe.targets.batching.auto_batch_size`).
        budget: optional maximum number of images queried.
        query_precision: ``fp32`` (the default), ``bf16`` (autocast; answers as float32) or
            ``auto`` (bf16 where the device computes it natively,
            :func:`~leakprobe.precision.resolve_query_precision`).

    Attributes:
        kind: the family (``encoder``, ``image2image``, ``captioner``).
        probe_hint: appended to the error of a model that rejects the probe batch.
        resizes_queries: whether every query is resized to ``input_size`` first.
        counter: the :class:`QueryCounter` of this target; ``queries`` is its count.
        query_precision: the precision queries run in, ``fp32`` or ``bf16`` (resolved).
        batch_size_auto: whether ``batch_size`` was measured (``batch_size="auto"``).
        channels_last: whether queries are sent in the channels-last memory format.
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
        batch_size: int | str,
        budget: int | None = None,
        query_precision: str = "fp32",
    ) -> None:
        self.input_size = input_size_of(input_size, model)
        if isinstance(batch_size, str):  # "auto", or an int spelled as text
            batch_size = check_batch_size(batch_size)
        self.batch_size_auto = batch_size == AUTO
        self.batch_size = (AUTO_FALLBACK_BATCH if self.batch_size_auto
                           else positive(int(batch_size), "batch size"))
        self.counter = QueryCounter(budget)
        self.name = name or type(model).__name__
        device = getattr(self, "device", None)
        self.query_precision = resolve_query_precision(
            query_precision, device if isinstance(device, torch.device) else torch.device("cpu"))
        self.channels_last = False

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

    # ---- one model call ---------------------------------------------------------------------

    def _precision(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on the target's device when queries run in bf16, else nothing."""
        if self.query_precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _run(self, fn: Callable, x: torch.Tensor) -> object:
        """``fn(x)`` as every query runs: inference mode, the query precision, the memory
        format; floating answers as float32. ``x`` is already on the device."""
        with torch.inference_mode(), self._precision():
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return _float32(fn(x))

    # ---- probe ------------------------------------------------------------------------------

    def _probe_batch(self) -> torch.Tensor:
        """The seeded probe images (2, 3, S, S) on the target's device."""
        s = self.input_size
        x = torch.rand(PROBE_IMAGES, 3, s, s, generator=torch.Generator().manual_seed(0))
        return x.to(self.device)

    def _probe_call(self, fn: Callable, x: torch.Tensor | None = None) -> object:
        """``fn`` on the probe batch (or ``x``), uncounted; any failure is a bad model.

        A model that fails in bf16 but answers in fp32 is queried in fp32 from then on (one
        line says so): oneDNN has no bf16 LSTM on CPUs without native bf16, for example.
        """
        x = self._probe_batch() if x is None else x
        try:
            return self._run(fn, x)
        except Exception as e:  # any failure of user code is a bad model for this input
            error = e
        if self.query_precision == "bf16":
            self.query_precision = "fp32"
            try:
                out = self._run(fn, x)
            except Exception as e:
                error = e
            else:
                log(f"model {self.name} fails under bf16 autocast ({first_line(error)}); "
                    "querying it in fp32")
                return out
        s = self.input_size
        raise LeakprobeError(f"model {self.name} rejects ({PROBE_IMAGES},3,{s},{s}) inputs: "
                             f"{first_line(error)}{self.probe_hint}") from error

    def _settle(self, module: object, fn: Callable, answer: object) -> None:
        """After the probe: the memory format, then ``batch_size="auto"``.

        Args:
            module: the model (channels-last is tried for :func:`convolutional` modules).
            fn: the model call the queries make (``module``, ``generate``...).
            answer: ``fn``'s checked answer to the probe batch (compared in channels-last).
        """
        if isinstance(answer, torch.Tensor) and convolutional(module):
            self.channels_last = self._same_in_channels_last(fn, answer)
        if self.batch_size_auto:
            self.batch_size = auto_batch_size(lambda x: self._run(fn, x), module=module,
                                              input_size=self.input_size, device=self.device)

    def _same_in_channels_last(self, fn: Callable, answer: torch.Tensor) -> bool:
        """Whether ``fn`` answers the probe batch in channels-last as it does without it."""
        self.channels_last = True
        try:
            out = self._run(fn, self._probe_batch())
        except Exception:  # any failure: the model keeps the default layout
            return False
        finally:
            self.channels_last = False
        if not isinstance(out, torch.Tensor) or out.shape != answer.shape:
            return False
        out, answer = out.float(), answer.float()
        scale = float(answer.abs().max()) + 1e-6
        return bool(((out - answer).abs().max() <= 1e-2 * scale).item())

    # ---- batch, check, count ----------------------------------------------------------------

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Check a query batch and resize it when the family asks for it."""
        check_images(images)
        return resize(images, self.input_size) if self.resizes_queries else images

    def _chunk_size(self, images: torch.Tensor) -> int:
        """Images per model call for this query: ``batch_size``; with ``batch_size="auto"``
        scaled by how much smaller (or larger) the query's images are than ``input_size``,
        so a call holds about as many pixels (PartCrop's half-size parts go 4x as many per
        call), as a power of two between 1 and :data:`~leakprobe.targets.batching.MAX_BATCH`
        (or ``batch_size`` if larger)."""
        pixels = images.shape[-2] * images.shape[-1]
        if not self.batch_size_auto or pixels == self.input_size ** 2 or pixels == 0:
            return self.batch_size
        scaled = pow2_floor(self.batch_size * self.input_size ** 2 / pixels)
        return max(1, min(scaled, max(self.batch_size, MAX_BATCH)))

    def _call(self, fn: Callable, chunk: torch.Tensor) -> object:
        """One model call on one chunk (moved to the device as float32, see :meth:`_run`)."""
        x = chunk.to(self.device, torch.float32, non_blocking=True)
        if self.channels_last:
            try:
                return self._run(fn, x)
            except Exception:  # e.g. a .view() on a channels-last map: default layout
                self.channels_last = False
        return self._run(fn, x)

    def _batched(
        self,
        fn: Callable,
        images: torch.Tensor,
        read: Callable[[object, int], Piece] | None = None,
    ) -> list[Piece]:
        """Prepare ``images``, pay for all of them, then answer them chunk by chunk.

        The budget is charged in full before the first chunk runs; the progress bar advances
        by each chunk as it is answered.

        Args:
            fn: the model call (``module``, ``generate``, ``tokens``, ...).
            images: the (B, 3, H, W) query.
            read: turns one raw answer for ``n`` images into the piece kept (checked, on
                the CPU, decoded); default: :meth:`check_output`.
        Returns:
            One piece per chunk, in order.
        """
        images = self._prepare(images)
        self.counter.charge(images.shape[0], progress=False)
        read = read or self.check_output
        pieces = []
        for chunk in images.split(self._chunk_size(images)):
            pieces.append(read(self._call(fn, chunk), chunk.shape[0]))
            self.counter.answered(chunk.shape[0])
        return pieces

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
