"""Encoders stored as Hugging Face folders (``save_pretrained``), loaded offline.

``--model hf:DIR`` (or a bare ``DIR`` holding a ``config.json`` that is not a leakprobe train
folder) loads the model with ``transformers`` (the optional extra ``leakprobe[hf]``) and wraps
it in :class:`HuggingFaceEncoder`, an ``nn.Module`` with leakprobe's encoder contract
(``embed_dim``, ``input_size``, ``forward`` -> (B, D), ``tokens`` -> (B, L, D)) that
:class:`~leakprobe.targets.encoder.ModuleEncoder` wraps unchanged.

Supported ``model_type`` values (``config.json``) and what is exposed:

- ``vit``, ``dinov2``, ``dinov2_with_registers``, ``vit_mae``: embedding = the CLS token of
  ``last_hidden_state``, tokens = the patch tokens (register tokens left out; ViT-MAE runs its
  encoder with no masking and patches in their order);
- ``clip_vision_model``, ``clip``: embedding = ``image_embeds`` (after the projection), tokens =
  the patch tokens before it (another space: PartCrop's token attacks are refused);
- ``resnet``, ``convnext``: embedding = the pooled output, tokens = the last feature map as
  (B, h*w, C).

Inputs are float images in [0, 1]; the wrapper normalises them with the folder's
``preprocessor_config.json`` (``image_mean``/``image_std``, input size from ``crop_size`` or
``size``) when present, else ImageNet statistics and the config's ``image_size`` (or 224).
Nothing is ever downloaded: a name that is not a folder is looked up in the local Hugging Face
cache only. ``transformers`` is imported only when such a model is loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from leakprobe.errors import LeakprobeError

__all__ = ["HF_PREFIX", "SUPPORTED_MODEL_TYPES", "HuggingFaceEncoder", "is_hf_folder",
           "is_hf_spec", "load_hf_encoder_module"]

HF_PREFIX = "hf:"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = 224
TRAIN_FOLDER_FILES = ("encoder.safetensors", "translator.safetensors")

# model_type -> (transformers class, how outputs are read)
SUPPORTED_MODEL_TYPES: dict[str, tuple[str, str]] = {
    "vit": ("ViTModel", "vit"),
    "dinov2": ("Dinov2Model", "vit"),
    "dinov2_with_registers": ("Dinov2WithRegistersModel", "vit"),
    "vit_mae": ("ViTMAEModel", "mae"),
    "clip_vision_model": ("CLIPVisionModelWithProjection", "clip"),
    "clip": ("CLIPVisionModelWithProjection", "clip"),
    "resnet": ("ResNetModel", "cnn"),
    "convnext": ("ConvNextModel", "cnn"),
}
# families whose forward takes ``interpolate_pos_encoding`` (DINOv2 always interpolates)
_INTERPOLATING = {"ViTModel", "ViTMAEModel", "CLIPVisionModelWithProjection"}


def is_hf_spec(spec: str) -> bool:
    """Whether ``--model`` names a Hugging Face folder explicitly (``hf:DIR``)."""
    return spec.startswith(HF_PREFIX)


def is_hf_folder(path: str | Path) -> bool:
    """A folder with a ``config.json`` that is not a leakprobe train folder (those win)."""
    path = Path(path)
    return (path.is_dir() and (path / "config.json").is_file()
            and not any((path / name).exists() for name in TRAIN_FOLDER_FILES))


def _import_transformers() -> Any:
    """``transformers``, offline, or the one-line error naming the extra to install."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # before the import: the hub client reads it once
    try:
        import transformers
    except ImportError as e:
        raise LeakprobeError("Hugging Face models need transformers: "
                             "pip install leakprobe[hf]") from e
    return transformers


def _resolve_folder(spec: str) -> Path:
    """The local folder behind ``hf:DIR``, ``DIR`` or a hub name already in the local cache."""
    name = spec[len(HF_PREFIX):] if is_hf_spec(spec) else spec
    if not name:
        raise LeakprobeError(f"{spec}: name a folder after hf:, e.g. hf:path/to/dinov2-small")
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise LeakprobeError(f"{spec}: {path} has no config.json (expected a folder written "
                                 "by transformers' save_pretrained)")
        return path
    if path.exists():
        raise LeakprobeError(f"{spec}: {path} is a file, not a Hugging Face model folder")
    cached = _cached_snapshot(name)
    if cached is None:
        raise LeakprobeError(f"{spec}: no such folder, nor a model in the local Hugging Face "
                             "cache (leakprobe never downloads models)")
    return cached


def _cached_snapshot(name: str) -> Path | None:
    """The local-cache snapshot of hub model ``name`` (owner/model), never the network."""
    parts = name.split("/")
    if len(parts) != 2 or not all(parts) or name.startswith((".", "~")):
        return None
    _import_transformers()
    try:
        from huggingface_hub import snapshot_download

        found = Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not cached, malformed name: both mean "not here"
        return None
    return found if (found / "config.json").is_file() else None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LeakprobeError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(data, dict):
        raise LeakprobeError(f"{path}: expected a JSON object")
    return data


def _side(value: object) -> int | None:
    """A square side from a processor's ``size``/``crop_size`` entry (int or dict)."""
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, dict):
        for key in ("height", "shortest_edge", "width"):
            side = value.get(key)
            if isinstance(side, int) and side > 0:
                return side
    return None


def _preprocessing(folder: Path, config: Any, *, mean: tuple = IMAGENET_MEAN,
                   std: tuple = IMAGENET_STD) -> tuple[int, tuple, tuple]:
    """(input side, mean, std) from ``preprocessor_config.json``, else defaults (the
    config's ``image_size``; ``mean`` and ``std``: the model family's, ImageNet's unless
    given)."""
    native = getattr(config, "image_size", None)
    size = native if isinstance(native, int) and native > 0 else DEFAULT_SIZE
    file = folder / "preprocessor_config.json"
    if not file.is_file():
        return size, mean, std
    proc = _read_json(file)
    crop = _side(proc.get("crop_size")) if proc.get("do_center_crop", True) else None
    size = crop or _side(proc.get("size")) or size
    if proc.get("do_normalize", True) is False:
        return size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    mean = _triple(proc.get("image_mean"), mean, file, "image_mean")
    std = _triple(proc.get("image_std"), std, file, "image_std")
    return size, mean, std


def _triple(value: object, default: tuple, file: Path, key: str) -> tuple:
    if value is None:
        return default
    if isinstance(value, (int, float)):
        value = [value] * 3
    if (not isinstance(value, list) or len(value) != 3
            or not all(isinstance(v, (int, float)) for v in value)):
        raise LeakprobeError(f"{file}: {key} must be three numbers, got {value!r}")
    return tuple(float(v) for v in value)


class HuggingFaceEncoder(nn.Module):
    """A transformers vision model behind leakprobe's encoder contract.

    Args:
        model: the loaded transformers model (eval mode, float32).
        reader: how its outputs are read: ``vit``, ``mae``, ``clip`` or ``cnn``.
        input_size: square side queries are given at.
        mean: per-channel normalisation mean (inputs are in [0, 1]).
        std: per-channel normalisation std.
        embed_dim: size of the embedding ``forward`` returns.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        reader: str,
        input_size: int,
        mean: tuple,
        std: tuple,
        embed_dim: int,
    ) -> None:
        super().__init__()
        self.model = model
        self.reader = reader
        self.input_size = input_size
        self.embed_dim = embed_dim
        config = getattr(model, "config", None)
        native = getattr(config, "image_size", None)
        self.native_size = native if isinstance(native, int) else None
        self.interpolates = type(model).__name__ in _INTERPOLATING
        self.skip_tokens = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
        self.patch_size = int(getattr(config, "patch_size", 1) or 1)
        # ViT family: CLS and patch tokens leave the same final norm; ResNet: the embedding is
        # the tokens' mean; CLIP's tokens precede its projection, ConvNeXt's its final norm
        self.tokens_in_embedding_space = reader in ("vit", "mae") or (
            reader == "cnn" and type(model).__name__ == "ResNetModel")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.mean: torch.Tensor
        self.std: torch.Tensor

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the normalised pixel values the model was trained on."""
        return (images - self.mean) / self.std

    def _run(self, images: torch.Tensor) -> Any:
        pixels = self.normalise(images)
        kwargs: dict[str, Any] = {}
        h, w = pixels.shape[-2], pixels.shape[-1]
        if self.interpolates and (h, w) != (self.native_size, self.native_size):
            kwargs["interpolate_pos_encoding"] = True
        if self.reader == "mae":  # no masking, patches kept in their order
            n = (h // self.patch_size) * (w // self.patch_size)
            kwargs["noise"] = torch.arange(n, device=pixels.device, dtype=torch.float32)\
                .expand(pixels.shape[0], n)
        return self.model(pixel_values=pixels, **kwargs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, D) embeddings."""
        out = self._run(images)
        if self.reader == "clip":
            return out.image_embeds
        if self.reader == "cnn":
            return out.pooler_output.flatten(1)
        return out.last_hidden_state[:, 0]

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, L, D) patch tokens or feature-map positions."""
        out = self._run(images)
        if self.reader == "cnn":
            return out.last_hidden_state.flatten(2).transpose(1, 2)
        if self.reader == "clip":
            return out.last_hidden_state[:, 1:]
        return out.last_hidden_state[:, self.skip_tokens:]


@contextlib.contextmanager
def _quiet(transformers: Any) -> Iterator[None]:
    """No load report or progress bar from transformers (leakprobe reports what matters)."""
    logs = transformers.utils.logging
    verbosity, bars = logs.get_verbosity(), logs.is_progress_bar_enabled()
    logs.set_verbosity_error()
    logs.disable_progress_bar()
    try:
        yield
    finally:
        logs.set_verbosity(verbosity)
        if bars:
            logs.enable_progress_bar()


def _embed_dim(config: Any, reader: str) -> int:
    if reader == "clip":
        return int(config.projection_dim)
    if reader == "cnn":
        return int(config.hidden_sizes[-1])
    return int(config.hidden_size)


def load_hf_encoder_module(spec: str) -> HuggingFaceEncoder:
    """Load ``hf:DIR`` / ``DIR`` (or a locally cached hub name) as a :class:`HuggingFaceEncoder`.

    Weights must all be in the folder, as safetensors (pickled ``pytorch_model.bin`` files are
    refused); a model that would be partly randomly initialised is refused.
    """
    folder = _resolve_folder(spec)
    raw = _read_json(folder / "config.json")
    model_type = raw.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        supported = ", ".join(sorted(SUPPORTED_MODEL_TYPES))
        raise LeakprobeError(f"{spec}: model_type {model_type!r} is not supported for "
                             f"Hugging Face encoders (supported: {supported})")
    class_name, reader = SUPPORTED_MODEL_TYPES[model_type]
    transformers = _import_transformers()
    model_class = getattr(transformers, class_name)
    if not any(folder.glob("*.safetensors")):
        raise LeakprobeError(f"{spec}: no *.safetensors weights in {folder} (leakprobe never "
                             "unpickles pytorch_model.bin: re-save it with transformers 5)")
    kwargs: dict[str, Any] = {"local_files_only": True, "dtype": torch.float32,
                              "output_loading_info": True, "use_safetensors": True}
    if class_name == "ViTModel":
        kwargs["add_pooling_layer"] = False  # leakprobe reads the CLS token, not the pooler
    if model_type == "clip" and isinstance(raw.get("projection_dim"), int):
        kwargs["projection_dim"] = raw["projection_dim"]  # a full CLIP keeps it at the top
    try:
        with _quiet(transformers):
            model, info = model_class.from_pretrained(str(folder), **kwargs)
    except Exception as e:  # transformers raises OSError, ValueError, KeyError, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LeakprobeError(f"{spec}: cannot load {class_name} ({first[:200]})") from e
    missing = list(info.get("missing_keys") or [])
    if missing:
        shown = ", ".join(sorted(missing)[:5])
        raise LeakprobeError(f"{spec}: {len(missing)} weights missing from the folder "
                             f"({shown}); they would be random")
    if reader == "mae":
        model.config.mask_ratio = 0.0
    input_size, mean, std = _preprocessing(folder, model.config)
    return HuggingFaceEncoder(model.eval(), reader=reader, input_size=input_size, mean=mean,
                              std=std, embed_dim=_embed_dim(model.config, reader))
