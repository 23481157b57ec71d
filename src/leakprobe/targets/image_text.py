"""The query interface of an image-text model (a CLIP-style dual encoder), its adapter, and
``--model`` loading for it.

An image-text model embeds images and texts into one space: an attacker asks it for the
embedding of an image (:meth:`ImageTextModel.embed_images`) and of a caption
(:meth:`ImageTextModel.embed_texts`); both come back L2-normalised, so their dot product is
the model's cosine similarity. Each image and each text is one query.

:func:`load_image_text` accepts, in this order of detection:

- ``http(s)://host:port``: a service answering ``POST /v1/embed_images`` and
  ``POST /v1/embed_texts`` (``leakprobe serve image-text``), queried as a black box;
- ``hf:DIR``, or a folder holding a transformers ``config.json``: a Hugging Face CLIP
  (``model_type`` ``clip``) or SigLIP (``siglip``) ``save_pretrained`` folder with its
  tokenizer, loaded offline (``local_files_only``, safetensors weights only; needs the ``hf``
  extra); images are resized to the folder's input side and normalised with its
  ``preprocessor_config.json`` (else the family's defaults), texts tokenised by the folder's
  tokenizer, truncated and padded to the text tower's ``max_position_embeddings`` (as OpenAI's
  CLIP and SigLIP were trained; a text is then tokenised the same in any batch);
- a folder holding ``image_text.safetensors``: a model trained by leakprobe
  (:func:`leakprobe.training.image_text.load_trained_image_text`);
- ``package.module:factory`` or ``path/file.py:factory``: the factory returns an object (or an
  ``nn.Module``) with ``embed_images(images)`` and ``embed_texts(texts)``, at any scale.

Model files are read with safetensors only: nothing is unpickled.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from leakprobe.device import resolve_device
from leakprobe.errors import LeakprobeError
from leakprobe.precision import check_query_precision
from leakprobe.targets.base import TargetBase, check_images, first_line
from leakprobe.targets.batching import fixed_batch

__all__ = ["FORMS", "HF_IMAGE_TEXT_TYPES", "TRAINED_FILE", "HuggingFaceImageText",
           "ImageTextModel", "ModuleImageText", "check_texts", "load_hf_image_text_module",
           "load_image_text"]

#: The weights file of a folder written by leakprobe's image-text training recipe.
TRAINED_FILE = "image_text.safetensors"
#: What ``--model`` takes for an image-text model, for errors.
FORMS = ("a folder holding image_text.safetensors (leakprobe train image-text), hf:DIR or a "
         "folder with config.json (a Hugging Face CLIP or SigLIP save_pretrained folder), "
         "package.module:factory, path/file.py:factory, or http(s)://host:port")

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's, transformers' defaults
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

#: ``model_type`` -> (transformers class, default mean, default std).
HF_IMAGE_TEXT_TYPES: dict[str, tuple[str, tuple, tuple]] = {
    "clip": ("CLIPModel", CLIP_MEAN, CLIP_STD),
    "siglip": ("SiglipModel", SIGLIP_MEAN, SIGLIP_STD),
}
#: The files of which a Hugging Face folder needs one for its tokenizer (transformers would
#: otherwise build an empty default one, answering every text with unknown tokens).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "spiece.model", "tokenizer.model",
                   "sentencepiece.bpe.model", "vocab.txt")
#: Texts embedded (never counted) when a model is loaded, to check its text tower.
PROBE_TEXTS = ("a photo of a red circle", "two blue squares on a white background")


@runtime_checkable
class ImageTextModel(Protocol):
    """What an attacker can ask of an image-text (CLIP-style) model.

    Images are float tensors (B, 3, H, W) in [0, 1]; texts are strings. Embeddings are
    (B, D) float32 and L2-normalised, images and texts in the same D-dimensional space.
    """

    input_size: int

    @property
    def queries(self) -> int:
        """Images and texts embedded so far."""
        ...

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, D) float32, L2-normalised."""
        ...

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """B strings -> (B, D) float32, L2-normalised."""
        ...


def check_texts(texts: object) -> list[str]:
    """``texts`` as a list of strings, or a one-line error saying what it is instead."""
    if isinstance(texts, str):
        raise LeakprobeError("texts must be a list of strings, got one str (wrap it in a list)")
    if not isinstance(texts, (list, tuple)):
        raise LeakprobeError(f"texts must be a list of strings, got {type(texts).__name__}")
    kinds = sorted({type(t).__name__ for t in texts if not isinstance(t, str)})
    if kinds:
        raise LeakprobeError(f"texts must be a list of strings, got items of type "
                             f"{', '.join(kinds)}")
    return list(texts)


def _declared_device(obj: object) -> torch.device:
    """Where a plain object says it runs (its ``device`` attribute), else the CPU."""
    declared = getattr(obj, "device", None)
    if isinstance(declared, (str, torch.device)):
        try:
            return torch.device(declared)
        except (RuntimeError, TypeError):
            pass
    return torch.device("cpu")


class ModuleImageText(TargetBase):
    """Wrap any object (or ``nn.Module``) with ``embed_images`` and ``embed_texts`` as an
    :class:`ImageTextModel`.

    The model may answer at any scale: every embedding is checked (a finite (B, D) tensor,
    the same D for images and texts, not all zero) and L2-normalised here, as float32 on the
    CPU. Queries are resized to ``input_size``, split into batches of ``batch_size`` (texts
    too), run under ``torch.inference_mode`` in the query precision and counted, one query
    per image and per text, against an optional budget that is checked (and charged) before
    the model runs. The model is probed once on two images and two texts (not counted).

    An ``nn.Module`` is moved to ``device``; a plain object runs where it is, its images
    handed to it on its ``device`` attribute when it declares one, else on the CPU.

    Args:
        model: the model (``input_size`` is read from it when not given).
        input_size: square side the model expects (default: ``model.input_size`` or 32).
        device: where an ``nn.Module`` runs.
        batch_size: images (or texts) per model call, or ``"auto"`` (measured once on the
            image tower: :func:`~leakprobe.targets.batching.auto_batch_size`).
        budget: optional maximum number of images and texts queried.
        query_precision: ``fp32``, ``bf16`` (autocast; answers as float32) or ``auto``
            (bf16 where the device computes it natively).
        name: shown in reports and errors (default: the model's type name).

    Attributes:
        embed_dim: D, the size of both towers' embeddings.
    """

    kind = "image-text"
    probe_hint = " (set --image-size to what it expects)"
    resizes_queries = True  # embeddings depend on scale; the towers take one input side

    def __init__(
        self,
        model: object,
        *,
        input_size: int | None = None,
        device: str | torch.device = "cpu",
        batch_size: int | str = 64,
        budget: int | None = None,
        query_precision: str = "auto",
        name: str = "",
    ) -> None:
        self.name = name or type(model).__name__
        missing = [m for m in ("embed_images", "embed_texts")
                   if not callable(getattr(model, m, None))]
        if missing:
            raise LeakprobeError(f"model {self.name} has no "
                                 f"{' or '.join(f'{m}()' for m in missing)} method: an "
                                 "image-text model needs embed_images(images) and "
                                 "embed_texts(texts)")
        if isinstance(model, nn.Module):
            self.device = resolve_device(device)
            model = model.to(self.device).eval()
        else:
            self.device = _declared_device(model)
        self.model = model
        super().__init__(model, name=name, input_size=input_size, batch_size=batch_size,
                         budget=budget, query_precision=query_precision)
        self._embed_images: Callable = getattr(model, "embed_images")  # noqa: B009
        self._embed_texts: Callable = getattr(model, "embed_texts")  # noqa: B009
        self.embed_dim = 0  # unknown until the probe answers
        answer = self.check_output(self._probe_call(self._embed_images), 2)  # not counted
        self.embed_dim = int(answer.shape[1])
        self._probe_texts()
        self._settle(model, self._embed_images, answer)

    # ---- checks -----------------------------------------------------------------------------

    def _embeddings(self, out: object, n: int, what: str) -> torch.Tensor:
        """``out`` checked as ``n`` finite ``what`` embeddings of the model's size,
        L2-normalised float32."""
        emb = self._check_tensor(out, n, 2, f"(B,D) {what} embeddings")
        if self.embed_dim and emb.shape[1] != self.embed_dim:
            raise LeakprobeError(f"model {self.name} returned {what} embeddings of size "
                                 f"{emb.shape[1]}, but {self.embed_dim} for images: both "
                                 "towers must embed into one space")
        emb = emb.float()
        norms = emb.norm(dim=1, keepdim=True)
        if n and not bool((norms > 0).all()):
            raise LeakprobeError(f"model {self.name} returned an all-zero {what} embedding "
                                 "(it cannot be L2-normalised)")
        return emb / norms

    def check_output(self, out: object, n: int) -> torch.Tensor:
        """``n`` finite image embeddings, L2-normalised."""
        return self._embeddings(out, n, "image")

    def check_text_output(self, out: object, n: int) -> torch.Tensor:
        """``n`` finite text embeddings of the images' size, L2-normalised."""
        return self._embeddings(out, n, "text")

    # ---- texts --------------------------------------------------------------------------------

    def _run_texts(self, texts: list[str]) -> object:
        """``embed_texts(texts)`` as every query runs: inference mode, the query precision."""
        with torch.inference_mode(), self._precision():
            return self._embed_texts(texts)

    def _probe_texts(self) -> None:
        """Embed :data:`PROBE_TEXTS` once (not counted): a model whose text tower fails or
        answers another size than its image tower is refused (bf16 falls back to fp32)."""
        texts = list(PROBE_TEXTS)
        try:
            out = self._run_texts(texts)
        except Exception as e:  # user code
            if self.query_precision != "bf16":
                raise LeakprobeError(f"model {self.name} rejects texts: "
                                     f"{first_line(e)}") from e
            self.query_precision = "fp32"
            try:
                out = self._run_texts(texts)
            except Exception as e2:
                raise LeakprobeError(f"model {self.name} rejects texts: "
                                     f"{first_line(e2)}") from e2
        self.check_text_output(out, len(texts))

    # ---- queries ------------------------------------------------------------------------------

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, D) L2-normalised float32 (resized to ``input_size``)."""
        check_images(images)
        if images.shape[0] == 0:
            return torch.empty(0, self.embed_dim)
        return self._batched_tensor(self._embed_images, images)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """B strings -> (B, D) L2-normalised float32; each text is one query, all of them
        paid for before the first batch runs."""
        texts = check_texts(texts)
        self.counter.charge(len(texts), progress=False)
        pieces = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start:start + self.batch_size]
            pieces.append(self.check_text_output(self._run_texts(chunk), len(chunk)).cpu())
            self.counter.answered(len(chunk))
        return torch.cat(pieces) if pieces else torch.empty(0, self.embed_dim)


# ---- Hugging Face CLIP / SigLIP folders ---------------------------------------------------------


def _features(out: object, what: str) -> torch.Tensor:
    """The projected features of ``get_image_features`` / ``get_text_features``: a tensor
    (transformers 4.x) or a model output whose ``pooler_output`` holds them (5.x)."""
    if isinstance(out, torch.Tensor):
        return out
    for name in (f"{what}_embeds", "pooler_output"):
        value = getattr(out, name, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(out, (tuple, list)) and len(out) > 1 and isinstance(out[1], torch.Tensor):
        return out[1]  # (last_hidden_state, pooler_output, ...) of return_dict=False
    raise LeakprobeError(f"get_{what}_features returned {type(out).__name__}, which holds no "
                         "features")


class HuggingFaceImageText(nn.Module):
    """A transformers CLIP or SigLIP model behind :class:`ModuleImageText`'s contract.

    ``embed_images`` normalises images in [0, 1] with the folder's mean and std and returns
    ``get_image_features``; ``embed_texts`` tokenises texts padded to ``max_length`` and
    returns ``get_text_features`` (both unnormalised: the target normalises). Padding every
    text to the same length (as OpenAI's CLIP and SigLIP were trained) tokenises a text the
    same whatever batch it comes in.

    Args:
        model: the loaded ``CLIPModel`` / ``SiglipModel`` (eval mode, float32).
        tokenizer: its tokenizer (called with ``padding="max_length"``, ``truncation``,
            ``max_length``).
        input_size: square side queries are given at.
        mean: per-channel normalisation mean.
        std: per-channel normalisation std.
        max_length: the text tower's positions (texts are truncated and padded to it).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        input_size: int,
        mean: tuple,
        std: tuple,
        max_length: int,
    ) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.input_size = input_size
        self.max_length = max_length
        vision = getattr(getattr(model, "config", None), "vision_config", None)
        native = getattr(vision, "image_size", None)
        self.native_size = native if isinstance(native, int) else None
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.mean: torch.Tensor
        self.std: torch.Tensor

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> the normalised pixel values the model was trained on."""
        return (images - self.mean) / self.std

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, D) image features (``get_image_features``)."""
        kwargs: dict[str, Any] = {}
        if self.native_size is not None and tuple(images.shape[-2:]) != (self.native_size,) * 2:
            kwargs["interpolate_pos_encoding"] = True
        model: Any = self.model  # a CLIPModel / SiglipModel
        out = model.get_image_features(pixel_values=self.normalise(images), **kwargs)
        return _features(out, "image")

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """The text tower's inputs for ``texts`` (on the model's device)."""
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        return {k: enc[k].to(self.mean.device) for k in ("input_ids", "attention_mask")
                if k in enc}

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """B strings -> (B, D) text features (``get_text_features``)."""
        model: Any = self.model
        return _features(model.get_text_features(**self.tokenize(texts)), "text")


def _hf_error(spec: str, what: str, e: BaseException) -> LeakprobeError:
    return LeakprobeError(f"{spec}: cannot load {what} ({first_line(e)[:200]})")


def load_hf_image_text_module(spec: str) -> HuggingFaceImageText:
    """``hf:DIR`` / ``DIR`` (or a locally cached hub name) as a :class:`HuggingFaceImageText`.

    The folder's ``config.json`` must name ``model_type`` ``clip`` or ``siglip``; its weights
    must be safetensors (``pytorch_model.bin`` is refused), all present, and its tokenizer
    must load offline with ``AutoTokenizer``.
    """
    from leakprobe.targets import huggingface as hf

    folder = hf._resolve_folder(spec)
    raw = hf._read_json(folder / "config.json")
    model_type = raw.get("model_type")
    if model_type not in HF_IMAGE_TEXT_TYPES:
        raise LeakprobeError(f"{spec}: model_type {model_type!r} is not an image-text model "
                             f"(supported: {', '.join(HF_IMAGE_TEXT_TYPES)}); --model takes "
                             f"{FORMS}")
    class_name, mean, std = HF_IMAGE_TEXT_TYPES[model_type]
    transformers = hf._import_transformers()
    if not any(folder.glob("*.safetensors")):
        raise LeakprobeError(f"{spec}: no *.safetensors weights in {folder} (leakprobe never "
                             "unpickles pytorch_model.bin: re-save it with transformers 5)")
    try:
        with hf._quiet(transformers):
            model, info = getattr(transformers, class_name).from_pretrained(
                str(folder), local_files_only=True, dtype=torch.float32,
                output_loading_info=True, use_safetensors=True)
    except Exception as e:  # transformers raises OSError, ValueError, KeyError, ...
        raise _hf_error(spec, class_name, e) from e
    missing = list(info.get("missing_keys") or [])
    if missing:
        shown = ", ".join(sorted(missing)[:5])
        raise LeakprobeError(f"{spec}: {len(missing)} weights missing from the folder "
                             f"({shown}); they would be random")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise LeakprobeError(f"{spec}: no tokenizer in {folder} (expected one of "
                             f"{', '.join(TOKENIZER_FILES)}: save the model's tokenizer or "
                             "processor into the folder with save_pretrained)")
    try:
        with hf._quiet(transformers):
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder),
                                                                   local_files_only=True)
    except Exception as e:  # no tokenizer files, sentencepiece missing, ...
        raise _hf_error(spec, "its tokenizer (tokenizer.json or the files of its "
                        "tokenizer_config.json, beside config.json)", e) from e
    text_config = model.config.text_config
    vocab = getattr(text_config, "vocab_size", None)
    if isinstance(vocab, int) and len(tokenizer) > vocab:
        raise LeakprobeError(f"{spec}: the tokenizer has {len(tokenizer)} tokens but the text "
                             f"model {vocab}: they do not belong together")
    input_size, mean, std = hf._preprocessing(folder, model.config.vision_config, mean=mean,
                                              std=std)
    return HuggingFaceImageText(model.eval(), tokenizer, input_size=input_size, mean=mean,
                                std=std, max_length=int(text_config.max_position_embeddings))


# ---- --model SPEC ------------------------------------------------------------------------------


def _load_trained(folder: Path, device: torch.device) -> object:
    """A folder of leakprobe's image-text recipe, read by its own loader (imported here)."""
    try:
        from leakprobe.training.image_text import load_trained_image_text
    except ImportError as e:
        raise LeakprobeError(f"{folder}: holds {TRAINED_FILE}, but this leakprobe has no "
                             "image-text training recipe to read it") from e  # pragma: no cover
    return load_trained_image_text(folder, device=str(device))


def _not_a_model(spec: str, why: str) -> LeakprobeError:
    return LeakprobeError(f"{spec}: {why}; an image-text --model is {FORMS}")


def load_image_text(
    spec: str,
    *,
    device: str | torch.device = "cpu",
    batch_size: int | str = 64,
    budget: int | None = None,
    image_size: int | None = None,
    query_precision: str = "auto",
    arch: str | None = None,
) -> ImageTextModel:
    """An :class:`ImageTextModel` for ``--model SPEC`` (see the module docstring for the forms).

    Args:
        spec: URL, ``hf:DIR``, folder or entry point.
        device: where a local model runs (``auto``: the best available).
        batch_size: images (or texts) per call, or ``"auto"`` (a local module's is measured;
            HTTP services get 64, capped by their ``max_batch``).
        budget: optional budget of images and texts queried.
        image_size: input side (default: what the model declares, else 32).
        query_precision: ``auto``, ``fp32`` or ``bf16`` for a local model; an HTTP service
            answers in its own.
        arch: refused: image-text models are loaded without an architecture name.
    Raises:
        LeakprobeError: an unknown form, a missing folder, an unsupported ``model_type``,
            import or factory failures, bad models.
    """
    from leakprobe.targets.families import family
    from leakprobe.targets.loading import load_entry_point

    text = str(spec)
    dev = resolve_device(device)  # first: a bad --device is named before the model is read
    check_query_precision(query_precision)
    if arch is not None:
        raise LeakprobeError(f"--arch {arch}: image-text models are loaded without an "
                             "architecture name; drop --arch")
    if text.startswith(("http://", "https://")):
        return family("image-text").client(text, batch_size=fixed_batch(batch_size, 64),
                                           budget=budget, image_size=image_size)
    options: dict[str, Any] = {"input_size": image_size, "device": dev,
                               "batch_size": batch_size, "budget": budget,
                               "query_precision": query_precision, "name": text}
    path = Path(text)
    if text.startswith("hf:"):
        return ModuleImageText(load_hf_image_text_module(text), **options)
    if path.is_dir():
        if (path / TRAINED_FILE).is_file():
            return ModuleImageText(_load_trained(path, dev), **options)
        if (path / "config.json").is_file():
            return ModuleImageText(load_hf_image_text_module(text), **options)
        names = sorted(p.name for p in path.iterdir())[:6]
        raise _not_a_model(text, f"not an image-text model folder (it holds "
                                 f"{', '.join(names) or 'nothing'})")
    if ":" in text and not path.exists():
        obj = load_entry_point(text)
        if callable(getattr(obj, "embed_images", None)) and callable(
                getattr(obj, "embed_texts", None)):
            return ModuleImageText(obj, **options)
        kind = ("None (did the factory forget to return?)" if obj is None
                else type(obj).__name__)
        raise LeakprobeError(f"{text}: the factory returned {kind}, which has no "
                             "embed_images(images) and embed_texts(texts) methods")
    if path.exists():
        raise _not_a_model(text, "a file, not an image-text model")
    raise _not_a_model(text, "no such folder")
