"""Load published self-supervised checkpoints as their authors released them.

A checkpoint file (``.pth``, ``.pth.tar``, ``.pt`` read with ``torch.load(...,
weights_only=True)``, never unpickling code; or ``.safetensors``) is flattened into dotted
tensor names, then the backbone of a registered architecture is found in it:

- the section: ``checkpoint_key`` when given, else the first of ``state_dict`` (MoCo),
  ``teacher`` (DINO; ``student`` on request), ``model`` (MAE) that the file has, else the
  whole file;
- the prefix: the one under which most of the architecture's tensors are found, known wrapper
  prefixes first (``module.``, ``module.encoder_q.`` and ``module.base_encoder.`` for MoCo,
  ``backbone.`` for DINO, ``encoder.``...), so a MoCo momentum encoder is never picked;
- heads and training parts are ignored (``fc``, ``head``, ``projector``, ``predictor``, MAE's
  ``decoder_*`` and ``mask_token``, MoCo's queue, momentum encoder and predictor, the
  optimizer); a missing backbone tensor, a tensor of another shape or an unknown extra tensor
  is refused with an error that names them.
"""

from __future__ import annotations

import argparse
import math
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from leakprobe.errors import LeakprobeError
from leakprobe.models import create_model
from leakprobe.models.registry import int_attribute

#: File endings read with ``torch.load(weights_only=True)``.
TORCH_SUFFIXES = (".pth", ".pth.tar", ".pt")
#: Sections searched for the weights when no ``checkpoint_key`` is given, in this order.
SECTIONS = ("state_dict", "teacher", "model")
#: Wrapper prefixes tried first, in this order (ties go to the earlier one).
KNOWN_PREFIXES = ("", "module.", "backbone.", "encoder.", "module.encoder_q.",
                  "module.base_encoder.", "module.backbone.", "module.encoder.", "encoder_q.",
                  "base_encoder.", "model.")
#: First name components of heads and training-only parts, ignored when loading.
HEAD_NAMES = frozenset({"fc", "head", "heads", "projector", "projection_head", "predictor",
                        "prototypes", "mask_token"})
_OPTIONAL = ("num_batches_tracked",)


def is_torch_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a torch checkpoint: ``.pth``, ``.pth.tar`` or ``.pt``, not TorchScript.

    A TorchScript archive (often ``.pt``) keeps being loaded as TorchScript, ``--arch`` or not.
    """
    if not str(path).endswith(TORCH_SUFFIXES):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return True  # legacy (non-zip) torch.save files, or missing: read_checkpoint says
    return not any(n.endswith("constants.pkl") or "/code/" in n for n in names)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint file under its dotted name (nested dicts joined by '.').

    Raises:
        LeakprobeError: unreadable file, or a pickled object that is not plain data (a whole
            ``nn.Module``): leakprobe never unpickles code.
    """
    path = Path(path)
    if not path.exists():
        raise LeakprobeError(f"{path}: file not found")
    if path.suffix == ".safetensors":
        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as e:
            raise LeakprobeError(f"{path}: not a readable safetensors file ({e})") from e
    try:
        # argparse.Namespace: the training arguments DINO and MAE keep beside the weights, a
        # plain attribute bag (no code runs when it is rebuilt)
        with torch.serialization.safe_globals([argparse.Namespace]):
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise LeakprobeError(
            f"{path}: holds pickled Python objects{what}, e.g. a whole nn.Module, not only "
            "tensors; leakprobe never unpickles code: save model.state_dict() instead") from e
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        first = (str(e).splitlines() or [""])[0][:200]
        raise LeakprobeError(f"{path}: not a readable torch checkpoint ({first})") from e
    flat: dict[str, torch.Tensor] = {}
    _flatten(raw, "", flat)
    if not flat:
        raise LeakprobeError(f"{path}: no tensors in this checkpoint")
    return flat


def _flatten(obj: object, prefix: str, out: dict[str, torch.Tensor]) -> None:
    if isinstance(obj, torch.Tensor):
        out[prefix.rstrip(".")] = obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            _flatten(value, f"{prefix}{key}.", out)


def _keys(names: list[str], shown: int = 5) -> str:
    more = f", ... {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _section(tensors: dict[str, torch.Tensor], checkpoint_key: str | None,
             where: str) -> tuple[str, dict[str, torch.Tensor]]:
    """The part of the checkpoint holding the weights, and its name ('' for the whole)."""
    tops = sorted({name.split(".", 1)[0] for name in tensors})
    if checkpoint_key is not None:
        chosen = checkpoint_key.strip(".")
        if not any(name.startswith(f"{chosen}.") for name in tensors):
            raise LeakprobeError(f"{where}: --checkpoint-key {checkpoint_key}: no such section; "
                                 f"the file has {_keys(tops, 10)}")
    else:
        chosen = next((s for s in SECTIONS if s in tops), "")
    if not chosen:
        return "", tensors
    n = len(chosen) + 1
    return chosen, {name[n:]: t for name, t in tensors.items() if name.startswith(f"{chosen}.")}


def _best_prefix(names: list[str], expected: set[str]) -> tuple[str, int]:
    """The prefix under which most expected tensors are found, and how many."""
    derived: set[str] = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts)):
            if ".".join(parts[i:]) in expected:
                derived.add(".".join(parts[:i]) + ".")
    candidates = list(KNOWN_PREFIXES) + sorted(derived - set(KNOWN_PREFIXES))
    best, best_hits = "", 0
    for prefix in candidates:
        hits = sum(1 for name in names
                   if name.startswith(prefix) and name[len(prefix):] in expected)
        if hits > best_hits:
            best, best_hits = prefix, hits
    return best, best_hits


def _is_head(name: str) -> bool:
    root = name.split(".", 1)[0]
    return root in HEAD_NAMES or root.startswith("decoder")


def _group(names: list[str], wrappers: set[str], section: str) -> str:
    """Ignored names grouped up to their first non-wrapper part ('state_dict.module.queue (1)'),
    other sections than ``section`` as a whole ('student (150)')."""
    counts: dict[str, int] = {}
    for name in names:
        parts = name.split(".")
        if section and parts[0] != section:
            parts = parts[:1]
        i = 0
        while i < len(parts) - 1 and parts[i] in wrappers:
            i += 1
        key = ".".join(parts[:i + 1])
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} ({v})" for k, v in counts.items())


def backbone_state(
    tensors: dict[str, torch.Tensor],
    expected: dict[str, torch.Tensor],
    *,
    arch: str,
    checkpoint_key: str | None = None,
    where: str = "checkpoint",
) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a model whose state is ``expected``, found in a flattened checkpoint.

    Args:
        tensors: the checkpoint's tensors by dotted name (:func:`read_checkpoint`).
        expected: the model's ``state_dict()``.
        arch: the architecture's name, for messages.
        checkpoint_key: the section to read (e.g. ``student`` in a DINO checkpoint).
        where: the file, for messages.
    Returns:
        The state dict to load strictly (optional tensors such as BatchNorm's
        ``num_batches_tracked`` filled from the model when the file lacks them), and a one-line
        summary of what was loaded and ignored.
    Raises:
        LeakprobeError: naming the missing, unexpected or reshaped tensors.
    """
    section, part = _section(tensors, checkpoint_key, where)
    names = list(part)
    prefix, hits = _best_prefix(names, set(expected))
    fix = (f"; is --arch {arch} the checkpoint's architecture? (for another architecture use "
           "--model file.py:factory)")
    if hits == 0:
        raise LeakprobeError(f"{where}: no tensor of architecture '{arch}' in this checkpoint "
                             f"(it wants {_keys(list(expected), 3)}; the file has "
                             f"{_keys(sorted(tensors), 3)}){fix}")
    state = {name[len(prefix):]: part[name] for name in names if name.startswith(prefix)}
    unexpected = sorted(n for n in state if n not in expected and not _is_head(n))
    missing = [n for n in expected if n not in state and not n.endswith(_OPTIONAL)]
    reshaped = [f"{n} {tuple(state[n].shape)} vs {tuple(t.shape)}" for n, t in expected.items()
                if n in state and tuple(state[n].shape) != tuple(t.shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} backbone tensors missing ({_keys(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors ({_keys(unexpected)})")
    if reshaped:
        problems.append(f"{len(reshaped)} tensors of another shape, file vs model "
                        f"({_keys(reshaped)})")
    if problems:
        raise LeakprobeError(f"{where}: does not fit architecture '{arch}' under "
                             f"'{section + '.' if section else ''}{prefix}': "
                             f"{'; '.join(problems)}{fix}")
    state = {n: t for n, t in state.items() if n in expected}
    for n, t in expected.items():
        state.setdefault(n, t)  # optional counters the file lacks
    source = f"{section}.{prefix}" if section else prefix
    used = {source + n for n in state}
    ignored = [name for name in tensors if name not in used]
    wrappers = {"module", *source.split(".")[:-1]}
    summary = (f"{where}: loaded {len(state)} tensors of '{arch}'"
               f"{f' from {source!r}' if source else ''}")
    if ignored:
        summary += f"; ignored {len(ignored)}: {_group(ignored, wrappers, section)}"
    return state, summary


def _stored_pos_grid(tensors: dict[str, torch.Tensor], model: torch.nn.Module) -> int | None:
    """The side of the patch grid a ViT checkpoint's ``pos_embed`` is stored for, when it is
    square and differs from ``model``'s (None otherwise)."""
    grid, pos = getattr(model, "grid", None), getattr(model, "pos_embed", None)
    if not isinstance(grid, int) or not isinstance(pos, torch.Tensor):
        return None
    for name, t in tensors.items():
        if (name == "pos_embed" or name.endswith(".pos_embed")) and t.dim() == 3 \
                and t.shape[-1] == pos.shape[-1]:
            side = math.isqrt(t.shape[1] - 1)
            return side if side * side == t.shape[1] - 1 and side != grid else None
    return None


def load_checkpoint_module(
    path: str | Path, arch: str, *, checkpoint_key: str | None = None
) -> torch.nn.Module:
    """Build the registered ``arch`` and load its backbone from a published checkpoint.

    Args:
        path: ``.pth`` / ``.pth.tar`` / ``.pt`` (read with ``weights_only=True``) or
            ``.safetensors``.
        arch: registered architecture (e.g. ``vit-small-patch16``, ``resnet50``).
        checkpoint_key: the section to read (DINO: ``teacher``, the default, or ``student``).
    Returns:
        The model in eval mode, with a one-line summary of what was loaded logged on stderr.
    Raises:
        LeakprobeError: unreadable or pickled file, or weights that do not fit ``arch``.
    """
    from leakprobe.progress import log

    tensors = read_checkpoint(path)
    model = create_model(arch)
    grid = _stored_pos_grid(tensors, model)
    if grid is not None:  # e.g. a ViT trained or fine-tuned at 384 px: keep its embeddings
        patch = int_attribute(model, "patch_size")
        model = create_model(arch, pos_grid=grid, input_size=grid * patch)
    state, summary = backbone_state(tensors, model.state_dict(), arch=arch,
                                    checkpoint_key=checkpoint_key, where=str(path))
    model.load_state_dict(state, strict=True)
    log(summary)
    return model.eval()
