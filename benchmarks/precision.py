"""Training cost per image in fp32 and under bf16 autocast, at 1 thread and at every core.

What ``--amp auto`` decides from: bf16 autocast is only worth it (and only safe for some ops,
such as oneDNN's LSTM) where the device runs bf16 natively. Times a SimCLR step of the demo's
``resnet-tiny`` encoder and a step of the CNN-LSTM captioner, and reports what ``auto`` picks.

    python benchmarks/precision.py [--steps 6] [--batch 64] [--json PATH]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from leakprobe.io import write_json
from leakprobe.models import create_model
from leakprobe.precision import native_bf16
from leakprobe.threads import available_cores
from leakprobe.training.encoder import EncoderRecipe, build_ssl_method


def _time_steps(step, steps: int, amp: bool) -> float:
    """Seconds per step (median of ``steps`` after one warm-up); NaN if the step fails."""
    times = []
    try:
        for i in range(steps + 1):
            t0 = time.perf_counter()
            with torch.autocast("cpu", torch.bfloat16, enabled=amp):
                loss = step()
            loss.float().backward()
            if i:
                times.append(time.perf_counter() - t0)
    except RuntimeError:
        return float("nan")
    return sorted(times)[len(times) // 2]


def encoder_step(batch: int):
    method = build_ssl_method(EncoderRecipe("simclr", "resnet-tiny", {}, (0.08, 1.0),
                                            {"temperature": 0.2, "proj_dim": 0}), 32)
    x = torch.rand(batch, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    return lambda: method.loss(x, g)


def captioner_step(batch: int):
    model = create_model("cnn-lstm", vocab_size=60, input_size=32)
    x = torch.rand(batch, 3, 32, 32)
    seq = torch.randint(4, 60, (batch, 12))

    def step():
        logits = model(x, seq[:, :-1])
        return F.cross_entropy(logits.float().reshape(-1, 60), seq[:, 1:].reshape(-1))
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for threads in sorted({1, available_cores()}):
        torch.set_num_threads(threads)
        for name, make in (("resnet-tiny simclr", encoder_step),
                           ("cnn-lstm captioner", captioner_step)):
            step = make(args.batch)
            fp32 = _time_steps(step, args.steps, False)
            bf16 = _time_steps(step, args.steps, True)
            rows.append({"model": name, "threads": threads,
                         "fp32_ms_per_image": round(1000 * fp32 / args.batch, 3),
                         "bf16_ms_per_image": round(1000 * bf16 / args.batch, 3),
                         "bf16_speedup": round(fp32 / bf16, 2) if bf16 == bf16 else None})
    native = native_bf16(torch.device("cpu"))
    print(f"CPU: {platform.processor() or platform.machine()}; native bf16: {native} "
          f"(--amp auto -> {'bf16' if native else 'fp32'})")
    print(f"{'model':20s} {'threads':>7s} {'fp32 ms/img':>11s} {'bf16 ms/img':>11s} "
          f"{'speed-up':>8s}")
    for r in rows:
        sp = "failed" if r["bf16_speedup"] is None else f"{r['bf16_speedup']:.2f}x"
        print(f"{r['model']:20s} {r['threads']:7d} {r['fp32_ms_per_image']:11.3f} "
              f"{r['bf16_ms_per_image']:11.3f} {sp:>8s}")
    if args.json:
        write_json(args.json, {"benchmark": "precision", "native_bf16": native,
                               "platform": platform.platform(), "batch": args.batch,
                               "rows": rows})


if __name__ == "__main__":
    main()
