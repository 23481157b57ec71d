"""Peak memory of an audit as the image folder grows: streamed sets keep it flat.

For each size N it writes N distinct 256-px JPEGs (half members, half non-members; made
once and reused), then audits a 224-px encoder (a small strided conv net, so the model is
not what is measured) with a cheap attack (``baseline-norm``, plus the blind floor every
audit runs) in a fresh process, and records that process's peak RSS (``ru_maxrss``) and the
decoding workers' peak. It prints a table and the ratio of the largest to the smallest N
(target: <= 1.3), and writes JSON.

    python benchmarks/memory.py --sizes 1000,5000,20000 --json benchmarks/results/memory.json

``--in-memory`` also runs the smallest size with every image decoded into one float tensor
(the loader's ``stream=False``), the pre-streaming behaviour, for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

IMAGE_SIZE = 224  # the encoder's input side
FILE_SIZE = 256  # the side of the JPEGs on disk


def make_images(folder: Path, n: int) -> Path:
    """``n`` distinct JPEGs in ``folder/all`` (noise over gradients; made once)."""
    import numpy as np
    from PIL import Image

    out = folder / "all"
    out.mkdir(parents=True, exist_ok=True)
    have = len(list(out.glob("*.jpg")))
    yy, xx = np.mgrid[0:FILE_SIZE, 0:FILE_SIZE].astype(np.float32) / FILE_SIZE
    for i in range(have, n):
        rng = np.random.default_rng(i)
        a, b, c = rng.uniform(0, 255, 3)
        base = np.stack([a * xx, b * yy, c * (1 - xx * yy)], axis=-1)
        noise = rng.normal(0, 25, (FILE_SIZE, FILE_SIZE, 3))
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(out / f"{i:06d}.jpg", quality=90)
    return out


def split_folders(folder: Path, pool: Path, n: int) -> tuple[Path, Path]:
    """``members`` / ``nonmembers`` folders of N/2 symbolic links each into ``pool``."""
    sides = []
    for k, side in enumerate(("members", "nonmembers")):
        d = folder / f"n{n}" / side
        d.mkdir(parents=True, exist_ok=True)
        for i in range(k * (n // 2), (k + 1) * (n // 2)):
            link = d / f"{i:06d}.jpg"
            if not link.exists():
                link.symlink_to(pool / f"{i:06d}.jpg")
        sides.append(d)
    return sides[0], sides[1]


def workers_peak_mb() -> float:
    """Largest peak RSS (VmHWM) of the live decoding workers (RUSAGE_CHILDREN would report
    the parent's size at spawn time: Linux keeps the high-water mark across fork + exec)."""
    from leakprobe.data import stream

    peak = 0.0
    for pool in stream._pool.values():
        for pid in list(getattr(pool, "_processes", {}) or {}):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
    return peak


def child(members: str, nonmembers: str, in_memory: bool) -> dict:
    """One audit in this (fresh) process; its peak RSS."""
    import torch

    from leakprobe.data.loaders import load_image_folder
    from leakprobe.targets.encoder import ModuleEncoder
    from leakprobe.workflows.audit import audit_encoder

    torch.manual_seed(0)
    model = torch.nn.Sequential(  # 224 px -> 28 x 28 x 16 -> 64: cheap next to decoding
        torch.nn.Conv2d(3, 16, 8, stride=8), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(256, 64)).eval()
    model.input_size = IMAGE_SIZE  # type: ignore[assignment]
    target = ModuleEncoder(model, device="cpu")
    t0 = time.perf_counter()
    m = load_image_folder(members, IMAGE_SIZE, stream=not in_memory)
    n = load_image_folder(nonmembers, IMAGE_SIZE, stream=not in_memory)
    report = audit_encoder(target, m, n, attacks="baseline-norm", permutations=0, seed=0)
    seconds = time.perf_counter() - t0
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "workers_peak_rss_mb": workers_peak_mb(),
            "seconds": round(seconds, 1),
            "auc": {r["attack"]: r["metrics"]["auc"] for r in report["results"]}}


def run(n: int, members: Path, nonmembers: Path, in_memory: bool, timeout: int) -> dict:
    env = {**os.environ, "LEAKPROBE_PROGRESS": "0", "LEAKPROBE_QUIET": "1"}
    cmd = [sys.executable, __file__, "--child", str(members), str(nonmembers)]
    if in_memory:
        cmd.append("--in-memory")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"audit of {n} images failed:\n{done.stderr[-2000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    return {"n_images": n, "mode": "in-memory" if in_memory else "streamed", **row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,5000,20000")
    parser.add_argument("--workdir", default="/tmp/leakprobe-memory-bench")
    parser.add_argument("--json", default="benchmarks/results/memory.json")
    parser.add_argument("--in-memory", action="store_true",
                        help="also run the smallest size decoded into memory (comparison)")
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument("--child", nargs=2, metavar=("MEMBERS", "NONMEMBERS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, in_memory=args.in_memory)))
        return
    sizes = sorted(int(s) for s in args.sizes.split(","))
    work = Path(args.workdir)
    print(f"writing up to {sizes[-1]} JPEGs ({FILE_SIZE} px) to {work} ...", flush=True)
    pool = make_images(work, sizes[-1])
    rows = []
    for n in sizes:
        members, nonmembers = split_folders(work, pool, n)
        rows.append(run(n, members, nonmembers, False, args.timeout))
        print(f"  {n} images: {rows[-1]['peak_rss_mb']:.0f} MB", flush=True)
    if args.in_memory:
        members, nonmembers = split_folders(work, pool, sizes[0])
        rows.append(run(sizes[0], members, nonmembers, True, args.timeout))
    streamed = [r for r in rows if r["mode"] == "streamed"]
    ratio = streamed[-1]["peak_rss_mb"] / streamed[0]["peak_rss_mb"]
    print(f"\n{'images':>7} {'mode':>9} {'peak RSS MB':>12} {'workers MB':>11} {'seconds':>8}"
          "  AUC (baseline-norm, blind)")
    for r in rows:
        aucs = ", ".join(f"{v:.3f}" for v in r["auc"].values())
        print(f"{r['n_images']:>7} {r['mode']:>9} {r['peak_rss_mb']:>12.0f} "
              f"{r['workers_peak_rss_mb']:>11.0f} {r['seconds']:>8.1f}  {aucs}")
    print(f"\npeak RSS {streamed[-1]['n_images']} / {streamed[0]['n_images']} images: "
          f"{ratio:.2f} (target <= 1.3)")
    out = {"image_size": IMAGE_SIZE, "file_size": FILE_SIZE, "attack": "baseline-norm",
           "rows": rows, "ratio_largest_to_smallest": round(ratio, 3),
           "cpu": os.cpu_count(), "target_ratio": 1.3}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
