"""The query interface of an image captioner, its adapters, and ``--model`` loading for it.

:func:`load_captioner` accepts, in this order of detection:

- a folder written by :func:`leakprobe.training.captioning.train_target_captioner`
  (``captioner.safetensors`` + ``tokenizer.json``, ``model.json`` checked when present);
- a TorchScript captioner ``*.pt`` (an exported ``generate(images) -> (B, L)`` ids) with a
  ``tokenizer.json`` next to it;
- ``package.module:factory`` or ``path/file.py:factory``: the factory returns an object with
  ``caption(images) -> list[str]`` (and optionally ``input_size``).
- ``http(s)://host:port``: a service answering ``POST /v1/caption`` (``leakprobe serve
  captioner``), queried as a black box.

Model files are read with safetensors or ``torch.jit.load`` only: nothing is unpickled.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import torch

from leakprobe.device import resolve_device
from leakprobe.errors import LeakprobeError
from leakprobe.precision import check_query_precision
from leakprobe.targets.base import TargetBase, first_line
from leakprobe.targets.batching import fixed_batch

WEIGHTS_FILE = "captioner.safetensors"
TORCHSCRIPT_FILE = "captioner.torchscript.pt"
TOKENIZER_FILE = "tokenizer.json"
MODEL_FILE = "model.json"
_DROPPED_IDS = (0, 1)  # <pad>, <bos>: never part of a decoded caption
_EOS_ID = 2


@runtime_checkable
class Captioner(Protocol):
    """What an attacker can ask of a captioning model.

    Images are float tensors (B, 3, H, W) in [0, 1]; each gets one caption.
    """

    input_size: int

    @property
    def queries(self) -> int:
        """Images queried so far."""
        ...

    def caption(self, images: torch.Tensor) -> list[str]:
        """(B, 3, H, W) -> B captions."""
        ...


def ids_to_tokens(row: list[int]) -> list[int]:
    """Cut a generated id row at its first ``<eos>`` and drop ``<pad>`` / ``<bos>``."""
    if _EOS_ID in row:
        row = row[: row.index(_EOS_ID)]
    return [i for i in row if i not in _DROPPED_IDS]


class ModuleCaptioner(TargetBase):
    """Wrap a torch / TorchScript captioning module as a :class:`Captioner`.

    The module's ``generate(images)`` must return (B, L) integer token ids (greedy decoding,
    ``<eos>`` then ``<pad>``); each row is cut at ``<eos>`` and decoded with ``tokenizer``.
    Every query is resized to ``input_size`` (captions depend on scale), split into batches,
    run under ``torch.inference_mode`` and counted; a budget can be set (all of it
    :class:`~leakprobe.targets.base.TargetBase`'s).

    Args:
        model: the module (with a ``generate`` method).
        tokenizer: an object with ``decode(ids) -> str`` (and ``__len__``, checked against
            the module's ``vocab_size`` when both are known).
        input_size: square side the model expects (default: ``model.input_size`` or 32).
        device: where to run it.
        batch_size: images per ``generate`` call, or ``"auto"`` (measured once:
            :func:`~leakprobe.targets.batching.auto_batch_size`).
        budget: optional maximum number of images queried.
        name: shown in reports and errors.
        query_precision: ``fp32`` (default), ``bf16`` (autocast) or ``auto`` (bf16 where the
            device computes it natively); a model whose ``generate`` fails under bf16 (the
            LSTM on CPUs without native bf16) is queried in fp32.
    """

    kind = "captioner"
    probe_hint = " (set --image-size to what it expects)"
    resizes_queries = True  # captions depend on scale

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        input_size: int | None = None,
        device: str | torch.device = "auto",
        batch_size: int | str = 64,
        budget: int | None = None,
        name: str = "",
        *,
        query_precision: str = "fp32",
    ) -> None:
        self.name = name or type(model).__name__
        generate = getattr(model, "generate", None)
        if not callable(generate):
            raise LeakprobeError(f"model {self.name} has no generate(images) method")
        if not callable(getattr(tokenizer, "decode", None)):
            raise LeakprobeError(f"the tokenizer of {self.name} has no decode(ids) method")
        vocab = getattr(model, "vocab_size", None)
        if isinstance(vocab, int) and hasattr(tokenizer, "__len__") and len(tokenizer) != vocab:
            raise LeakprobeError(f"model {self.name} has {vocab} token ids but its tokenizer "
                                 f"has {len(tokenizer)}: they do not belong together")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        super().__init__(model, name=name, input_size=input_size, batch_size=batch_size,
                         budget=budget, query_precision=query_precision)
        self._generate = cast(Callable, self.model.generate)  # checked callable above
        answer = self.check_output(self._probe_call(self._generate), 2)  # not counted
        self._settle(self.model, self._generate, answer)

    def check_output(self, out: object, n: int) -> torch.Tensor:
        """(n, L) integer token ids."""
        ok = (isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[0] == n
              and not out.is_floating_point() and not out.is_complex())
        if not ok:
            got = (f"{tuple(out.shape)} {out.dtype}" if isinstance(out, torch.Tensor)
                   else type(out).__name__)
            raise LeakprobeError(f"model {self.name}: generate must return (B,L) integer token "
                                 f"ids, got {got}")
        return out  # type: ignore[return-value]

    def _decode(self, out: object, n: int) -> list[str]:
        """Check one chunk's ids and decode each row into a caption."""
        return [str(self.tokenizer.decode(ids_to_tokens(row)))
                for row in self.check_output(out, n).cpu().tolist()]

    def caption(self, images: torch.Tensor) -> list[str]:
        """One caption per image (decoded greedy output)."""
        return [c for part in self._batched(self._generate, images, self._decode) for c in part]


class CallableCaptioner(TargetBase):
    """Wrap any object with ``caption(images) -> list[str]`` as a :class:`Captioner`.

    Queries are resized to ``input_size``, split into batches, counted (budget optional) and
    every answer is checked to be a list of one ``str`` per image. The object runs where it
    is (no device, no probe); its failures become a :class:`LeakprobeError`.

    Args:
        obj: the object (its ``input_size`` is used when ``input_size`` is not given).
        input_size: square side the object expects (default: ``obj.input_size`` or 32).
        batch_size: images per ``caption`` call.
        budget: optional maximum number of images queried.
        name: shown in reports and errors.
    """

    kind = "captioner"
    resizes_queries = True

    def __init__(
        self,
        obj: object,
        input_size: int | None = None,
        batch_size: int = 64,
        budget: int | None = None,
        name: str = "",
    ) -> None:
        self.name = name or type(obj).__name__
        fn = getattr(obj, "caption", None)
        if not callable(fn):
            raise LeakprobeError(f"{self.name} has no caption(images) method")
        self.obj = obj
        self._caption: Callable = fn
        super().__init__(obj, name=name, input_size=input_size, batch_size=batch_size,
                         budget=budget)

    def check_output(self, out: object, n: int) -> list[str]:
        """A list of ``n`` strings."""
        if not isinstance(out, list) or len(out) != n or not all(isinstance(c, str) for c in out):
            if isinstance(out, list):
                kinds = sorted({type(c).__name__ for c in out})
                got = f"a list of {len(out)} ({', '.join(kinds) or 'empty'})"
            else:
                got = type(out).__name__
            raise LeakprobeError(f"model {self.name}: caption must return a list of {n} strings, "
                                 f"got {got}")
        return out

    def _call(self, fn: Callable, chunk: torch.Tensor) -> object:
        """The object's own call, where it runs; its failures are named."""
        try:
            return fn(chunk.float())
        except LeakprobeError:
            raise
        except Exception as e:  # user code
            raise LeakprobeError(f"model {self.name}: caption failed "
                                 f"({type(e).__name__}: {first_line(e)})") from e

    def caption(self, images: torch.Tensor) -> list[str]:
        """One caption per image, from the wrapped object in batches."""
        return [c for part in self._batched(self._caption, images, self.check_output)
                for c in part]


def load_tokenizer(path: str | Path) -> Any:
    """Read a ``tokenizer.json`` written by ``Tokenizer.to_dict``."""
    from leakprobe.data.captions import Tokenizer

    p = Path(path)
    if not p.is_file():
        raise LeakprobeError(f"{p}: tokenizer file not found (a captioner needs tokenizer.json)")
    try:
        return Tokenizer.from_dict(json.loads(p.read_text(encoding="utf-8")))
    except LeakprobeError:
        raise
    except Exception as e:  # bad JSON, wrong keys
        raise LeakprobeError(f"{p}: not a readable tokenizer ({first_line(e)})") from e


def _check_model_json(folder: Path) -> None:
    meta_path = folder / MODEL_FILE
    if not meta_path.exists():
        return
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LeakprobeError(f"{meta_path}: not readable JSON ({e})") from e
    kind = meta.get("kind") if isinstance(meta, dict) else None
    if kind not in (None, "captioner"):
        raise LeakprobeError(f"{folder}: holds a {kind} model, not a captioner")


def load_captioner(
    spec: str,
    device: str | torch.device = "auto",
    batch_size: int | str = 64,
    budget: int | None = None,
    image_size: int | None = None,
    *,
    query_precision: str = "auto",
) -> Captioner:
    """A :class:`Captioner` for ``--model SPEC`` (see the module docstring for the forms).

    Args:
        spec: trainer folder, TorchScript ``.pt`` file, entry point or URL.
        device: where a local model runs.
        batch_size: images per call, or ``"auto"`` (a local module's is measured; callables
            and HTTP services get 64).
        budget: optional query budget.
        image_size: input side (default: what the model declares, else 32).
        query_precision: ``auto`` (bf16 where the device computes it natively), ``fp32`` or
            ``bf16``, for a local module; callables and HTTP services answer as they do.
    Raises:
        LeakprobeError: unknown form, missing files, import or factory failures, bad models.
    """
    from leakprobe.models import captioner as _captioner  # noqa: F401  (registers cnn-lstm)
    from leakprobe.targets.families import family
    from leakprobe.targets.loading import (
        load_entry_point,
        load_safetensors_module,
        load_torchscript,
    )

    text = str(spec)
    path = Path(text)
    device = resolve_device(device)  # first: a bad --device is named before the model is read
    check_query_precision(query_precision)
    if text.startswith(("http://", "https://")):
        return family("captioner").client(text, batch_size=fixed_batch(batch_size, 64),
                                          budget=budget, image_size=image_size)
    if path.is_dir():
        _check_model_json(path)
        if (path / WEIGHTS_FILE).exists():
            module = load_safetensors_module(path / WEIGHTS_FILE)
        elif (path / TORCHSCRIPT_FILE).exists():
            module = load_torchscript(path / TORCHSCRIPT_FILE, "cpu")
        else:
            raise LeakprobeError(f"{path}: folder has no {WEIGHTS_FILE} or {TORCHSCRIPT_FILE}")
        tokenizer = load_tokenizer(path / TOKENIZER_FILE)
        return ModuleCaptioner(module, tokenizer, image_size, device, batch_size, budget,
                               name=text, query_precision=query_precision)
    if ":" in text and not path.exists():
        obj = load_entry_point(text)
        if callable(getattr(obj, "caption", None)):
            return CallableCaptioner(obj, image_size, fixed_batch(batch_size, 64), budget,
                                     name=text)
        raise LeakprobeError(f"{text}: the factory returned {type(obj).__name__}, which has no "
                             "caption(images) method")
    if not path.exists():
        raise LeakprobeError(f"{text}: no such captioner file or folder")
    if path.suffix == ".safetensors":
        raise LeakprobeError(f"{text}: pass the folder holding {path.name} and {TOKENIZER_FILE}")
    module = load_torchscript(path, "cpu")
    tokenizer = load_tokenizer(path.parent / TOKENIZER_FILE)
    return ModuleCaptioner(module, tokenizer, image_size, device, batch_size, budget, name=text,
                           query_precision=query_precision)

