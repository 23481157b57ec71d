"""The query interface of an image encoder, and its adapter for local torch models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from leakprobe.device import resolve_device
from leakprobe.errors import BudgetExceededError, LeakprobeError
from leakprobe.progress import count_queries


@runtime_checkable
class Encoder(Protocol):
    """What an attacker can ask of a self-supervised encoder.

    Images are float tensors (B, 3, H, W) in [0, 1]; the encoder normalises internally.
    A target may also declare ``has_tokens`` and ``tokens_in_embedding_space`` (bool):
    False when its tokens live in another space than its embeddings (e.g. backbone tokens
    beside embeddings after a projection head), which PartCrop's token attacks refuse.
    """

    input_size: int
    queries: int

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D) embeddings."""
        ...

    def tokens(self, images: torch.Tensor) -> torch.Tensor | None:
        """(B, 3, H, W) -> (B, L, D) patch / feature-map tokens, or None if not exposed."""
        ...


class QueryCounter:
    """Counts images sent to a target and enforces an optional budget."""

    def __init__(self, budget: int | None = None) -> None:
        self.budget = budget
        self.used = 0

    def charge(self, n: int) -> None:
        if self.budget is not None and self.used + n > self.budget:
            raise BudgetExceededError(
                f"query budget exhausted: {self.used} of {self.budget} used, {n} more requested"
            )
        self.used += n
        count_queries(n)  # advances the progress bar of the step that pays for them


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize to ``size`` x ``size`` with antialiased bilinear interpolation (no-op if equal)."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)


def check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise LeakprobeError(f"images must be (B,3,H,W), got {tuple(images.shape)}")


class ModuleEncoder:
    """Wrap a torch module (or a TorchScript module) as an :class:`Encoder`.

    ``forward`` must give (B, D) embeddings; a ``tokens`` method, when present, gives
    (B, L, D) tokens. A model attribute ``tokens_in_embedding_space`` (bool) says whether those
    tokens live in the embedding space (True for the CLS and patch tokens after the same final
    norm, or feature-map tokens mean-pooled into the embedding; False for tokens taken before a
    projection head); set it to False to keep PartCrop's token attacks off a model.
    Inputs are moved to the device, split into batches of ``batch_size`` and
    run under ``torch.inference_mode``; outputs come back on the CPU as float32. Models that
    reject images of another size than ``input_size`` (probed once) get every query resized to
    ``input_size``; the others see the size they are given (PartCrop's half-size parts).

    Args:
        module: the model.
        input_size: square side the model expects (default: ``module.input_size`` or 32).
        device: where to run it.
        batch_size: images per forward pass.
        budget: optional maximum number of images queried.
        name: shown in reports.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        input_size: int | None = None,
        device: str | torch.device = "auto",
        batch_size: int = 256,
        budget: int | None = None,
        name: str = "",
    ) -> None:
        self.device = resolve_device(device)
        self.module = module.to(self.device).eval()
        self.input_size = input_size_of(input_size, module)
        self.batch_size = positive(batch_size, "batch size")
        self.counter = QueryCounter(budget)
        self.name = name or type(module).__name__
        self._tokens_fn: Callable | None = getattr(module, "tokens", None)
        self.embed_dim = self._probe()

    @property
    def queries(self) -> int:
        return self.counter.used

    @property
    def has_tokens(self) -> bool:
        return self._tokens_fn is not None

    @property
    def tokens_in_embedding_space(self) -> bool | None:
        """The model's declaration (``tokens_in_embedding_space`` attribute); None: undeclared."""
        declared = getattr(getattr(self, "obj", self.module), "tokens_in_embedding_space", None)
        return declared if isinstance(declared, bool) else None

    def _probe(self) -> int:
        """Check the model on a tiny batch; learn whether it takes other sizes."""
        x = torch.rand(2, 3, self.input_size, self.input_size, generator=torch.Generator()
                       .manual_seed(0)).to(self.device)
        try:
            with torch.inference_mode():
                out = self.module(x)
        except Exception as e:  # any failure of user code is a bad model for this input
            raise LeakprobeError(
                f"model {self.name} rejects (2,3,{self.input_size},{self.input_size}) inputs: "
                f"{str(e).splitlines()[0] if str(e) else type(e).__name__} "
                "(set --image-size to what the model expects)"
            ) from e
        self._check_embedding(out, 2)
        half = max(self.input_size // 2, 1)
        try:
            with torch.inference_mode():
                self._check_embedding(self.module(x[:, :, :half, :half]), 2)
            self.flexible_size = True
        except Exception:
            self.flexible_size = False
        if self._tokens_fn is not None:
            try:
                with torch.inference_mode():
                    tok = self._tokens_fn(x)
                if tok is None:  # the protocol allows "not exposed"
                    self._tokens_fn = None
                else:
                    self._check_tokens(tok, 2)
            except LeakprobeError:
                raise
            except Exception:
                self._tokens_fn = None
        return int(out.shape[1])

    def _check_output(self, out: object, n: int, ndim: int, what: str) -> torch.Tensor:
        """``out`` must be a finite tensor with ``ndim`` dims and ``n`` rows."""
        if not isinstance(out, torch.Tensor) or out.ndim != ndim or out.shape[0] != n:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise LeakprobeError(f"model {self.name} must return {what}, got {shape}")
        if not torch.isfinite(out).all():
            raise LeakprobeError(f"model {self.name} returned NaN/inf values ({what})")
        return out

    def _check_embedding(self, out: object, n: int) -> torch.Tensor:
        return self._check_output(out, n, 2, "(B,D) embeddings")

    def _check_tokens(self, out: object, n: int) -> torch.Tensor:
        return self._check_output(out, n, 3, "(B,L,D) tokens")

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images)
        if not self.flexible_size:
            images = resize(images, self.input_size)
        return images

    def _batched(self, fn: Callable, images: torch.Tensor, check: Callable) -> torch.Tensor:
        images = self._prepare(images)
        self.counter.charge(images.shape[0])
        outs = []
        with torch.inference_mode():
            for chunk in images.split(self.batch_size):
                out = fn(chunk.to(self.device, torch.float32, non_blocking=True))
                outs.append(check(out, chunk.shape[0]).float().cpu())
        return torch.cat(outs) if outs else torch.empty(0)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self._batched(self.module, images, self._check_embedding)

    def tokens(self, images: torch.Tensor) -> torch.Tensor | None:
        if self._tokens_fn is None:
            return None
        return self._batched(self._tokens_fn, images, self._check_tokens)


class ObjectEncoder(ModuleEncoder):
    """Wrap any object with ``embed(images)`` (and optionally ``tokens``, ``input_size``).

    The object's own methods are called in batches; outputs are validated and queries
    counted exactly as for a torch module.
    """

    def __init__(
        self,
        obj: object,
        input_size: int | None = None,
        batch_size: int = 256,
        budget: int | None = None,
        name: str = "",
    ) -> None:
        self.obj = obj
        self.device = torch.device("cpu")
        self.input_size = input_size_of(input_size, obj)
        self.batch_size = positive(batch_size, "batch size")
        self.counter = QueryCounter(budget)
        self.name = name or type(obj).__name__
        self.module = obj.embed  # type: ignore[attr-defined]
        self._tokens_fn = getattr(obj, "tokens", None)
        self.embed_dim = self._probe()


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
