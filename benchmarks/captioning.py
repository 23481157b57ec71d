"""M4I on a memorising CNN-LSTM captioner: attack AUC and captions scored per second.

A target captioner is trained on ``--members`` synthetic captioned images; the attacker owns
``--shadow-data`` disjoint images (a shadow captioner trained like the target on half of
them, the m4i-feature extractor on all of them). Both attacks are audited under the shadow
setting against ``--members`` non-members, and a null audit (two unseen halves) gives the
chance level. Throughput: images captioned by the target and turned into attack features
per second (the query-paying part of each attack), next to the bare captioning rate.

    python benchmarks/captioning.py [--members 60] [--epochs 300] [--shadow-data 240]
                                    [--extractor-epochs 20] [--device cpu] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

os.environ.setdefault("LEAKPROBE_PROGRESS", "0")
os.environ.setdefault("LEAKPROBE_QUIET", "1")

from leakprobe.attacks.membership.blind import Blind  # noqa: E402
from leakprobe.attacks.membership.m4i import M4IFeature, M4IMetric  # noqa: E402
from leakprobe.data.captions import Tokenizer, make_synthetic_captioned  # noqa: E402
from leakprobe.data.splits import make_split  # noqa: E402
from leakprobe.io import write_json  # noqa: E402
from leakprobe.targets.captioner import ModuleCaptioner  # noqa: E402
from leakprobe.training.captioning import train_captioner  # noqa: E402
from leakprobe.training.trainer import TrainConfig  # noqa: E402
from leakprobe.workflows.audit import audit_captioner  # noqa: E402


def train(members, epochs: int, device: str) -> ModuleCaptioner:
    refs = members.extras["captions"]
    tok = Tokenizer.fit([c for cs in refs for c in cs])
    config = TrainConfig(epochs=epochs, batch_size=32, lr=2e-3, amp="auto", seed=0,
                         device=device)
    model, _ = train_captioner(members, tok, config)
    return ModuleCaptioner(model, tok, device=device)


def _round(value: float | None) -> float | None:
    """``value`` to 4 decimals; None (a TPR the audit cannot resolve) stays None."""
    return None if value is None else round(value, 4)


def rate(fn, n: int) -> float:
    start = time.perf_counter()
    fn()
    return round(n / (time.perf_counter() - start), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--shadow-data", type=int, default=240)
    parser.add_argument("--extractor-epochs", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    m = args.members
    data = make_synthetic_captioned(4 * m, 32, seed=0)
    split = make_split(data, m, seed=0)
    rest = split.nonmembers.subset(torch.randperm(3 * m,
                                                  generator=torch.Generator().manual_seed(1)))
    nonmembers, unseen_a, unseen_b = (rest.subset(range(i * m, (i + 1) * m)) for i in range(3))
    shadow_data = make_synthetic_captioned(args.shadow_data, 32, seed=5)
    shadow_split = make_split(shadow_data, args.shadow_data // 2, seed=0)

    t0 = time.perf_counter()
    target = train(split.members, args.epochs, args.device)
    shadow = train(shadow_split.members, args.epochs, args.device)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    feature = M4IFeature(epochs=args.extractor_epochs, device=args.device).prepare(shadow_data)
    extractor_s = time.perf_counter() - t0

    def audit(members, non):
        report = audit_captioner(target, members, non, shadow_data=shadow_data,
                                 attacks=[M4IMetric(seed=0), feature, Blind(seed=0)], seed=0,
                                 shadow_target=shadow)
        return {r["attack"]: r["metrics"] for r in report["results"]}

    real, null = audit(split.members, nonmembers), audit(unseen_a, unseen_b)
    both = split.members.subset(range(m))
    speed = {"captioning": rate(lambda: target.caption(both.images), m),
             "m4i-metric": rate(lambda: M4IMetric().features(target, both), m),
             "m4i-feature": rate(lambda: feature.features(target, both), m)}
    rows = []
    print(f"{'attack':12s} {'AUC':>6s} {'95% CI':>15s} {'TPR@1%':>7s} {'null AUC':>9s} "
          f"{'captions/s':>11s}")
    for name in ("m4i-metric", "m4i-feature", "blind"):
        r, n = real[name], null[name]
        row = {"attack": name, "auc": round(r["auc"], 4),
               "auc_ci": [round(v, 4) for v in r["auc_ci"]],
               "tpr_at_1pct_fpr": _round(r["tpr_at_fpr"].get("0.01")),
               "null_auc": round(n["auc"], 4), "null_auc_ci": [round(v, 4) for v in n["auc_ci"]],
               "captions_per_second": speed.get(name)}
        rows.append(row)
        ci = f"[{row['auc_ci'][0]:.3f}, {row['auc_ci'][1]:.3f}]"
        cps = "-" if row["captions_per_second"] is None else f"{row['captions_per_second']:.1f}"
        tpr = "n/a" if row["tpr_at_1pct_fpr"] is None else f"{row['tpr_at_1pct_fpr']:.3f}"
        print(f"{name:12s} {row['auc']:6.3f} {ci:>15s} {tpr:>7s} "
              f"{row['null_auc']:9.3f} {cps:>11s}")
    print(f"bare captioning {speed['captioning']:.1f} captions/s; training target + shadow "
          f"{train_s:.0f}s, extractor {extractor_s:.0f}s ({args.device}, "
          f"{args.threads} thread(s))")
    if args.json:
        write_json(args.json, {
            "benchmark": "captioning", "members": m, "nonmembers": m, "epochs": args.epochs,
            "shadow_data": args.shadow_data, "extractor_epochs": args.extractor_epochs,
            "device": args.device, "threads": args.threads, "results": rows,
            "captioning_per_second": speed["captioning"], "train_seconds": round(train_s, 1),
            "extractor_seconds": round(extractor_s, 1)})


if __name__ == "__main__":
    main()
