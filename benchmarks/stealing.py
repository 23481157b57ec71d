"""Stolen accuracy vs budget for every stealing method (and defence), and the HTTP overhead.

Trains a SimCLR resnet-tiny target (15 epochs) on ``--data``: Fashion-MNIST at 32 px where
Debian's ``dataset-fashion-mnist`` is installed (4000 training images for the target, 2000
other training images for the attacker, 500 labelled probe-train and 1000 probe-test images
from the test split), else scikit-learn digits (1000 attacker images, 100 probe-train, the
rest probe-test); or takes ``--model``. Steals it with each method at each budget (every
method on the same prefix of one query order; a budget counts target queries, views
included), judges every surrogate by a linear probe, and, with ``--defences``, repeats the
theft through each answer defence and reports what it costs a legitimate user. Then measures
embeddings per second through a local ``leakprobe serve`` against in-process.

    python benchmarks/stealing.py [--data fashion-mnist|digits] [--budgets 250,500,1000,2000]
        [--methods all] [--epochs 30] [--defences noise:0.05,round:2,topk:32] [--json PATH]
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

from leakprobe.data.images import ImageSet
from leakprobe.data.loaders import find_fashion_mnist, load_digits_set, load_idx
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


def benchmark_data(name: str) -> tuple[ImageSet, ImageSet, ImageSet, ImageSet]:
    """(target training set, attacker's query images, probe-train, probe-test)."""
    g = torch.Generator().manual_seed(0)
    if name == "fashion-mnist":
        folder = find_fashion_mnist()
        if folder is None:
            raise SystemExit("Fashion-MNIST is not installed (dataset-fashion-mnist): "
                             "use --data digits")
        train, test = load_idx(folder, 32, "train"), load_idx(folder, 32, "test")
        order = torch.randperm(len(train), generator=g)
        test_order = torch.randperm(len(test), generator=g)
        return (train.subset(order[:4000]), train.subset(order[4000:6000]),
                test.subset(test_order[:500]), test.subset(test_order[500:1500]))
    digits = load_digits_set(32)
    order = torch.randperm(len(digits), generator=g)
    return digits, digits.subset(order[100:1100]), digits.subset(order[:100]), \
        digits.subset(order[1100:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="target (default: train one)")
    parser.add_argument("--data", default="fashion-mnist" if find_fashion_mnist() else "digits",
                        choices=["fashion-mnist", "digits"])
    parser.add_argument("--budgets", default="250,500,1000,2000")
    parser.add_argument("--methods", default="all")
    parser.add_argument("--views-per-image", type=int, default=None)
    parser.add_argument("--defences", default=None,
                        help="answer defences, e.g. noise:0.05,round:2,topk:32")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default=None, help="output folder (resumable)")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP measurement")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    target_data, query, probe_train, probe_test = benchmark_data(args.data)
    if args.model:
        target = load_encoder(args.model, device="cpu")
        model = target.module
    else:
        model, _ = train_ssl_encoder(
            target_data.pixels, EncoderRecipe("simclr", "resnet-tiny"),
            TrainConfig(epochs=15, batch_size=256, lr=3e-3, amp="auto", seed=0, device="cpu"))
        target = ModuleEncoder(model, device="cpu")
    report = steal_encoder(target, query, budgets=args.budgets, methods=args.methods,
                           views=args.views_per_image, target_defences=args.defences,
                           epochs=args.epochs, device="cpu", probe_train=probe_train,
                           probe_test=probe_test, out_dir=args.out)
    print(f"data {args.data}: target linear-probe accuracy "
          f"{report['target_probe_accuracy']:.3f} (k-NN {report['target_knn_accuracy']:.3f}); "
          f"random-init surrogate {report['random_init_probe_accuracy']:.3f} (held-out "
          f"Procrustes cosine {report['random_init_procrustes_cosine']:.3f})")
    print(f"{'method':16s} {'defence':10s} {'budget':>7s} {'probe acc':>9s} {'agreement':>9s} "
          f"{'procrustes':>10s} {'seconds':>8s}")
    rows = []
    for r in report["results"]:
        m = r["metrics"]
        print(f"{r['method']:16s} {r['defence']:10s} {r['budget']:7d} "
              f"{m['surrogate_probe_accuracy']:9.3f} {m['agreement']:9.3f} "
              f"{m['procrustes_cosine']:10.3f} {r['seconds'] + r['query_seconds']:8.1f}")
        rows.append({"method": r["method"], "defence": r["defence"], "budget": r["budget"],
                     "queries_used": r["queries_used"], "views_per_image": r["views_per_image"],
                     "seconds": r["seconds"], "query_seconds": r["query_seconds"], **m})
    for d in report.get("defences") or []:
        print(f"defence {d['defence']:10s}: legitimate user's probe accuracy "
              f"{d['target_probe_accuracy']:.3f}, k-NN {d['target_knn_accuracy']:.3f}")
    overhead = None if args.no_http else http_overhead(model)
    if overhead:
        print(f"HTTP at batch {overhead['batch']}: {overhead['http_per_second']:.0f} "
              f"embeddings/s vs {overhead['in_process_per_second']:.0f} in-process "
              f"(ratio {overhead['ratio']:.2f})")
    if args.json:
        write_json(args.json, {"benchmark": "stealing", "data": args.data,
                               "epochs": args.epochs,
                               "target_probe_accuracy": report["target_probe_accuracy"],
                               "target_knn_accuracy": report["target_knn_accuracy"],
                               "random_init_probe_accuracy":
                                   report["random_init_probe_accuracy"],
                               "random_init_procrustes_cosine":
                                   report["random_init_procrustes_cosine"],
                               "results": rows, "defences": report.get("defences"),
                               "http": overhead,
                               "wall_seconds": report["context"]["wall_seconds"]})


if __name__ == "__main__":
    main()
