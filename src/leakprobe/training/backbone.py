"""The backbone a recipe trains: a registered architecture or a user's factory, from random
initialisation or from given weights (``EncoderRecipe.arch`` and ``EncoderRecipe.init``).

- ``arch``: a registered name (``resnet-tiny``, :func:`~leakprobe.models.create_model`), or
  ``file.py:factory`` / ``package.module:factory``, imported by the loader of ``--model``
  entry points (:func:`~leakprobe.targets.loading.load_entry_point`: importing the user's
  file is what they asked for). The factory returns a fresh, untrained ``nn.Module`` mapping
  images (B, 3, H, W) in [0, 1] to embeddings (B, D). It is probed once, in eval mode, on a
  seeded (2, 3, S, S) batch: the SSL heads read ``embed_dim`` (taken from the probe, or from
  ``feat_dim``, where the module declares none) and saving reads ``input_size`` (S where the
  module declares none). A factory's encoder is saved as safetensors only (no TorchScript:
  user code need not script), and loading it names the factory again (``--arch``).
- ``init``: weights the backbone starts from instead of its random initialisation: a
  ``leakprobe train encoder`` folder or its ``encoder.safetensors``, any ``.safetensors``
  state dict, a published ``.pth`` / ``.pth.tar`` / ``.pt`` checkpoint of a public
  architecture (with that architecture's name as ``arch``), a TorchScript archive, or an
  entry point whose module's ``state_dict`` is taken. Loaded strictly: a mismatch names the
  keys, and the registered architectures the weights fit.

:func:`source_digests` hashes what ``arch`` and ``init`` read (the factory's source file,
the weights' bytes), so a cache keyed by it (the reference cache) retrains when they change.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from leakprobe.errors import LeakprobeError
from leakprobe.models import create_model
from leakprobe.models.public import PUBLIC_ARCHS
from leakprobe.targets.loading import (
    factory_module,
    fitting_archs,
    is_factory_arch,
    load_model_module,
    state_mismatch,
)

_PROBE_BATCH = 2


def build_backbone(recipe: Any, input_size: int, *, arch_option: str = "--arch",
                   init_option: str = "--init") -> nn.Module:
    """The backbone of ``recipe`` (an :class:`~leakprobe.training.encoder.EncoderRecipe`)
    for ``input_size`` images, with ``recipe.init``'s weights when given (not seeded here).

    Args:
        recipe: its ``arch``, ``arch_kwargs`` and ``init`` are read.
        input_size: the square side of the training images.
        arch_option, init_option: the options named in errors.
    Raises:
        LeakprobeError: one line: a factory that cannot be imported, builds no module or
            returns no (B, D) embeddings; init weights that cannot be read or do not fit.
    """
    arch = recipe.arch
    if is_factory_arch(arch):
        if recipe.arch_kwargs:
            raise LeakprobeError(f"{arch_option} {arch}: a factory takes no architecture "
                                 f"options (got {sorted(recipe.arch_kwargs)})")
        backbone = factory_backbone(arch, input_size, option=arch_option)
    else:
        backbone = create_model(arch, input_size=input_size, **recipe.arch_kwargs)
    init = getattr(recipe, "init", None)
    if init is not None:
        state = init_state(str(init), arch, option=init_option)
        load_init(backbone, state, str(init), arch, arch_option=arch_option,
                  init_option=init_option)
    return backbone


def factory_backbone(spec: str, input_size: int, *, option: str = "--arch") -> nn.Module:
    """Build the factory ``spec``'s module and probe it: (B, 3, S, S) -> (B, D).

    Sets ``embed_dim`` (D) and ``input_size`` (S) where the module declares none.
    """
    module = factory_module(spec, option)
    size = int(input_size)
    probe = torch.rand(_PROBE_BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    shape = f"({_PROBE_BATCH}, 3, {size}, {size})"
    was_training = module.training
    try:
        with torch.no_grad():
            out = module.eval()(probe)
    except Exception as e:  # user code: any error
        first = (str(e).splitlines() or [""])[0][:200]
        raise LeakprobeError(f"{option} {spec}: the module fails on a {shape} batch "
                             f"({type(e).__name__}: {first})") from e
    finally:
        module.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != _PROBE_BATCH:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise LeakprobeError(f"{option} {spec}: the module maps a {shape} batch to {got}; "
                             f"a backbone returns ({_PROBE_BATCH}, D) embeddings (pool or "
                             "flatten its features)")
    dim = int(out.shape[1])
    declared = _declared_dim(module)
    if declared is not None and declared != dim:
        raise LeakprobeError(f"{option} {spec}: the module declares embed_dim {declared} but "
                             f"returns {dim}-dimensional embeddings")
    if getattr(module, "embed_dim", None) is None:
        module.embed_dim = dim  # type: ignore[assignment]  # a plain int, as registered models
    if getattr(module, "input_size", None) is None:
        module.input_size = size  # type: ignore[assignment]
    return module


def _declared_dim(module: nn.Module) -> int | None:
    for name in ("embed_dim", "feat_dim"):
        value = getattr(module, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _weights_file(path: Path) -> Path | None:
    """The safetensors file behind an init path (a train folder's ``encoder.safetensors``)."""
    if path.is_dir():
        file = path / "encoder.safetensors"
        return file if file.is_file() else None
    return path if path.suffix == ".safetensors" else None


def init_state(init: str, arch: str, *, option: str = "--init") -> dict[str, torch.Tensor]:
    """The state dict of the init weights ``init`` for a backbone of ``arch``.

    A train folder or a ``.safetensors`` file is read as it is (unless ``arch`` is a public
    architecture, whose published layout is converted); anything else goes through the
    ``--model`` loader (with ``arch`` for published checkpoints) and its module's state.
    """
    path = Path(init)
    file = _weights_file(path)
    if path.is_dir() and file is None:
        raise LeakprobeError(f"{option} {init}: a folder without encoder.safetensors (a "
                             "`leakprobe train encoder` folder)")
    if file is not None and arch not in PUBLIC_ARCHS:
        if not file.is_file():
            raise LeakprobeError(f"{option} {init}: file not found")
        try:
            return load_file(str(file))
        except (SafetensorError, OSError, ValueError) as e:
            raise LeakprobeError(f"{option} {init}: not a readable safetensors file "
                                 f"({e})") from e
    try:
        model = load_model_module(init, None if is_factory_arch(arch) else arch)
    except LeakprobeError as e:
        raise LeakprobeError(f"{option} {e}") from e
    if not isinstance(model, nn.Module):
        raise LeakprobeError(f"{option} {init}: builds a {type(model).__name__}, not a torch "
                             "module whose weights a reference can start from")
    return dict(model.state_dict())


def load_init(backbone: nn.Module, state: dict[str, torch.Tensor], init: str, arch: str, *,
              arch_option: str = "--arch", init_option: str = "--init") -> None:
    """Copy ``state`` into ``backbone`` strictly, or name what does not fit."""
    mismatch = state_mismatch(backbone.state_dict(), state)
    if mismatch:
        fits = [a for a in fitting_archs(state) if a != arch]
        hint = f"; they fit {arch_option} {' or '.join(fits)}" if fits else ""
        raise LeakprobeError(f"{init_option} {init}: weights do not fit {arch_option} {arch}: "
                             f"{mismatch}{hint}")
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise LeakprobeError(f"{init_option} {init}: weights do not fit {arch_option} {arch}: "
                             f"{str(e).splitlines()[0]}") from e


def _entry_point_file(spec: str) -> Path | None:
    """The source file an entry point ``file.py:factory`` / ``package.module:factory`` runs."""
    target = spec.rpartition(":")[0]
    if target.endswith(".py"):
        return Path(target)
    try:
        found = importlib.util.find_spec(target)
    except Exception:  # a missing parent package, anything: then no digest
        return None
    origin = getattr(found, "origin", None) if found is not None else None
    return Path(origin) if origin and Path(origin).is_file() else None


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def spec_digest(spec: str) -> str | None:
    """SHA-256 of what ``spec`` reads: a file, a train folder's weights, or an entry point's
    source file (its own module only); None when there is none to read."""
    path = Path(spec)
    file = _weights_file(path) if path.is_dir() else path if path.is_file() else None
    if file is None and ":" in spec:
        file = _entry_point_file(spec)
    return _file_digest(file) if file is not None and file.is_file() else None


def source_digests(recipe: Any) -> dict[str, str | None]:
    """Digests of a recipe's factory and init weights (``{}`` for a registered architecture
    trained from scratch)."""
    out: dict[str, str | None] = {}
    if is_factory_arch(recipe.arch):
        out["arch_sha256"] = spec_digest(recipe.arch)
    init = getattr(recipe, "init", None)
    if init is not None:
        out["init_sha256"] = spec_digest(str(init))
    return out


def absolute_recipe(recipe: Any) -> Any:
    """``recipe`` with its factory file and init path made absolute (what other processes,
    such as Ray tasks, and the saved ``model.json`` need)."""
    changes: dict[str, str] = {}
    arch = recipe.arch
    if is_factory_arch(arch):
        target, _, attr = arch.rpartition(":")
        if target.endswith(".py"):
            changes["arch"] = f"{Path(target).resolve()}:{attr}"
    init = getattr(recipe, "init", None)
    if init is not None and Path(init).exists():
        changes["init"] = str(Path(init).resolve())
    return replace(recipe, **changes) if changes else recipe
