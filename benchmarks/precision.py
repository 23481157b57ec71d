"""Precision: training cost in fp32 vs bf16 autocast, and what bf16 queries change in an audit.

Training (the default): what ``--amp auto`` decides from. bf16 autocast is only worth it (and
only safe for some ops, such as oneDNN's LSTM) where the device runs bf16 natively. Times a
SimCLR step of the demo's ``resnet-tiny`` encoder and a step of the CNN-LSTM captioner, at 1
thread and at every core, and reports what ``auto`` picks.

Queries (``--queries``): what ``--query-precision`` decides from, and its stated tolerance.
A demo-like target (the demo's SimCLR resnet-tiny without projection head, trained long on
``--members`` synthetic images; cached under ``--cache``) is audited twice with the same seeds,
its queries once in fp32 and once under bf16 autocast: each attack's AUC in both and their
difference, and the queried images/s of each. Then ViT-S/16 at 224 px (random weights: no
checkpoint is downloaded): images/s of each precision and how far bf16 moves the embeddings.

    python benchmarks/precision.py [--steps 6] [--batch 64] [--json PATH]
    python benchmarks/precision.py --queries [--members 64] [--epochs 600] [--seeds 0,1,2]
        [--attacks partcrop,encodermi,lpla,baseline] [--vit-images 8] [--json PATH]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from leakprobe.io import write_json
from leakprobe.models import create_model
from leakprobe.precision import QUERY_AUC_TOLERANCE, native_bf16
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


# ---- queries: fp32 vs bf16 on the same target ------------------------------------------------

DEMO_LIKE = EncoderRecipe("simclr", "resnet-tiny", {}, (0.08, 1.0),
                          {"temperature": 0.2, "proj_dim": 0})


def demo_like_target(members: int, epochs: int, cache: Path):
    """The demo-like memorising encoder (trained once, then read from ``cache``) and its
    members and as many non-members."""
    from leakprobe.data.splits import make_split
    from leakprobe.data.synthetic import make_synthetic
    from leakprobe.models.serialization import save_weights
    from leakprobe.targets.loading import load_safetensors_module
    from leakprobe.training.encoder import train_ssl_encoder
    from leakprobe.training.trainer import TrainConfig

    split = make_split(make_synthetic(2 * members, 32, seed=0), members, seed=0)
    path = cache / f"demo-like-{members}-{epochs}.safetensors"
    if path.exists():
        return load_safetensors_module(path).eval(), split
    config = TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, amp="off", seed=0,
                         device="cpu")
    t0 = time.perf_counter()
    backbone, _ = train_ssl_encoder(split.members.images, DEMO_LIKE, config)
    print(f"trained the demo-like target in {time.perf_counter() - t0:.0f}s -> {path}")
    cache.mkdir(parents=True, exist_ok=True)
    save_weights(backbone, path, "resnet-tiny", {"input_size": 32})
    return backbone.eval(), split


def audit_aucs(module, split, precision: str, attacks: str, seed: int) -> dict:
    """Each attack's AUC, the queries and the images/s of one audit in ``precision``."""
    from leakprobe.attacks.membership import create_attack, expand_attack_names
    from leakprobe.evaluation.audit import run_audit
    from leakprobe.evaluation.metrics import auc
    from leakprobe.targets.encoder import ModuleEncoder

    target = ModuleEncoder(module, device="cpu", query_precision=precision)
    nonmembers = split.nonmembers.subset(range(len(split.members)))
    names = expand_attack_names(attacks)
    t0 = time.perf_counter()
    results = run_audit([create_attack(n) for n in names], target, split.members, nonmembers,
                        seed=seed, permutations=0)
    seconds = time.perf_counter() - t0
    queries = target.queries
    x = torch.rand(1024, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    rate = {}
    for side in (32, 16):  # whole images and PartCrop's half-size parts
        chunk = x if side == 32 else F.interpolate(x, size=side, mode="bilinear")
        target.embed(chunk[:256])
        t1 = time.perf_counter()
        target.embed(chunk)
        rate[side] = round(len(chunk) / (time.perf_counter() - t1), 1)
    return {"precision": target.query_precision, "seed": seed,
            "auc": {r.attack: round(auc(r.scores, r.is_member), 4) for r in results},
            "queries": queries, "seconds": round(seconds, 1),
            "images_per_second": {"32px": rate[32], "16px": rate[16]}}


def vit_embeddings(images: int, side: int = 224) -> dict:
    """ViT-S/16 (random weights) at ``side``: images/s per precision, bf16's deviation."""
    from leakprobe.targets.encoder import ModuleEncoder

    torch.manual_seed(0)
    model = create_model("vit-small-patch16", input_size=side).eval()
    x = torch.rand(images, 3, side, side, generator=torch.Generator().manual_seed(1))
    out, rates = {}, {}
    for precision in ("fp32", "bf16"):
        target = ModuleEncoder(model, device="cpu", batch_size=images, query_precision=precision)
        t0 = time.perf_counter()
        out[precision] = target.embed(x)
        rates[precision] = round(images / (time.perf_counter() - t0), 2)
    a, b = out["fp32"], out["bf16"]
    rel = ((b - a).norm(dim=1) / a.norm(dim=1)).max().item()
    cos = F.cosine_similarity(a, b).min().item()
    return {"arch": "vit-small-patch16", "image_size": side, "images": images,
            "images_per_second": rates, "max_relative_difference": round(rel, 5),
            "min_cosine": round(cos, 6)}


def queries_main(args) -> None:
    module, split = demo_like_target(args.members, args.epochs, Path(args.cache))
    runs = [audit_aucs(module, split, p, args.attacks, seed)
            for seed in args.seeds for p in ("fp32", "bf16")]
    diffs: dict[str, list[float]] = {}
    print(f"demo-like target: resnet-tiny, {args.members} members, {args.epochs} epochs; "
          f"{torch.get_num_threads()} threads; native bf16: {native_bf16(torch.device('cpu'))}")
    print(f"{'attack':22s} {'seed':>4s} {'AUC fp32':>8s} {'AUC bf16':>8s} {'diff':>7s}")
    for fp32, bf16 in zip(runs[::2], runs[1::2], strict=True):
        for name, a in fp32["auc"].items():
            d = bf16["auc"][name] - a
            diffs.setdefault(name, []).append(d)
            print(f"{name:22s} {fp32['seed']:4d} {a:8.4f} {bf16['auc'][name]:8.4f} {d:+7.4f}")
    worst = max(abs(d) for ds in diffs.values() for d in ds)
    print(f"largest |AUC bf16 - fp32|: {worst:.4f} (stated tolerance {QUERY_AUC_TOLERANCE})")
    for r in runs:
        print(f"{r['precision']} seed {r['seed']}: audit {r['seconds']}s; embed images/s "
              f"{r['images_per_second']}")
    vit = vit_embeddings(args.vit_images) if args.vit_images else None
    if vit:
        print(f"ViT-S/16 @224: {vit['images_per_second']} images/s; bf16 vs fp32 embeddings: "
              f"max relative difference {vit['max_relative_difference']}, min cosine "
              f"{vit['min_cosine']}")
    if args.json:
        write_json(args.json, {"benchmark": "query_precision", "platform": platform.platform(),
                               "threads": torch.get_num_threads(),
                               "native_bf16": native_bf16(torch.device("cpu")),
                               "members": args.members, "epochs": args.epochs,
                               "runs": runs, "largest_auc_difference": round(worst, 4),
                               "tolerance": QUERY_AUC_TOLERANCE, "vit": vit})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--json", default=None)
    parser.add_argument("--queries", action="store_true",
                        help="AUCs and images/s of fp32 vs bf16 queries (not training)")
    parser.add_argument("--members", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=600)
    parser.add_argument("--attacks", default="partcrop,encodermi,lpla,baseline")
    parser.add_argument("--seeds", type=lambda t: [int(v) for v in t.split(",")], default=[0])
    parser.add_argument("--vit-images", type=int, default=8)
    parser.add_argument("--cache", default="runs/benchmarks")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.queries:
        queries_main(args)
        return
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
