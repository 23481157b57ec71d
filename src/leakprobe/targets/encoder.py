"""The query interface of an image encoder, and its adapter for local torch models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

from leakprobe.data.stream import Images, image_batches
from leakprobe.device import resolve_device
from leakprobe.errors import LeakprobeError
from leakprobe.targets.base import (
    QueryCounter,
    TargetBase,
    check_images,
    input_size_of,
    positive,
    resize,
)

__all__ = ["Encoder", "ModuleEncoder", "ObjectEncoder", "QueryCounter", "check_images",
           "embed_images", "input_size_of", "positive", "resize"]


@runtime_checkable
class Encoder(Protocol):
    """What an attacker can ask of a self-supervised encoder.

    Images are float tensors (B, 3, H, W) in [0, 1]; the encoder normalises internally.
    A target may also declare ``has_tokens`` and ``tokens_in_embedding_space`` (bool):
    False when its tokens live in another space than its embeddings (e.g. backbone tokens
    beside embeddings after a projection head), which PartCrop's token attacks refuse.
    """

    input_size: int

    @property
    def queries(self) -> int:
        """Images queried so far."""
        ...

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D) embeddings."""
        ...

    def tokens(self, images: torch.Tensor) -> torch.Tensor | None:
        """(B, 3, H, W) -> (B, L, D) patch / feature-map tokens, or None if not exposed."""
        ...


class ModuleEncoder(TargetBase):
    """Wrap a torch module (or a TorchScript module) as an :class:`Encoder`.

    ``forward`` must give (B, D) embeddings; a ``tokens`` method, when present, gives
    (B, L, D) tokens. A model attribute ``tokens_in_embedding_space`` (bool) says whether those
    tokens live in the embedding space (True for the CLS and patch tokens after the same final
    norm, or feature-map tokens mean-pooled into the embedding; False for tokens taken before a
    projection head); set it to False to keep PartCrop's token attacks off a model.
    Inputs are moved to the device, split into batches of ``batch_size`` and
    run under ``torch.inference_mode`` in the query precision (fp32, or bf16 autocast);
    outputs come back on the CPU as float32. Models that
    reject images of another size than ``input_size`` (probed once) get every query resized to
    ``input_size``; the others see the size they are given (PartCrop's half-size parts).
    Probing, batching, checking and counting are :class:`~leakprobe.targets.base.TargetBase`'s.

    Args:
        module: the model.
        input_size: square side the model expects (default: ``module.input_size`` or 32).
        device: where to run it.
        batch_size: images per forward pass, or ``"auto"`` (measured once for this model on
            this device: :func:`~leakprobe.targets.batching.auto_batch_size`).
        budget: optional maximum number of images queried.
        name: shown in reports.
        query_precision: ``fp32`` (default), ``bf16`` (autocast, answers as float32) or
            ``auto`` (bf16 where the device computes it natively); the resolved name is
            ``query_precision`` on the target.
    """

    kind = "encoder"
    probe_hint = " (set --image-size to what the model expects)"

    def __init__(
        self,
        module: torch.nn.Module,
        input_size: int | None = None,
        device: str | torch.device = "auto",
        batch_size: int | str = 256,
        budget: int | None = None,
        name: str = "",
        *,
        query_precision: str = "fp32",
    ) -> None:
        self.device = resolve_device(device)
        self.module = module.to(self.device).eval()
        super().__init__(module, name=name, input_size=input_size, batch_size=batch_size,
                         budget=budget, query_precision=query_precision)
        self._tokens_fn: Callable | None = getattr(module, "tokens", None)
        self.embed_dim = self._probe()

    @property
    def has_tokens(self) -> bool:
        return self._tokens_fn is not None

    @property
    def tokens_in_embedding_space(self) -> bool | None:
        """The model's declaration (``tokens_in_embedding_space`` attribute); None: undeclared."""
        declared = getattr(getattr(self, "obj", self.module), "tokens_in_embedding_space", None)
        return declared if isinstance(declared, bool) else None

    @property
    def resizes_queries(self) -> bool:  # type: ignore[override]
        """Models that reject other sizes than ``input_size`` get every query resized."""
        return not self.flexible_size

    def _probe(self) -> int:
        """Check the model on a tiny batch; learn whether it takes other sizes; then settle
        the memory format and an ``"auto"`` batch size."""
        x = self._probe_batch()
        out = self.check_output(self._probe_call(self.module, x), 2)
        half = max(self.input_size // 2, 1)
        try:
            self.check_output(self._run(self.module, x[:, :, :half, :half]), 2)
            self.flexible_size = True
        except Exception:
            self.flexible_size = False
        if self._tokens_fn is not None:
            try:
                tok = self._run(self._tokens_fn, x)
                if tok is None:  # the protocol allows "not exposed"
                    self._tokens_fn = None
                else:
                    self.check_tokens(tok, 2)
            except LeakprobeError:
                raise
            except Exception:
                self._tokens_fn = None
        self._settle(self.module, self.module, out)
        return int(out.shape[1])

    def check_output(self, out: object, n: int) -> torch.Tensor:
        """Finite (n, D) embeddings."""
        return self._check_tensor(out, n, 2, "(B,D) embeddings")

    def check_tokens(self, out: object, n: int) -> torch.Tensor:
        """Finite (n, L, D) tokens."""
        return self._check_tensor(out, n, 3, "(B,L,D) tokens")

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self._batched_tensor(self.module, images)

    def tokens(self, images: torch.Tensor) -> torch.Tensor | None:
        if self._tokens_fn is None:
            return None
        return self._batched_tensor(self._tokens_fn, images, self.check_tokens)


class ObjectEncoder(ModuleEncoder):
    """Wrap any object with ``embed(images)`` (and optionally ``tokens``, ``input_size``).

    The object's own methods are called in batches; outputs are validated and queries
    counted exactly as for a torch module. The object runs where it is: images are handed
    to it on the CPU, and ``query_precision="bf16"`` autocasts its CPU torch ops only.
    """

    def __init__(
        self,
        obj: object,
        input_size: int | None = None,
        batch_size: int | str = 256,
        budget: int | None = None,
        name: str = "",
        *,
        query_precision: str = "fp32",
    ) -> None:
        self.obj = obj
        self.device = torch.device("cpu")
        TargetBase.__init__(self, obj, name=name, input_size=input_size,
                            batch_size=batch_size, budget=budget,
                            query_precision=query_precision)
        self.module = obj.embed  # type: ignore[attr-defined]
        self._tokens_fn = getattr(obj, "tokens", None)
        self.embed_dim = self._probe()


EMBED_CHUNKS = 4  # target batches per streamed read in embed_images


def embed_images(target: Encoder, images: Images) -> torch.Tensor:
    """The target's embeddings (N, D) of ``images``, a tensor or a streamed
    :class:`~leakprobe.data.stream.LazyImages` read a few target batches at a time.

    Reads are whole multiples of the target's ``batch_size``, so the target sees the same
    batches as when it is handed the whole set at once.
    """
    if isinstance(images, torch.Tensor):
        return target.embed(images)
    step = int(getattr(target, "batch_size", 256)) * EMBED_CHUNKS
    parts = [target.embed(x) for x in image_batches(images, step)]
    return torch.cat(parts) if parts else torch.empty(0)
