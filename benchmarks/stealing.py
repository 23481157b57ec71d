"""Stolen accuracy vs budget for Cont-Steal, MSE and cosine, and the HTTP overhead.

Trains a SimCLR resnet-tiny target on scikit-learn digits (or takes ``--model``), steals it
with each method at each budget from 1000 attacker images, and judges every surrogate by a
linear probe fitted on 100 labelled digits. Then measures embeddings per second through a
local ``leakprobe serve`` (npy transport, batch 64) against in-process (target ratio >= 0.5).

    python benchmarks/stealing.py [--budgets 250,500,1000] [--epochs 30] [--json PATH]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from leakprobe.data.loaders import load_digits_set
from leakprobe.errors import LeakprobeError
from leakprobe.io import write_json
from leakprobe.models.serialization import export_torchscript
from leakprobe.serving.client import HTTPEncoder
from leakprobe.targets.encoder import ModuleEncoder
from leakprobe.targets.loading import load_encoder
from leakprobe.training.encoder import EncoderRecipe, train_ssl_encoder
from leakprobe.training.trainer import TrainConfig
from leakprobe.workflows.steal import steal_encoder


def http_overhead(model: torch.nn.Module, batch: int = 64, n: int = 2048) -> dict:
    """Embeddings per second in-process vs through ``leakprobe serve`` (its own process)."""
    images = torch.rand(n, 3, 32, 32)
    local = ModuleEncoder(model, device="cpu", batch_size=batch)
    local.embed(images[:batch])
    start = time.perf_counter()
    local.embed(images)
    local_rate = n / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(export_torchscript(model, Path(tmp) / "target.pt"))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen(
            [sys.executable, "-m", "leakprobe.cli", "serve", "encoder", "--model", path,
             "--port", str(port), "--device", "cpu"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    remote = HTTPEncoder(url, batch_size=batch, retries=0)
                    break
                except LeakprobeError:
                    time.sleep(0.2)
            remote.embed(images[:batch])
            start = time.perf_counter()
            remote.embed(images)
            remote_rate = n / (time.perf_counter() - start)
        finally:
            server.terminate()
            server.wait(timeout=20)
    return {"batch": batch, "in_process_per_second": round(local_rate, 1),
            "http_per_second": round(remote_rate, 1), "ratio": round(remote_rate / local_rate, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="target (default: train one on digits)")
    parser.add_argument("--budgets", default="250,500,1000")
    parser.add_argument("--methods", default="contsteal,mse,cosine")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    digits = load_digits_set(32)
    order = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))
    if args.model:
        target = load_encoder(args.model, device="cpu")
        model = target.module
    else:
        model, _ = train_ssl_encoder(
            digits.images, EncoderRecipe("simclr", "resnet-tiny"),
            TrainConfig(epochs=15, batch_size=256, lr=3e-3, amp="auto", seed=0, device="cpu"))
        target = ModuleEncoder(model, device="cpu")
    report = steal_encoder(target, digits.subset(order[100:1100]), budgets=args.budgets,
                           methods=args.methods, epochs=args.epochs, device="cpu",
                           probe_train=digits.subset(order[:100]),
                           probe_test=digits.subset(order[1100:]))
    print(f"target linear-probe accuracy {report['target_probe_accuracy']:.3f}; "
          f"random-init surrogate {report['random_init_probe_accuracy']:.3f} (held-out "
          f"Procrustes cosine {report['random_init_procrustes_cosine']:.3f})")
    print(f"{'method':10s} {'budget':>7s} {'probe acc':>9s} {'agreement':>9s} {'procrustes':>10s}")
    rows = []
    for r in report["results"]:
        m = r["metrics"]
        print(f"{r['method']:10s} {r['budget']:7d} {m['surrogate_probe_accuracy']:9.3f} "
              f"{m['agreement']:9.3f} {m['procrustes_cosine']:10.3f}")
        rows.append({"method": r["method"], "budget": r["budget"],
                     "queries_used": r["queries_used"], **m})
    overhead = http_overhead(model)
    print(f"HTTP at batch {overhead['batch']}: {overhead['http_per_second']:.0f} embeddings/s "
          f"vs {overhead['in_process_per_second']:.0f} in-process (ratio {overhead['ratio']:.2f})")
    if args.json:
        write_json(args.json, {"benchmark": "stealing",
                               "target_probe_accuracy": report["target_probe_accuracy"],
                               "random_init_probe_accuracy":
                                   report["random_init_probe_accuracy"],
                               "random_init_procrustes_cosine":
                                   report["random_init_procrustes_cosine"],
                               "results": rows, "http": overhead})


if __name__ == "__main__":
    main()
