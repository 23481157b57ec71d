"""Turn what a user passes as ``--model`` into an :class:`~leakprobe.targets.encoder.Encoder`.

Accepted, in this order of detection:
- a folder written by ``leakprobe train encoder`` (``encoder.safetensors`` inside);
- encoders only: ``hf:DIR``, or a folder with a transformers ``config.json`` (see
  :mod:`leakprobe.targets.huggingface`; needs ``leakprobe[hf]``, never downloads);
- ``*.safetensors``: weights of a registered architecture (``--arch``, or the architecture
  recorded in the file's metadata by leakprobe), or of the module a factory builds
  (``--arch file.py:factory``; a factory recorded in the file is run only when named so);
- ``*.pth`` / ``*.pth.tar`` / ``*.pt`` with ``--arch`` (and ``*.safetensors`` with a public
  architecture such as ``resnet50`` or ``vit-small-patch16``): a published self-supervised
  checkpoint (MoCo, DINO, MAE...), read with ``weights_only=True``
  (:mod:`leakprobe.targets.checkpoints`);
- ``package.module:factory`` or ``path/to/file.py:factory``: the factory returns an
  ``nn.Module`` (forward -> (B, D), optional ``tokens``) or an object with ``embed``;
- ``http(s)://host:port``: a service speaking leakprobe's HTTP protocol (black box);
- any other file: a TorchScript archive (``torch.jit.save``). Pickled checkpoints are
  refused: leakprobe never unpickles a model file.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from leakprobe.errors import LeakprobeError
from leakprobe.models import create_model
from leakprobe.models.public import PUBLIC_ARCHS
from leakprobe.precision import check_query_precision
from leakprobe.targets.batching import fixed_batch
from leakprobe.targets.checkpoints import is_torch_checkpoint, load_checkpoint_module
from leakprobe.targets.encoder import ModuleEncoder, ObjectEncoder
from leakprobe.targets.families import family


def _safetensors_arch(path: Path) -> tuple[str | None, dict]:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return meta.get("arch"), json.loads(meta.get("arch_kwargs", "{}"))


def load_safetensors_module(path: str | Path, arch: str | None = None) -> torch.nn.Module:
    """Build ``arch`` (or the file's recorded one) and load the weights strictly."""
    path = Path(path)
    try:
        recorded, kwargs = _safetensors_arch(path)
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise LeakprobeError(f"{path}: not a readable safetensors file ({e})") from e
    name = arch or recorded
    if not name:
        raise LeakprobeError(f"{path}: no architecture recorded in the file; pass --arch NAME")
    if is_factory_arch(name):
        if not arch:  # code a file names runs only when the user names it too
            raise LeakprobeError(f"{path}: weights of the factory architecture {name}; pass "
                                 f"--arch {name} to rebuild it (leakprobe runs no code that a "
                                 "model file names)")
        model = factory_module(name)
        if getattr(model, "input_size", None) is None and "input_size" in kwargs:
            model.input_size = int(kwargs["input_size"])  # type: ignore[assignment]  # an int
    else:
        if arch and recorded and arch != recorded:
            kwargs = {}
        model = create_model(name, **kwargs)
    mismatch = state_mismatch(model.state_dict(), state)
    if mismatch:
        fits = fitting_archs(state)
        hint = (f"they fit --arch {' or '.join(fits)}" if fits else
                "for your own architecture use --model file.py:factory")
        raise LeakprobeError(f"{path}: weights do not fit architecture '{name}': {mismatch}; "
                             f"{hint}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise LeakprobeError(f"{path}: weights do not fit architecture '{name}': {first}; "
                             "for your own architecture use --model file.py:factory") from e
    return model


def is_factory_arch(arch: str | None) -> bool:
    """Whether ``arch`` names a factory (``file.py:factory``, ``package.module:factory``)
    rather than a registered architecture (whose names hold no colon)."""
    return bool(arch) and ":" in str(arch)


def factory_module(spec: str, option: str = "--arch") -> torch.nn.Module:
    """The fresh ``nn.Module`` the factory ``spec`` builds (errors start with ``option``)."""
    try:
        built = load_entry_point(spec)
    except LeakprobeError as e:
        raise LeakprobeError(f"{option} {e}") from e
    if not isinstance(built, torch.nn.Module):
        kind = "None (did the factory forget to return?)" if built is None \
            else type(built).__name__
        raise LeakprobeError(f"{option} {spec}: the factory returned {kind}, not an nn.Module "
                             "(an architecture to train and load weights into)")
    return built


def fitting_archs(state: dict) -> list[str]:
    """The registered architectures (default options) whose every key and shape ``state``
    matches: built on the meta device, so no memory is allocated and none is initialised."""
    from leakprobe.models.registry import list_models

    fits = []
    for name in list_models():
        try:
            with torch.device("meta"):
                expected = create_model(name).state_dict()
        except Exception:  # an architecture that cannot be built bare is no candidate
            continue
        if not state_mismatch(expected, state):
            fits.append(name)
    return fits


def _keys(names: list[str], shown: int = 5) -> str:
    more = f", ... {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def state_mismatch(expected: dict, given: dict, shown: int = 5) -> str:
    """What keeps ``given`` from loading into a model whose state is ``expected`` ('' if ok)."""
    missing = [k for k in expected if k not in given]
    unexpected = sorted(k for k in given if k not in expected)
    reshaped = [f"{k} {tuple(given[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                if k in given and tuple(given[k].shape) != tuple(v.shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_keys(missing, shown)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_keys(unexpected, shown)})")
    if reshaped:
        parts.append(f"{len(reshaped)} keys of another shape, file vs model "
                     f"({_keys(reshaped, shown)})")
    return "; ".join(parts)


def load_torchscript(path: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a TorchScript archive; anything else (e.g. a pickled checkpoint) is refused."""
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise LeakprobeError(f"{path}: not a TorchScript archive or safetensors file")
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    if not any(n.endswith("constants.pkl") or "/code/" in n for n in names):
        raise LeakprobeError(
            f"{path}: a pickled torch checkpoint, not TorchScript; leakprobe never unpickles "
            "model files: export with torch.jit.script/trace, or save a safetensors state dict "
            "and pass --arch"
        )
    try:
        return torch.jit.load(str(path), map_location=device)
    except Exception as e:  # torch raises RuntimeError and others for corrupt archives
        raise LeakprobeError(f"{path}: cannot load as TorchScript ({str(e)[:200]})") from e


def load_entry_point(spec: str):
    """Call ``module:factory`` or ``file.py:factory`` and return what it builds."""
    target, _, attr = spec.rpartition(":")
    try:
        if target.endswith(".py"):
            file = Path(target)
            if not file.exists():
                raise LeakprobeError(f"{spec}: file {file} does not exist")
            mod_name = f"leakprobe_user_{file.stem}"
            loader = importlib.util.spec_from_file_location(mod_name, file)
            if loader is None or loader.loader is None:
                raise LeakprobeError(f"{spec}: {file} cannot be imported as a Python module")
            module = importlib.util.module_from_spec(loader)
            sys.modules[mod_name] = module
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except LeakprobeError:
        raise
    except Exception as e:  # user code: syntax errors, failing imports, anything
        raise LeakprobeError(f"{spec}: cannot import {target} ({type(e).__name__}: {e})") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise LeakprobeError(f"{spec}: {target} has no callable '{attr}'")
    try:
        built = factory()
    except Exception as e:
        raise LeakprobeError(f"{spec}: the factory failed ({type(e).__name__}: {e})") from e
    if isinstance(built, type):
        raise LeakprobeError(f"{spec}: the factory returned the class {built.__name__}, not an "
                             "instance; return a built model, e.g. return "
                             f"{built.__name__}()")
    return built


def returned(spec: str, obj: object, wanted: str) -> LeakprobeError:
    """The error for an entry point whose factory built the wrong kind of object."""
    kind = type(obj).__name__
    if obj is None:
        kind = "None (did the factory forget to return?)"
    return LeakprobeError(f"{spec}: the factory returned {kind}, which is neither an "
                          f"nn.Module nor an object with {wanted}")


def _unknown_folder(path: Path) -> str:
    """The error for a folder that is neither a train folder nor a Hugging Face folder: what
    it holds and which forms a folder can take."""
    names = sorted(p.name for p in path.iterdir())
    held = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "") \
        if names else "nothing"
    weights = {"model.safetensors", "pytorch_model.bin"} & set(names)
    if weights and "config.json" not in names:
        return (f"{path}: looks like a Hugging Face folder ({sorted(weights)[0]}) without "
                "config.json: put the model's config.json beside its weights and pass "
                f"hf:{path}")
    return (f"{path}: not a model folder (it holds {held}): a train folder holds "
            "encoder.safetensors or translator.safetensors, a Hugging Face folder "
            "config.json and its weights (hf:DIR)")


def load_model_module(
    spec: str, arch: str | None = None, device: str | torch.device = "cpu",
    *, checkpoint_key: str | None = None,
) -> torch.nn.Module | object:
    """The model behind ``spec`` (folder, safetensors, entry point or TorchScript file).

    With ``arch``, a ``.pth`` / ``.pth.tar`` / ``.pt`` checkpoint (or a ``.safetensors`` file for
    a public-layout architecture such as ``vit-small-patch16``) is read as a published
    checkpoint (:mod:`leakprobe.targets.checkpoints`; ``checkpoint_key`` picks its section).
    """
    path = Path(spec)
    if arch and (is_torch_checkpoint(path) or (path.suffix == ".safetensors"
                                               and arch in PUBLIC_ARCHS)):
        return load_checkpoint_module(path, arch, checkpoint_key=checkpoint_key)
    if checkpoint_key is not None:
        raise LeakprobeError(f"--checkpoint-key {checkpoint_key}: only for checkpoint files "
                             "(.pth, .pth.tar, .pt, .safetensors) loaded with --arch")
    if spec.startswith(("http://", "https://")):
        raise LeakprobeError(f"{spec}: HTTP targets are not supported yet by this command")
    if path.is_dir():
        for name in ("encoder.safetensors", "translator.safetensors"):
            if (path / name).exists():
                return load_safetensors_module(path / name, arch)
        raise LeakprobeError(_unknown_folder(path))
    if path.suffix == ".safetensors":
        if not path.exists():
            raise LeakprobeError(f"{path}: file not found")
        return load_safetensors_module(path, arch)
    if ":" in spec and not path.exists():
        return load_entry_point(spec)
    if not path.exists():
        raise LeakprobeError(f"{spec}: no such model file")
    return load_torchscript(path, device)


def load_encoder(
    spec: str,
    arch: str | None = None,
    image_size: int | None = None,
    device: str | torch.device = "auto",
    batch_size: int | str = 256,
    budget: int | None = None,
    checkpoint_key: str | None = None,
    *,
    query_precision: str = "auto",
):
    """An :class:`~leakprobe.targets.encoder.Encoder` for ``--model SPEC``.

    Args:
        spec: model file, folder, safetensors path, entry point.
        arch: registered architecture for safetensors weights.
        image_size: input side (default: what the model declares, else 32).
        device: where the model runs.
        batch_size: images per forward pass, or ``"auto"``: measured for a local model on
            its device (:func:`~leakprobe.targets.batching.auto_batch_size`); an HTTP
            service gets 256, capped by its ``max_batch``.
        budget: optional query budget.
        checkpoint_key: section of a published checkpoint read with ``arch`` (DINO:
            ``teacher``, the default, or ``student``).
        query_precision: ``auto`` (bf16 autocast where the device computes bf16 natively,
            fp32 elsewhere), ``fp32`` or ``bf16``; the target's ``query_precision`` says
            which ran. An HTTP service answers in its own precision (ignored).
    """
    from leakprobe.device import resolve_device

    dev = resolve_device(device)  # first: a bad --device is named before any model is read
    check_query_precision(query_precision)
    if spec.startswith(("http://", "https://")):
        return family("encoder").client(spec, batch_size=min(fixed_batch(batch_size, 256), 256),
                                        budget=budget, image_size=image_size)
    from leakprobe.targets import huggingface as hf  # transformers itself only when used

    if hf.is_hf_spec(spec) or hf.is_hf_folder(spec):  # after train folders (is_hf_folder)
        if arch:
            raise LeakprobeError(f"{spec}: --arch does not apply to Hugging Face folders "
                                 "(config.json names the architecture)")
        return ModuleEncoder(hf.load_hf_encoder_module(spec), image_size, dev, batch_size,
                             budget, name=str(spec), query_precision=query_precision)
    model = load_model_module(spec, arch, dev, checkpoint_key=checkpoint_key)
    if isinstance(model, torch.nn.Module):
        return ModuleEncoder(model, image_size, dev, batch_size, budget, name=str(spec),
                             query_precision=query_precision)
    if callable(getattr(model, "embed", None)):
        return ObjectEncoder(model, image_size, batch_size, budget, name=str(spec),
                             query_precision=query_precision)
    raise returned(spec, model, "embed(images)")


def load_translator(
    spec: str,
    arch: str | None = None,
    image_size: int | None = None,
    device: str | torch.device = "auto",
    batch_size: int | str = 64,
    budget: int | None = None,
    *,
    query_precision: str = "auto",
):
    """An :class:`~leakprobe.targets.image2image.ImageToImage` target for ``--model SPEC``.

    ``batch_size`` and ``query_precision`` are as for :func:`load_encoder` (an HTTP service
    gets 64 images per request for ``"auto"``).
    """
    from leakprobe.device import resolve_device
    from leakprobe.targets.image2image import ModuleTranslator

    dev = resolve_device(device)  # first: a bad --device is named before any model is read
    check_query_precision(query_precision)
    if spec.startswith(("http://", "https://")):
        return family("image2image").client(spec, batch_size=fixed_batch(batch_size, 64),
                                            budget=budget, image_size=image_size)
    model = load_model_module(spec, arch, dev)
    if isinstance(model, torch.nn.Module):
        return ModuleTranslator(model, image_size, dev, batch_size, budget, name=str(spec),
                                query_precision=query_precision)
    translate = getattr(model, "translate", None)
    if callable(translate):
        return ModuleTranslator(translate, image_size or getattr(model, "input_size", None),
                                "cpu", batch_size, budget, name=str(spec),
                                query_precision=query_precision)
    raise returned(spec, model, "translate(images)")
