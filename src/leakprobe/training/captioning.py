"""Train a CNN-LSTM captioning target on the member side of a split and save it.

Captions come from ``ImageSet.extras["captions"]``: one list of reference captions per image.
Each training step pairs every image of the batch with one of its references, drawn with the
trainer's seeded generator, and minimises the teacher-forced cross-entropy (``<pad>``
ignored).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from leakprobe.data.images import ImageSet
from leakprobe.data.splits import Split, save_manifest
from leakprobe.errors import LeakprobeError
from leakprobe.io import write_json
from leakprobe.models import captioner as _captioner  # noqa: F401  (registers cnn-lstm)
from leakprobe.models import create_model
from leakprobe.models.captioner import PAD_ID, CNNLSTMCaptioner
from leakprobe.models.serialization import export_torchscript, save_weights
from leakprobe.progress import log
from leakprobe.training.trainer import TrainConfig, Trainer

ARCH = "cnn-lstm"
MAX_LEN = 20


def reference_captions(data: ImageSet) -> list[list[str]]:
    """``extras["captions"]`` checked: one non-empty list of strings per image."""
    caps = data.extras.get("captions")
    if not isinstance(caps, list) or len(caps) != len(data):
        raise LeakprobeError("a captioner needs extras['captions']: one list of reference "
                             "captions per image")
    for i, refs in enumerate(caps):
        if (not isinstance(refs, list) or not refs
                or not all(isinstance(c, str) and c.strip() for c in refs)):
            raise LeakprobeError(f"image {data.ids[i]!r} has no usable reference captions "
                                 "(need a non-empty list of non-empty strings)")
    return caps


def captioner_kwargs(tokenizer: Any, image_size: int, arch_kwargs: dict | None = None) -> dict:
    """The ``cnn-lstm`` constructor kwargs for a tokenizer and image size (overrides last)."""
    return {"vocab_size": len(tokenizer), "input_size": int(image_size), "max_len": MAX_LEN,
            **(arch_kwargs or {})}


def encode_captions(tokenizer: Any, captions: list[str], max_len: int) -> torch.Tensor:
    """(C, max_len + 1) int64 ``<bos> ... <eos>`` sequences, padded (or cut) with ``<pad>``."""
    length = max_len + 1
    rows = []
    for text in captions:
        ids = [int(i) for i in tokenizer.encode(text, length)][:length]
        rows.append(ids + [PAD_ID] * (length - len(ids)))
    return torch.tensor(rows, dtype=torch.long).view(len(rows), length)


def train_captioner(
    data: ImageSet,
    tokenizer: Any,
    config: TrainConfig,
    arch_kwargs: dict | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    description: str = "captioner training",
) -> tuple[CNNLSTMCaptioner, list[float]]:
    """Train a ``cnn-lstm`` captioner on ``data`` (images + ``extras["captions"]``).

    Args:
        data: training images with their reference captions.
        tokenizer: fitted tokenizer (``encode``, ``__len__``).
        config: optimisation settings (``config.seed`` seeds initialisation and caption draws).
        arch_kwargs: ``cnn-lstm`` overrides (``embed_dim``, ``hidden``, ``width``, ``max_len``).
        checkpoint_dir: where the Trainer checkpoints (None: no checkpoints).
        resume: continue from the checkpoint.
        description: names the training's progress task.
    Returns:
        The trained model (eval mode, on the training device) and the loss per epoch.
    """
    refs = reference_captions(data)
    torch.manual_seed(config.seed)
    model = create_model(ARCH, **captioner_kwargs(tokenizer, data.image_size, arch_kwargs))
    if not isinstance(model, CNNLSTMCaptioner):  # what ARCH registers
        raise LeakprobeError(f"architecture {ARCH!r} is not a CNNLSTMCaptioner")
    trainer = Trainer(model, config, checkpoint_dir, description=description)
    device = trainer.device
    seqs = encode_captions(tokenizer, [c for r in refs for c in r], model.max_len).to(device)
    count = torch.tensor([len(r) for r in refs], dtype=torch.long)
    start = torch.cumsum(count, 0) - count
    images = data.images.to(device)
    vocab = model.vocab_size

    def loss_fn(idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        idx = idx.cpu()
        draw = (torch.rand(idx.shape[0], generator=generator) * count[idx]).long()
        pick = torch.minimum(draw, count[idx] - 1) + start[idx]
        seq = seqs[pick.to(device)]
        length = int((seq != PAD_ID).sum(dim=1).max())  # drop all-pad tail columns
        seq = seq[:, : max(length, 2)]
        logits = model(images[idx.to(device)], seq[:, :-1])
        return F.cross_entropy(logits.float().reshape(-1, vocab), seq[:, 1:].reshape(-1),
                               ignore_index=PAD_ID)

    history = trainer.fit(torch.arange(len(data)), loss_fn, resume=resume)
    return model.eval(), history


def train_target_captioner(
    split: Split,
    config: TrainConfig,
    out_dir: str | Path,
    arch_kwargs: dict | None = None,
    resume: bool = False,
) -> dict[str, Path]:
    """Train a captioning target on ``split.members`` and save everything an audit needs.

    The tokenizer is fitted on the members' captions only (non-member words map to
    ``<unk>``). Writes ``captioner.safetensors``, ``captioner.torchscript.pt``,
    ``tokenizer.json``, ``model.json`` (kind ``captioner``), ``split.json``, and both sides as
    COCO caption files ``members.json`` / ``nonmembers.json`` sharing an ``images/`` folder.

    Args:
        split: members (trained on) and non-members, both with ``extras["captions"]``.
        config: optimisation settings.
        out_dir: output folder.
        arch_kwargs: ``cnn-lstm`` overrides.
        resume: continue from ``out_dir/checkpoints``.
    Returns:
        Paths keyed ``weights``, ``torchscript``, ``tokenizer``, ``model``, ``split``,
        ``members``, ``nonmembers``, ``images``.
    """
    from leakprobe.data.captions import Tokenizer, save_coco_captions

    out = Path(out_dir)
    t0 = time.time()
    member_refs = reference_captions(split.members)
    reference_captions(split.nonmembers)
    manifest = save_manifest(split, out / "split.json", seed=config.seed)
    tokenizer = Tokenizer.fit([c for refs in member_refs for c in refs])
    model, history = train_captioner(
        split.members, tokenizer, config, arch_kwargs, out / "checkpoints", resume
    )
    model = model.cpu().eval()
    kwargs = captioner_kwargs(tokenizer, split.members.image_size, arch_kwargs)
    paths = {
        "weights": save_weights(model, out / "captioner.safetensors", ARCH, kwargs),
        "torchscript": export_torchscript(model, out / "captioner.torchscript.pt"),
        "tokenizer": write_json(out / "tokenizer.json", tokenizer.to_dict()),
    }
    meta = {"kind": "captioner", "arch": ARCH, "arch_kwargs": kwargs,
            "input_size": split.members.image_size, "vocab_size": len(tokenizer),
            "max_len": int(model.max_len), "loss_history": history, "train": config.to_dict(),
            "n_members": len(split.members), "n_nonmembers": len(split.nonmembers),
            "data": split.members.source, "train_seconds": round(time.time() - t0, 2)}
    paths["model"] = write_json(out / "model.json", json.loads(json.dumps(meta, default=str)))
    paths["split"] = manifest
    images_dir = out / "images"
    for side, data in (("members", split.members), ("nonmembers", split.nonmembers)):
        save_coco_captions(data, out / f"{side}.json", images_dir)
        paths[side] = out / f"{side}.json"
    paths["images"] = images_dir
    log(f"saved captioner to {out} ({time.time() - t0:.0f}s)")
    return paths
