"""The demo job behind ``make demo``: train a target on built-in data, audit it, report."""

from __future__ import annotations

import time
from pathlib import Path

from leakprobe.data.captions import make_synthetic_captioned
from leakprobe.data.loaders import load_dataset
from leakprobe.data.paired import load_paired_folder
from leakprobe.data.splits import make_split
from leakprobe.progress import log
from leakprobe.report.html import render_reports
from leakprobe.targets.captioner import load_captioner
from leakprobe.targets.loading import load_encoder, load_translator
from leakprobe.training.captioning import train_target_captioner
from leakprobe.training.encoder import EncoderRecipe, train_target_encoder
from leakprobe.training.image2image import train_target_image2image
from leakprobe.training.trainer import TrainConfig
from leakprobe.workflows.audit import (
    audit_captioner,
    audit_encoder,
    audit_image2image,
    encoder_utility,
)

# Long training on few images without a projection head: a target that memorises its
# members, so the audit has leakage to find (see docs/getting-started.md).
DEMO_RECIPE = EncoderRecipe("simclr", "resnet-tiny", {}, (0.08, 1.0),
                            {"temperature": 0.2, "proj_dim": 0})


def run_demo(
    out: str | Path = "runs/demo",
    members: int = 128,
    epochs: int = 500,
    seed: int = 0,
    device: str = "auto",
    families: bool = True,
    amp: str | bool = "auto",
) -> dict:
    """Train a SimCLR ``resnet-tiny`` on ``members`` synthetic images and audit it.

    The target is deliberately trained long on few images (it memorises them), so the
    attacks have leakage to find; the blind attack shows the sets do not differ otherwise.
    Writes ``out/target/`` (weights, TorchScript, split) and ``out/report.json`` (the
    encoder audit). With ``families`` it also trains and audits a memorising U-Net
    (``out/image2image/``), captioner (``out/captioner/``) and CLIP-style image-text model
    (``out/image-text/``), and ``out/report.html`` shows the four audits on one page.
    ``amp``: bf16 autocast of every training (``auto``/``on``/``off``, see
    :mod:`leakprobe.precision`).

    Returns:
        The encoder audit report.
    """
    out = Path(out)
    t0 = time.time()
    data = load_dataset(f"synthetic:{2 * members}", 32, seed)
    split = make_split(data, members, seed=seed)
    config = TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, amp=amp, seed=seed,
                         device=device)
    log(f"demo: training SimCLR {DEMO_RECIPE.arch} on {members} synthetic images, {epochs} epochs")
    paths = train_target_encoder(split, DEMO_RECIPE, config, out / "target", resume=True)
    target = load_encoder(str(paths["weights"]), device=device)
    utility = encoder_utility(target, load_dataset("synthetic:1000:1", 32, seed + 1), seed)
    report = audit_encoder(
        target, split.members, split.nonmembers, attacks="partcrop,encodermi,lpla,baseline",
        seed=seed, out_dir=out, utility=utility,
        context={"model": str(paths["weights"]), "demo": True,
                 "train_seconds": round(time.time() - t0, 1)},
    )
    sections = [out / "report.json"]
    if families:
        sections += _demo_image2image(out / "image2image", seed, device, amp)
        sections += _demo_captioner(out / "captioner", seed, device, amp)
        sections += _demo_image_text(out / "image-text", seed, device, amp)
        render_reports(sections, out)  # one page: every family's section
    log(f"demo finished in {time.time() - t0:.0f}s")
    return report


def _demo_image2image(out: Path, seed: int, device: str, amp: str | bool) -> list[Path]:
    """A colourising U-Net trained long on 64 synthetic images, audited like the encoder."""
    data = load_dataset("synthetic:128", 32, seed)
    split = make_split(data, 64, seed=seed)
    config = TrainConfig(epochs=150, batch_size=32, lr=1e-3, amp=amp, seed=seed, device=device)
    log("demo: training a colourising U-Net on 64 synthetic images")
    paths = train_target_image2image(split, "colorize", "unet-small", config, out / "target",
                                     resume=True)
    target = load_translator(str(paths["torchscript"]), device=device)
    audit_image2image(target, load_paired_folder(paths["members"], target.input_size),
                      load_paired_folder(paths["nonmembers"], target.input_size), seed=seed,
                      out_dir=out, context={"model": str(paths["torchscript"]), "demo": True})
    return [out / "report.json"]


def _demo_captioner(out: Path, seed: int, device: str, amp: str | bool,
                    epochs: int = 300, extractor_epochs: int = 20) -> list[Path]:
    """A CNN-LSTM captioner trained ``epochs`` on 60 images; M4I with a shadow of the same
    training on other data."""
    data = make_synthetic_captioned(120, 32, seed)
    split = make_split(data, 60, seed=seed)
    config = TrainConfig(epochs=epochs, batch_size=32, lr=2e-3, amp=amp, seed=seed,
                         device=device)
    log("demo: training a CNN-LSTM captioner on 60 synthetic captioned images")
    paths = train_target_captioner(split, config, out / "target", resume=True)
    target = load_captioner(str(out / "target"), device=device)
    shadow = make_synthetic_captioned(240, 32, seed + 5)  # the attacker's own data
    audit_captioner(target, split.members, split.nonmembers, shadow_data=shadow, seed=seed,
                    out_dir=out, shadow_epochs=epochs, amp=amp, extractor_epochs=extractor_epochs,
                    context={"model": str(paths["model"].parent), "demo": True})
    return [out / "report.json"]


def _demo_image_text(out: Path, seed: int, device: str, amp: str | bool,
                     epochs: int = 60) -> list[Path]:
    """A small CLIP (resnet-tiny image tower, one-layer text transformer) trained ``epochs``
    on 64 synthetic image-caption pairs; clip-cosine, clip-rank and clip-augment against 96
    pairs it never saw, with the image-and-caption blind floor."""
    from leakprobe.data.captions import load_captioned_dataset
    from leakprobe.targets.families import load_target
    from leakprobe.training.image_text import train_target_image_text
    from leakprobe.workflows.image_text_audit import audit_image_text

    data = make_synthetic_captioned(160, 32, seed)
    split = make_split(data, 64, seed=seed)
    log("demo: training a CLIP-style image-text model on 64 synthetic captioned images")
    paths = train_target_image_text(split.members, out_dir=out / "target", epochs=epochs,
                                    lr=3e-3, seed=seed, device=device, amp=amp,
                                    nonmembers=split.nonmembers, resume=True)
    target = load_target(str(out / "target"), family="image-text", device=device)
    audit_image_text(target, load_captioned_dataset(str(paths["members"]), 32, seed),
                     load_captioned_dataset(str(paths["nonmembers"]), 32, seed), seed=seed,
                     out_dir=out, context={"model": str(out / "target"), "demo": True})
    return [out / "report.json"]
