"""Cost and verdicts of the label-permutation test: one audit with and without permutations.

Runs ``leakprobe audit encoder`` in a fresh process per setting on a memorising target (its
members vs non-members) and on a null audit of the same target (two sets of images it never
saw, drawn from the same distribution), and prints per attack the AUC, the p-value and the
seconds, plus each audit's wall time and the cost ratio of the permutations.

    python benchmarks/permutations.py --model runs/demo/target/encoder.safetensors \\
        --split runs/demo/target/split.json --json runs/bench/permutations.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def audit(model: str, members: str, nonmembers: str, attacks: str, permutations: int,
          threads: str, repeats: int) -> dict:
    env = {**os.environ, "LEAKPROBE_PROGRESS": "0", "LEAKPROBE_QUIET": "1"}
    env.pop("LEAKPROBE_PERMUTATIONS", None)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "leakprobe.cli", "audit", "encoder", "--model", model,
               "--members", members, "--nonmembers", nonmembers, "--attacks", attacks,
               "--device", "cpu", "--out", tmp, "--permutations", str(permutations),
               "--threads", threads, "--repeats", str(repeats)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        report = json.loads((Path(tmp) / "report.json").read_text())
    return {"permutations": permutations, "wall_seconds": round(wall, 1),
            "threads": report["context"].get("threads"),
            "attacks": {r["attack"]: {"auc": round(r["metrics"]["auc"], 4),
                                      "p_value": r["metrics"].get("p_value"),
                                      "auc_ci": r["metrics"]["auc_ci"],
                                      "seconds": round(r["seconds"], 1)}
                        for r in report["results"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--split", required=True, help="the target's split.json")
    parser.add_argument("--null", default="synthetic:128:7,synthetic:128:8",
                        help="two data specs the target never saw (members,non-members)")
    parser.add_argument("--attacks", default="all")
    parser.add_argument("--permutations", type=int, default=100)
    parser.add_argument("--threads", default="auto")
    parser.add_argument("--repeats", type=int, default=1, help="cross-fitting repeats")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    null_members, null_nonmembers = args.null.split(",")
    rows = {}
    for name, (mem, non) in {"memorising": (args.split, args.split),
                             "null": (null_members, null_nonmembers)}.items():
        runs = [audit(args.model, mem, non, args.attacks, p, args.threads, args.repeats)
                for p in (0, args.permutations)]
        rows[name] = {"repeats": args.repeats, "without": runs[0], "with": runs[1],
                      "cost_ratio": round(runs[1]["wall_seconds"] / runs[0]["wall_seconds"], 2)}
        print(f"\n{name} audit: {runs[0]['wall_seconds']} s without permutations, "
              f"{runs[1]['wall_seconds']} s with {args.permutations} "
              f"(x{rows[name]['cost_ratio']}, threads {runs[1]['threads']})")
        print(f"{'attack':22s} {'AUC':>6s} {'p-value':>9s} {'s (0)':>7s} {'s (B)':>7s}")
        for attack, r in runs[1]["attacks"].items():
            p = "n/a" if r["p_value"] is None else f"{r['p_value']:.3g}"
            print(f"{attack:22s} {r['auc']:6.3f} {p:>9s} "
                  f"{runs[0]['attacks'][attack]['seconds']:7.1f} {r['seconds']:7.1f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
