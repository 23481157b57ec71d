"""The demo job behind ``make demo``: train a target on built-in data, audit it, report."""

from __future__ import annotations

import time
from pathlib import Path

from leakprobe.audits import audit_encoder, encoder_utility
from leakprobe.data.loaders import load_dataset
from leakprobe.data.splits import make_split
from leakprobe.progress import log
from leakprobe.targets.loading import load_encoder
from leakprobe.training.encoder import EncoderRecipe, train_target_encoder
from leakprobe.training.trainer import TrainConfig

# Long training on few images without a projection head: a target that memorises its
# members, so the audit has leakage to find (see the README's "demo" section).
DEMO_RECIPE = EncoderRecipe("simclr", "resnet-tiny", {}, (0.08, 1.0),
                            {"temperature": 0.2, "proj_dim": 0})


def run_demo(
    out: str | Path = "runs/demo",
    members: int = 128,
    epochs: int = 500,
    seed: int = 0,
    device: str = "auto",
) -> dict:
    """Train a SimCLR ``resnet-tiny`` on ``members`` synthetic images and audit it.

    The target is deliberately trained long on few images (it memorises them), so the
    attacks have leakage to find; the blind attack shows the sets do not differ otherwise.
    Writes ``out/target/`` (weights, TorchScript, split) and ``out/report.{json,html}``.
    """
    out = Path(out)
    t0 = time.time()
    data = load_dataset(f"synthetic:{2 * members}", 32, seed)
    split = make_split(data, members, seed=seed)
    config = TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, amp=True, seed=seed,
                         device=device)
    log(f"demo: training SimCLR {DEMO_RECIPE.arch} on {members} synthetic images, {epochs} epochs")
    paths = train_target_encoder(split, DEMO_RECIPE, config, out / "target", resume=True)
    target = load_encoder(str(paths["weights"]), device=device)
    utility = encoder_utility(target, load_dataset("synthetic:1000:1", 32, seed + 1), seed)
    report = audit_encoder(
        target, split.members, split.nonmembers, "partcrop,encodermi,lpla,baseline",
        seed=seed, out_dir=out, utility=utility,
        context={"model": str(paths["weights"]), "demo": True,
                 "train_seconds": round(time.time() - t0, 1)},
    )
    log(f"demo finished in {time.time() - t0:.0f}s")
    return report
