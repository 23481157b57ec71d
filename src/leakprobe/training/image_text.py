"""Train a small CLIP-style image-text dual encoder on captioned images and save it.

The recipe (CLIP: Radford et al., ICML 2021, "Learning Transferable Visual Models From
Natural Language Supervision"), scaled down to a CPU demo:

- **image tower**: a registered backbone (``resnet-tiny`` by default, `leakprobe models`)
  followed by a linear projection (no bias) to ``embed_dim``;
- **text tower**: word tokens (:class:`leakprobe.data.captions.Tokenizer`, fitted on the
  training captions; other words map to ``<unk>``) embedded with learned positions, a
  pre-norm transformer encoder (``text_layers`` layers, ``text_heads`` heads, no dropout),
  a final LayerNorm, the mean over the caption's non-pad tokens (CLIP reads the ``<eos>``
  token instead), and a linear projection (no bias) to ``embed_dim``;
- **objective**: CLIP's symmetric InfoNCE over the batch: the logits are the cosines of
  every image with every caption times ``exp(logit_scale)``, a learnable temperature
  initialised to 1/0.07 and clamped at 100 as in CLIP; cross-entropy image -> caption and
  caption -> image, averaged. Each step pairs every image of the batch with one of its
  reference captions, drawn with the trainer's seeded generator; images are not augmented
  (a small set trained long is memorised: what an audit must detect).

:func:`train_target_image_text` writes ``image_text.safetensors`` (the state dict, the model's
constructor arguments in its metadata), ``tokenizer.json`` and ``model.json`` (kind
``image-text``, the recipe, the loss per epoch), each atomically, ``model.json`` last;
:func:`load_trained_image_text` reads them back with safetensors only (nothing is unpickled).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from leakprobe.data.images import ImageSet
from leakprobe.errors import LeakprobeError
from leakprobe.io import write_json
from leakprobe.progress import log
from leakprobe.training.trainer import TrainConfig, Trainer

WEIGHTS_FILE = "image_text.safetensors"
TOKENIZER_FILE = "tokenizer.json"
MODEL_FILE = "model.json"
KIND = "image-text"
FORMAT = "leakprobe-image-text/1"  # the safetensors metadata's ``arch``
MAX_LOGIT_SCALE = 100.0  # CLIP clamps exp(logit_scale) at 100


@dataclass
class ImageTextRecipe:
    """The dual encoder's shape (recorded in ``model.json``).

    Attributes:
        arch: registered image backbone (`leakprobe models`).
        arch_kwargs: backbone overrides (``width``, ``norm``...).
        embed_dim: the joint embedding's size.
        text_width: token embedding and transformer width.
        text_layers: transformer encoder layers of the text tower.
        text_heads: attention heads (``text_width`` must be a multiple).
        max_len: tokens per caption, ``<bos>`` and ``<eos>`` included (longer ones are cut).
        temperature: the initial temperature (CLIP: 0.07); learned from there.
    """

    arch: str = "resnet-tiny"
    arch_kwargs: dict = field(default_factory=dict)
    embed_dim: int = 64
    text_width: int = 64
    text_layers: int = 1
    text_heads: int = 4
    max_len: int = 24
    temperature: float = 0.07


class DualEncoder(nn.Module):
    """A CLIP-style image tower and text tower projecting into one embedding space.

    :meth:`embed_images` and :meth:`embed_texts` answer as
    :class:`leakprobe.targets.image_text.ImageTextModel` asks: L2-normalised float32
    (B, ``embed_dim``) rows. Texts are tokenised with :attr:`tokenizer` (set by the trainer
    and the loader; it is not part of the state dict).

    Args:
        vocab_size: the tokenizer's vocabulary size.
        input_size: the square side the image tower takes (other sizes are resized).
        recipe_kwargs: the fields of :class:`ImageTextRecipe`.
    """

    def __init__(self, vocab_size: int, input_size: int = 32, **recipe_kwargs: Any) -> None:
        super().__init__()
        from leakprobe.models import create_model
        from leakprobe.models.registry import int_attribute

        recipe = ImageTextRecipe(**recipe_kwargs)
        if recipe.text_width % recipe.text_heads:
            raise LeakprobeError(f"text_width {recipe.text_width} is not a multiple of "
                                 f"text_heads {recipe.text_heads}")
        if recipe.max_len < 3:
            raise LeakprobeError(f"max_len must be >= 3, got {recipe.max_len}")
        self.recipe = recipe
        self.vocab_size = int(vocab_size)
        self.input_size = int(input_size)
        self.max_len = int(recipe.max_len)
        self.embed_dim = int(recipe.embed_dim)
        self.image_backbone = create_model(recipe.arch, input_size=self.input_size,
                                           **recipe.arch_kwargs)
        width = int_attribute(self.image_backbone, "embed_dim")
        self.image_projection = nn.Linear(width, recipe.embed_dim, bias=False)
        self.token_embedding = nn.Embedding(self.vocab_size, recipe.text_width, padding_idx=0)
        self.position_embedding = nn.Parameter(0.01 * torch.randn(recipe.max_len,
                                                                   recipe.text_width))
        layer = nn.TransformerEncoderLayer(recipe.text_width, recipe.text_heads,
                                           2 * recipe.text_width, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.text_transformer = nn.TransformerEncoder(layer, recipe.text_layers,
                                                      enable_nested_tensor=False)
        self.text_norm = nn.LayerNorm(recipe.text_width)
        self.text_projection = nn.Linear(recipe.text_width, recipe.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / recipe.temperature)))
        self.tokenizer: Any = None

    def constructor_kwargs(self) -> dict[str, Any]:
        """What rebuilds this model (saved in the safetensors metadata and ``model.json``)."""
        return {"vocab_size": self.vocab_size, "input_size": self.input_size,
                **asdict(self.recipe)}

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, embed_dim), not normalised."""
        if images.shape[-1] != self.input_size or images.shape[-2] != self.input_size:
            images = F.interpolate(images, size=(self.input_size, self.input_size),
                                   mode="bilinear", align_corners=False, antialias=True)
        return self.image_projection(self.image_backbone(images))

    def encode_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids (``<pad>`` = 0) -> (B, embed_dim), not normalised."""
        ids = ids[:, : self.max_len]
        pad = ids == 0
        x = self.token_embedding(ids) + self.position_embedding[: ids.shape[1]]
        x = self.text_norm(self.text_transformer(x, src_key_padding_mask=pad))
        keep = (~pad).unsqueeze(-1).to(x.dtype)
        pooled = (x * keep).sum(1) / keep.sum(1).clamp_min(1.0)
        return self.text_projection(pooled)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """(B, max_len) ids of ``texts`` with :attr:`tokenizer`, on the model's device."""
        if self.tokenizer is None:
            raise LeakprobeError("the image-text model has no tokenizer (load it with "
                                 "load_trained_image_text)")
        return self.tokenizer.encode_batch(list(texts), self.max_len).to(self.device)

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Normalised image and caption embeddings and the logit scale (training)."""
        img = F.normalize(self.encode_images(images).float(), dim=-1)
        txt = F.normalize(self.encode_tokens(ids).float(), dim=-1)
        return img, txt, self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, embed_dim) float32, L2-normalised."""
        x = images.to(self.device, torch.float32)
        return F.normalize(self.encode_images(x).float(), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """B captions -> (B, embed_dim) float32, L2-normalised."""
        if isinstance(texts, str):
            raise LeakprobeError("embed_texts takes a list of captions, not one string")
        if not texts:
            return torch.zeros(0, self.embed_dim)
        return F.normalize(self.encode_tokens(self.tokenize(texts)).float(), dim=-1)


def clip_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: row i of ``img`` and of ``txt`` are a pair.

    ``img`` and ``txt`` are L2-normalised (B, D); the logits are ``scale * img @ txt.T``.
    """
    logits = scale * img @ txt.T
    labels = torch.arange(img.shape[0], device=img.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def reference_captions(data: ImageSet) -> list[list[str]]:
    """``extras["captions"]`` checked: one non-empty list of non-empty strings per image."""
    from leakprobe.training.captioning import reference_captions as checked

    return checked(data)


def train_image_text(
    data: ImageSet,
    tokenizer: Any,
    config: TrainConfig,
    recipe: ImageTextRecipe | None = None,
    *,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    description: str = "image-text training",
) -> tuple[DualEncoder, list[float]]:
    """Train a :class:`DualEncoder` on ``data`` (images + ``extras["captions"]``).

    Args:
        data: training images with their reference captions.
        tokenizer: a fitted :class:`~leakprobe.data.captions.Tokenizer`.
        config: optimisation settings (``config.seed`` seeds initialisation and the
            caption draws).
        recipe: the model's shape (default :class:`ImageTextRecipe`).
        checkpoint_dir: where the Trainer checkpoints (None: no checkpoints).
        resume: continue from the checkpoint.
        description: names the training's progress task.
    Returns:
        The trained model (eval mode, on the training device, ``tokenizer`` set) and the
        loss per epoch.
    """
    refs = reference_captions(data)
    recipe = recipe or ImageTextRecipe()
    torch.manual_seed(config.seed)
    model = DualEncoder(len(tokenizer), data.image_size, **asdict(recipe))
    model.tokenizer = tokenizer
    trainer = Trainer(model, config, checkpoint_dir, description=description)
    device = trainer.device
    flat = [c for r in refs for c in r]
    ids = tokenizer.encode_batch(flat, model.max_len).to(device)
    count = torch.tensor([len(r) for r in refs], dtype=torch.long)
    start = torch.cumsum(count, 0) - count
    images = data.images.to(device)

    def loss_fn(idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        idx = idx.cpu()
        draw = (torch.rand(idx.shape[0], generator=generator) * count[idx]).long()
        pick = torch.minimum(draw, count[idx] - 1) + start[idx]
        seq = ids[pick.to(device)]
        length = int((seq != 0).sum(dim=1).max())  # drop all-pad tail columns
        img, txt, scale = model(images[idx.to(device)], seq[:, : max(length, 1)])
        return clip_loss(img, txt, scale)

    history = trainer.fit(torch.arange(len(data)), loss_fn, resume=resume)
    return model.eval(), history


def train_target_image_text(
    data: ImageSet,
    *,
    out_dir: str | Path,
    epochs: int = 200,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    device: str = "auto",
    arch: str = "resnet-tiny",
    embed_dim: int = 64,
    arch_kwargs: dict | None = None,
    amp: str | bool = "auto",
    nonmembers: ImageSet | None = None,
    resume: bool = False,
    description: str = "image-text training",
) -> dict[str, Path]:
    """Train an image-text target on ``data`` (its members) and save what an audit needs.

    The tokenizer is fitted on ``data``'s captions only. Writes ``image_text.safetensors``,
    ``tokenizer.json`` and ``model.json`` (kind ``image-text``, written last, so a folder
    with a ``model.json`` is complete). With ``nonmembers`` (images the model never saw,
    captioned and preprocessed identically), both sides are written as COCO caption files
    ``members.json`` / ``nonmembers.json`` sharing an ``images/`` folder, and
    ``split.json`` when both come from one data spec: ready for ``leakprobe audit
    image-text``.

    Args:
        data: the training images with ``extras["captions"]``.
        out_dir: output folder.
        epochs, batch_size, lr, seed, device, amp: optimisation settings
            (:class:`~leakprobe.training.trainer.TrainConfig`).
        arch: the image backbone; ``arch_kwargs`` its overrides.
        embed_dim: the joint embedding's size.
        nonmembers: held-out captioned images to save beside the model.
        resume: continue from ``out_dir/checkpoints``.
        description: names the training's progress task.
    Returns:
        Paths keyed ``weights``, ``tokenizer``, ``model`` (and ``members``, ``nonmembers``,
        ``images``, ``split`` with ``nonmembers``).
    """
    from leakprobe.data.captions import Tokenizer, save_coco_captions
    from leakprobe.models.serialization import save_weights

    out = Path(out_dir)
    t0 = time.time()
    refs = reference_captions(data)
    if nonmembers is not None:
        reference_captions(nonmembers)
    recipe = ImageTextRecipe(arch=arch, arch_kwargs=dict(arch_kwargs or {}),
                             embed_dim=embed_dim)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, amp=amp, seed=seed,
                         device=device)
    tokenizer = Tokenizer.fit([c for r in refs for c in r])
    model, history = train_image_text(data, tokenizer, config, recipe,
                                      checkpoint_dir=out / "checkpoints", resume=resume,
                                      description=description)
    model = model.cpu().eval()
    kwargs = model.constructor_kwargs()
    paths: dict[str, Path] = {
        "weights": save_weights(model, out / WEIGHTS_FILE, FORMAT, kwargs),
        "tokenizer": write_json(out / TOKENIZER_FILE, tokenizer.to_dict()),
    }
    if nonmembers is not None:
        images_dir = out / "images"
        for side, part in (("members", data), ("nonmembers", nonmembers)):
            paths[side] = save_coco_captions(part, out / f"{side}.json", images_dir)
        paths["images"] = images_dir
        if data.source and data.source == nonmembers.source:
            from leakprobe.data.splits import Split, save_manifest

            paths["split"] = save_manifest(Split(data, nonmembers), out / "split.json", seed)
    meta = {"kind": KIND, "arch": FORMAT, "model_kwargs": kwargs,
            "recipe": asdict(recipe), "input_size": data.image_size,
            "embed_dim": embed_dim, "vocab_size": len(tokenizer),
            "temperature": float(1.0 / model.logit_scale.detach().exp().clamp(max=MAX_LOGIT_SCALE)),
            "loss_history": history, "train": config.to_dict(), "n_members": len(data),
            "n_nonmembers": None if nonmembers is None else len(nonmembers),
            "data": data.source, "train_seconds": round(time.time() - t0, 2)}
    paths["model"] = write_json(out / MODEL_FILE, json.loads(json.dumps(meta, default=str)))
    log(f"saved image-text model to {out} ({time.time() - t0:.0f}s)")
    return paths


def is_trained_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding ``image_text.safetensors``."""
    p = Path(path)
    return p.is_dir() and (p / WEIGHTS_FILE).is_file()


def load_trained_image_text(folder: str | Path, *,
                            device: str | torch.device = "cpu") -> DualEncoder:
    """The :class:`DualEncoder` a :func:`train_target_image_text` folder holds.

    Reads ``image_text.safetensors`` (its metadata rebuilds the model) and
    ``tokenizer.json`` with safetensors and JSON only; ``model.json``, when present, must say
    kind ``image-text``.

    Args:
        folder: the folder (``image_text.safetensors``, ``tokenizer.json``).
        device: where the model runs (``auto``, ``cpu``, ``cuda``...).
    Returns:
        The model in eval mode on ``device``, with ``embed_images``, ``embed_texts`` and
        ``input_size``.
    Raises:
        LeakprobeError: a missing or unreadable file, a foreign model.json or weights that do
            not fit the recorded architecture.
    """
    from safetensors import SafetensorError, safe_open

    from leakprobe.data.captions import Tokenizer
    from leakprobe.device import resolve_device

    path = Path(folder)
    weights, tok_path, meta_path = path / WEIGHTS_FILE, path / TOKENIZER_FILE, path / MODEL_FILE
    for needed in (weights, tok_path):
        if not needed.is_file():
            raise LeakprobeError(f"{path}: no {needed.name} (not a folder written by "
                                 "`leakprobe train image-text`)")
    if meta_path.is_file():
        meta = _read_json(meta_path)
        if not isinstance(meta, dict) or meta.get("kind") != KIND:
            kind = meta.get("kind") if isinstance(meta, dict) else None
            raise LeakprobeError(f"{meta_path}: kind {kind!r}, not an image-text model")
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            info = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError) as e:
        raise LeakprobeError(f"{weights}: cannot read safetensors ({e})") from e
    if info.get("arch") != FORMAT:
        raise LeakprobeError(f"{weights}: not leakprobe image-text weights (arch "
                             f"{info.get('arch')!r})")
    try:
        kwargs = json.loads(info.get("arch_kwargs", ""))
    except json.JSONDecodeError as e:
        raise LeakprobeError(f"{weights}: unreadable model arguments in its metadata") from e
    if not isinstance(kwargs, dict):
        raise LeakprobeError(f"{weights}: unreadable model arguments in its metadata")
    tokenizer = Tokenizer.from_dict(_read_json(tok_path))
    try:
        model = DualEncoder(**kwargs)
    except TypeError as e:
        raise LeakprobeError(f"{weights}: model arguments do not fit ({e})") from e
    if len(tokenizer) != model.vocab_size:
        raise LeakprobeError(f"{tok_path}: {len(tokenizer)} words but the weights have "
                             f"{model.vocab_size}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise LeakprobeError(f"{weights}: weights do not fit the model ({first})") from e
    model.tokenizer = tokenizer
    return model.to(resolve_device(device)).eval()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LeakprobeError(f"{path}: cannot read JSON ({e})") from e
