"""Wall time of `leakprobe audit encoder --attacks all` on an idle and on a loaded machine.

Runs the CLI in a fresh process per setting, optionally beside ``--load`` CPU-bound busy
loops (another user's job), and prints the wall time and the AUCs (which must not change).
``--src`` runs another checkout's code (e.g. the version before a change) with the same
Python; ``--threads`` values are passed to the CLI (``default`` passes nothing).

    python benchmarks/audit_wall.py --model runs/demo/target/encoder.safetensors \\
        --members runs/demo/target/split.json:members \\
        --nonmembers runs/demo/target/split.json:nonmembers --load 0,1 --json PATH
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _burn(stop) -> None:  # pragma: no cover - a busy loop in a child process
    x = 0
    while not stop.is_set():
        x = (x * 31 + 7) % 1_000_003


def run_once(args, threads: str, load: int) -> dict:
    stop = multiprocessing.Event()
    burners = [multiprocessing.Process(target=_burn, args=(stop,), daemon=True)
               for _ in range(load)]
    for p in burners:
        p.start()
    env = {**os.environ, "LEAKPROBE_PROGRESS": "0", "LEAKPROBE_QUIET": "1"}
    env.pop("OMP_NUM_THREADS", None)
    if args.src:
        env["PYTHONPATH"] = args.src
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "leakprobe.cli", "audit", "encoder", "--model",
                   args.model, "--members", args.members, "--nonmembers", args.nonmembers,
                   "--attacks", args.attacks, "--device", "cpu", "--out", tmp]
            if threads != "default":
                cmd += ["--threads", threads]
            t0 = time.perf_counter()
            try:
                subprocess.run(cmd, check=True, env=env, capture_output=True, text=True,
                               timeout=args.timeout)
            except subprocess.TimeoutExpired:
                return {"threads": threads, "load": load, "wall_seconds": None,
                        "timed_out_after": args.timeout, "threads_used": None, "auc": {}}
            wall = time.perf_counter() - t0
            report = json.loads((Path(tmp) / "report.json").read_text())
    finally:
        stop.set()
        for p in burners:
            p.join()
    return {"threads": threads, "load": load, "wall_seconds": round(wall, 1),
            "threads_used": report["context"].get("threads"),
            "auc": {r["attack"]: round(r["metrics"]["auc"], 4) for r in report["results"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--members", required=True)
    parser.add_argument("--nonmembers", required=True)
    parser.add_argument("--attacks", default="all")
    parser.add_argument("--threads", default="default", help="comma list: default, auto, N")
    parser.add_argument("--load", default="0,1", help="comma list of busy processes beside")
    parser.add_argument("--src", default=None, help="PYTHONPATH of another checkout's src")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per run")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = [run_once(args, t, int(n)) for n in args.load.split(",")
            for t in args.threads.split(",")]
    print(f"{'threads':>8s} {'load':>4s} {'used':>4s} {'wall s':>7s}  max AUC difference")
    ref = next((r["auc"] for r in rows if r["auc"]), {})
    for r in rows:
        if r["wall_seconds"] is None:
            print(f"{r['threads']:>8s} {r['load']:4d}    - >{r['timed_out_after']:6.0f}  -")
            continue
        diff = max((abs(r["auc"][k] - ref[k]) for k in ref), default=0.0)
        print(f"{r['threads']:>8s} {r['load']:4d} {str(r['threads_used']):>4s} "
              f"{r['wall_seconds']:7.1f}  {diff:.4f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"benchmark": "audit_wall", "src": args.src,
                                               "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
