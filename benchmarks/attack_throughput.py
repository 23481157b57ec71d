"""Attack throughput vs the encoder's own forward throughput (target ratio >= 0.8).

For PartCrop (K=128) and EncoderMI (n=10) on the same encoder and images, the attack's
queried images per second are divided by the encoder's batched forward throughput on
inputs of the same shapes and batch size (the part crops at half size, the views at full
size). A ratio near 1 means the attack costs little beyond the queries it must make.

    python benchmarks/attack_throughput.py [--arch resnet-tiny] [--images 64] [--json PATH]
"""

from __future__ import annotations

import argparse
import time

import torch

from leakprobe.attacks.membership import EncoderMI, PartCrop
from leakprobe.data.synthetic import make_synthetic
from leakprobe.io import write_json
from leakprobe.models import create_model
from leakprobe.targets.encoder import ModuleEncoder


def forward_seconds(model: torch.nn.Module, shapes: list[tuple[int, int]], batch: int) -> float:
    """Time plain batched forwards over (count, side) inputs: the encoder's own cost."""
    inputs = [torch.rand(n, 3, s, s) for n, s in shapes]
    start = time.perf_counter()
    with torch.inference_mode():
        for x in inputs:
            for chunk in x.split(batch):
                model(chunk)
    return time.perf_counter() - start


def tokens_seconds(model: torch.nn.Module, n: int, side: int, batch: int) -> float:
    x = torch.rand(n, 3, side, side)
    start = time.perf_counter()
    with torch.inference_mode():
        for chunk in x.split(batch):
            model.tokens(chunk)
    return time.perf_counter() - start


def measure(attack, target, images, raw_seconds: float, repeats: int = 2) -> dict:
    """Best of ``repeats`` runs of the attack's queries vs the encoder's own time."""
    seconds = float("inf")
    for _ in range(repeats):
        q0 = target.queries
        start = time.perf_counter()
        attack.features(target, images)
        seconds = min(seconds, time.perf_counter() - start)
    queries = target.queries - q0
    return {"attack": attack.name, "queries": queries, "seconds": round(seconds, 3),
            "queries_per_second": round(queries / seconds, 1),
            "encoder_images_per_second": round(queries / raw_seconds, 1),
            "ratio": round(raw_seconds / seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet-tiny")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = create_model(args.arch).eval()
    target = ModuleEncoder(model, device="cpu", batch_size=args.batch_size)
    images = make_synthetic(args.images, 32, seed=0).images
    n, side, bs = args.images, target.input_size, args.batch_size
    forward_seconds(model, [(bs, side), (bs, side // 2)], bs)  # warm-up, both shapes

    results = []
    partcrop = PartCrop(num_parts=128)
    raw = min(forward_seconds(model, [(n * 128, side // 2)], bs)
              + tokens_seconds(model, n, side, bs) for _ in range(2))
    results.append(measure(partcrop, target, images, raw))
    encodermi = EncoderMI(n_views=10)
    raw = min(forward_seconds(model, [(n * 10, side)], bs) for _ in range(2))
    results.append(measure(encodermi, target, images, raw))

    header = f"{'attack':20s} {'queries':>8s} {'attack q/s':>11s} {'encoder img/s':>14s}"
    print(f"{header} {'ratio':>6s}")
    for r in results:
        print(f"{r['attack']:20s} {r['queries']:8d} {r['queries_per_second']:11.1f} "
              f"{r['encoder_images_per_second']:14.1f} {r['ratio']:6.2f}")
    if args.json:
        write_json(args.json, {"benchmark": "attack_throughput", "arch": args.arch,
                               "images": n, "batch_size": bs, "threads": torch.get_num_threads(),
                               "results": results})


if __name__ == "__main__":
    main()
