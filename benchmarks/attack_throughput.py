"""Attack throughput vs the encoder's own forward throughput (target ratio >= 0.9).

For PartCrop (K parts, default 128) and EncoderMI (n views, default 10) on the same encoder
and images, the attack's queried images per second are divided by the encoder's plain
batched forward throughput on inputs of the same shapes and batch size (the part crops at
half size plus the tokens of the whole images, the views at full size). The plain forward
runs as the target runs its model -- inference mode, the same precision, the same memory
format -- so the ratio is what the attack costs beyond the queries it must make; a ratio
near 1 means nothing. The encoder is a registered architecture with random weights
(``--arch``, e.g. ``vit-small-patch16`` at ``--image-size 224``).

    python benchmarks/attack_throughput.py [--arch resnet-tiny] [--image-size 32]
        [--images 64] [--num-parts 128] [--n-views 10] [--batch-size 256|auto]
        [--query-precision auto|fp32|bf16] [--json PATH]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from leakprobe.attacks.membership import EncoderMI, PartCrop
from leakprobe.data.synthetic import make_synthetic
from leakprobe.io import write_json
from leakprobe.models import create_model
from leakprobe.precision import QUERY_PRECISIONS
from leakprobe.targets.batching import check_batch_size
from leakprobe.targets.encoder import ModuleEncoder


def forward_seconds(target: ModuleEncoder, fn, shapes: list[tuple[int, int]]) -> float:
    """Time plain batched calls of ``fn`` over (count, side) inputs, as the target runs them:
    the encoder's own cost."""
    inputs = [torch.rand(n, 3, s, s) for n, s in shapes]
    start = time.perf_counter()
    for x in inputs:
        for chunk in x.split(target._chunk_size(x)):
            target._run(fn, chunk.to(target.device))
    if target.device.type == "cuda":
        torch.cuda.synchronize(target.device)
    return time.perf_counter() - start


def measure(attack, target, images, raw_seconds: float, repeats: int) -> dict:
    """Best of ``repeats`` runs of the attack's queries vs the encoder's own time."""
    seconds = float("inf")
    for _ in range(repeats):
        q0 = target.queries
        start = time.perf_counter()
        attack.features(target, images)
        seconds = min(seconds, time.perf_counter() - start)
    queries = target.queries - q0
    return {"attack": attack.name, "queries": queries, "seconds": round(seconds, 3),
            "queries_per_second": round(queries / seconds, 2),
            "encoder_images_per_second": round(queries / raw_seconds, 2),
            "ratio": round(raw_seconds / seconds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet-tiny")
    parser.add_argument("--image-size", type=int, default=None,
                        help="input side (default: the architecture's)")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--num-parts", type=int, default=128)
    parser.add_argument("--n-views", type=int, default=10)
    parser.add_argument("--batch-size", type=check_batch_size, default=256)
    parser.add_argument("--query-precision", choices=QUERY_PRECISIONS, default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    torch.manual_seed(0)
    kwargs = {"input_size": args.image_size} if args.image_size else {}
    model = create_model(args.arch, **kwargs).eval()
    t0 = time.perf_counter()
    target = ModuleEncoder(model, device=args.device, batch_size=args.batch_size,
                           query_precision=args.query_precision)
    setup = time.perf_counter() - t0
    side, n = target.input_size, args.images
    images = make_synthetic(n, side, seed=0).images
    print(f"{args.arch} @{side}px on {target.device} ({torch.get_num_threads()} threads): "
          f"batch {target.batch_size}{' (auto)' if target.batch_size_auto else ''}, "
          f"{target.query_precision}, channels-last {target.channels_last}; "
          f"target ready in {setup:.1f}s")
    forward_seconds(target, target.module, [(2, side), (2, side // 2)])  # warm-up, both shapes

    results = []
    partcrop = PartCrop(num_parts=args.num_parts)
    raw = min(forward_seconds(target, target.module, [(n * args.num_parts, side // 2)])
              + forward_seconds(target, target.module.tokens, [(n, side)])
              for _ in range(args.repeats))
    results.append(measure(partcrop, target, images, raw, args.repeats))
    encodermi = EncoderMI(n_views=args.n_views)
    raw = min(forward_seconds(target, target.module, [(n * args.n_views, side)])
              for _ in range(args.repeats))
    results.append(measure(encodermi, target, images, raw, args.repeats))

    header = f"{'attack':20s} {'queries':>8s} {'attack q/s':>11s} {'encoder img/s':>14s}"
    print(f"{header} {'ratio':>6s}")
    for r in results:
        print(f"{r['attack']:20s} {r['queries']:8d} {r['queries_per_second']:11.2f} "
              f"{r['encoder_images_per_second']:14.2f} {r['ratio']:6.2f}")
    if args.json:
        write_json(args.json, {"benchmark": "attack_throughput", "arch": args.arch,
                               "image_size": side, "images": n, "num_parts": args.num_parts,
                               "n_views": args.n_views, "batch_size": target.batch_size,
                               "batch_size_auto": target.batch_size_auto,
                               "query_precision": target.query_precision,
                               "channels_last": target.channels_last,
                               "device": str(target.device), "platform": platform.platform(),
                               "threads": torch.get_num_threads(),
                               "target_setup_seconds": round(setup, 2), "results": results})


if __name__ == "__main__":
    main()
