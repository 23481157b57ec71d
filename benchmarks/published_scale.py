"""Wall time and queries of an audit at a published encoder's scale, through the CLI.

A ViT-S/16 in DINO's public layout (timm keys, random weights, seeded) saved as
``dino_vits16.pth`` and loaded with ``--arch vit-small-patch16`` at 224 px; N + N images from
two folders of 256-px JPEGs (made once); ``leakprobe audit encoder --attacks all`` run in a
fresh process. It prints wall time, the queries the report counts, and every attack's AUC,
and writes JSON. Point ``--leakprobe`` at another checkout's ``src`` (e.g. a worktree of an
older commit) to measure "before" with the same script:

    python benchmarks/published_scale.py --images 200 --json runs/bench/published_scale.json
    python benchmarks/published_scale.py --images 200 --leakprobe /tmp/old/src --label before

Extra CLI options for the audit go after ``--``, e.g. ``-- --query-precision bf16``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

FILE_SIZE = 256


def make_images(folder: Path, n: int, offset: int) -> Path:
    """``n`` distinct JPEGs (gradients + noise) in ``folder`` (made once)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:FILE_SIZE, 0:FILE_SIZE].astype(np.float32) / FILE_SIZE
    for i in range(n):
        path = folder / f"{offset + i:06d}.jpg"
        if path.exists():
            continue
        rng = np.random.default_rng(offset + i)
        a, b, c = rng.uniform(0, 255, 3)
        base = np.stack([a * xx, b * yy, c * (1 - xx * yy)], axis=-1)
        pixels = np.clip(base + rng.normal(0, 25, (FILE_SIZE, FILE_SIZE, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)
    return folder


def make_checkpoint(path: Path) -> Path:
    """DINO's ``dino_deitsmall16`` layout (a plain timm state dict), random weights."""
    if path.exists():
        return path
    import torch

    from leakprobe.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("vit-small-patch16")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=200, help="members (= non-members)")
    ap.add_argument("--attacks", default="all")
    ap.add_argument("--work", type=Path, default=Path("runs/bench/published_scale"))
    ap.add_argument("--leakprobe", default=None,
                    help="a checkout's src folder to run (default: the installed package)")
    ap.add_argument("--label", default="after")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("extra", nargs="*", help="more audit options (after --)")
    args = ap.parse_args()

    ckpt = make_checkpoint(args.work / "dino_vits16.pth")
    members = make_images(args.work / f"members{args.images}", args.images, 0)
    nonmembers = make_images(args.work / f"nonmembers{args.images}", args.images, 100_000)
    out = args.work / f"report-{args.label}-{args.images}"
    env = dict(os.environ, LEAKPROBE_PROGRESS="lines")
    if args.leakprobe:
        env["PYTHONPATH"] = args.leakprobe
    cmd = [sys.executable, "-m", "leakprobe.cli", "audit", "encoder", "--model", str(ckpt),
           "--arch", "vit-small-patch16", "--members", str(members), "--nonmembers",
           str(nonmembers), "--attacks", args.attacks, "--out", str(out), *args.extra]
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"audit failed ({proc.returncode}): {proc.stderr[-2000:]}")
    report = json.loads((out / "report.json").read_text())
    ctx = report["context"]
    aucs = {r["attack"]: round(r["metrics"]["auc"], 4) for r in report["results"]}
    row = {"label": args.label, "images": 2 * args.images, "attacks": args.attacks,
           "wall_seconds": round(wall, 1), "total_queries": ctx.get("total_queries"),
           "queries_without_sharing": ctx.get("query_plan", {}).get("queries_without_sharing"),
           "precision": ctx.get("precision", {}).get("queries"), "threads": ctx.get("threads"),
           "platform": ctx.get("platform"), "aucs": aucs, "extra_options": args.extra}
    print(f"{'label':<8} {'images':>6} {'queries':>8} {'wall s':>8}")
    print(f"{row['label']:<8} {row['images']:>6} {row['total_queries']:>8} {wall:>8.1f}")
    for name, value in aucs.items():
        print(f"  {name:<22} AUC {value:.4f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        rows = json.loads(args.json.read_text()) if args.json.exists() else []
        rows = [r for r in rows if (r["label"], r["images"]) != (args.label, row["images"])]
        args.json.write_text(json.dumps([*rows, row], indent=2) + "\n")


if __name__ == "__main__":
    main()
