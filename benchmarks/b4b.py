"""B4B (Dubinski et al., NeurIPS 2023) against a thief and a legitimate client, same queries.

Trains the stealing benchmark's target (a SimCLR resnet-tiny, 15 epochs, on 4000
Fashion-MNIST training images at 32 px, or on scikit-learn digits where Fashion-MNIST is not
installed), or takes ``--model``. Then, through :class:`~leakprobe.targets.defended.
DefendedEncoder` with the ``b4b`` answer defence (the code ``leakprobe serve encoder
--defence b4b`` runs; requests of 256 images, the server's default ``--max-batch``):

- **coverage and noise curves** of three clients at the same number of queries: a
  legitimate client whose images come from ``--legit-classes`` classes (a downstream task
  on a narrow distribution), a thief querying clean images spread over all classes (what
  ``mse``/``stolenencoder`` buy), and a thief querying Cont-Steal views of them;
- **the legitimate client's price**: a linear probe on its own task (its classes), trained
  on the answers to the first half of its queries and tested on the second half, with and
  without the defence;
- **the thief's gain**: ``leakprobe steal encoder`` with ``--target-defence none,b4b`` at
  each budget (methods ``--methods``), surrogates judged by a linear probe on all classes.

    python benchmarks/b4b.py [--data fashion-mnist|digits] [--queries 2000]
        [--budgets 500,1000,2000] [--methods contsteal,mse] [--epochs 30] [--out DIR]
        [--json PATH]

``--out`` keeps the trained target and the steal's query cache, so a rerun pays neither.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from leakprobe.attacks.registry import create_attack
from leakprobe.data.images import ImageSet
from leakprobe.data.loaders import find_fashion_mnist, load_digits_set, load_idx
from leakprobe.defences.answers import AnswerDefence, parse_answer_defences
from leakprobe.evaluation.utility import linear_probe
from leakprobe.io import write_json
from leakprobe.models.serialization import export_torchscript
from leakprobe.targets.defended import DefendedEncoder
from leakprobe.targets.encoder import ModuleEncoder
from leakprobe.targets.loading import load_encoder
from leakprobe.training.encoder import EncoderRecipe, train_ssl_encoder
from leakprobe.training.trainer import TrainConfig
from leakprobe.workflows.steal import steal_encoder

REQUEST = 256  # images per request: leakprobe serve's default --max-batch


def benchmark_data(name: str, legit_classes: int, queries: int
                   ) -> tuple[ImageSet, ImageSet, ImageSet, ImageSet, ImageSet]:
    """(target training set, thief's images, legitimate client's images (its few classes),
    probe-train, probe-test), disjoint."""
    g = torch.Generator().manual_seed(0)
    if name == "fashion-mnist":
        folder = find_fashion_mnist()
        if folder is None:
            raise SystemExit("Fashion-MNIST is not installed (dataset-fashion-mnist): "
                             "use --data digits")
        train, test = load_idx(folder, 32, "train"), load_idx(folder, 32, "test")
        order = torch.randperm(len(train), generator=g)
        test_order = torch.randperm(len(test), generator=g)
        target, thief = train.subset(order[:4000]), train.subset(order[4000:4000 + queries])
        rest = train.subset(order[4000 + queries:])
        probe_train, probe_test = test.subset(test_order[:500]), test.subset(test_order[500:1500])
    else:
        digits = load_digits_set(32)
        order = torch.randperm(len(digits), generator=g)
        # digits is small: the thief's pool is the target's own training data
        target = thief = digits.subset(order[800:])
        rest = digits.subset(order[500:800])
        probe_train, probe_test = digits.subset(order[:100]), digits.subset(order[100:500])
    assert rest.labels is not None
    mine = torch.nonzero(rest.labels < legit_classes).flatten()[:queries]
    return target, thief, rest.subset(mine), probe_train, probe_test


def coverage_curve(target, images: torch.Tensor, defence: AnswerDefence
                   ) -> tuple[list[dict], torch.Tensor]:
    """Queries ``images`` request by request through the defence: the client's coverage and
    noise std before each request, and every answer."""
    defended = DefendedEncoder(target, defence=defence, seed=0, request_size=REQUEST)
    curve, answers = [], []
    for start in range(0, images.shape[0], REQUEST):
        client = defended.client
        curve.append({"queries": start,
                      "coverage": 0.0 if client is None else round(client.coverage, 3),
                      "noise_std": 0.0 if client is None else client.noise_std})
        answers.append(defended.embed(images[start:start + REQUEST]))
    client = defended.client
    assert client is not None
    curve.append({"queries": int(images.shape[0]), "coverage": round(client.coverage, 3),
                  "noise_std": client.noise_std})
    return curve, torch.cat(answers)


def own_task_accuracy(answers: torch.Tensor, labels: torch.Tensor) -> float:
    """A linear probe on the legitimate client's own task: fit on the first half of its
    answers, test on the second."""
    half = answers.shape[0] // 2
    return linear_probe(answers[:half], labels[:half], answers[half:], labels[half:])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="target (default: train one)")
    parser.add_argument("--data", default="fashion-mnist" if find_fashion_mnist() else "digits",
                        choices=["fashion-mnist", "digits"])
    parser.add_argument("--defences", default="b4b,b4b:beta=20",
                        help="b4b specs (default: the paper's schedule, and one whose noise "
                             "reaches alpha at 20%% coverage)")
    parser.add_argument("--legit-classes", type=int, default=3)
    parser.add_argument("--queries", type=int, default=2000,
                        help="queries of each client in the coverage curves")
    parser.add_argument("--budgets", default="500,1000,2000")
    parser.add_argument("--methods", default="contsteal,mse")
    parser.add_argument("--epochs", type=int, default=30, help="surrogate epochs")
    parser.add_argument("--target-epochs", type=int, default=15)
    parser.add_argument("--out", default=None, help="stealing output folder (resumable)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    started = time.time()
    target_data, thief, legit, probe_train, probe_test = benchmark_data(
        args.data, args.legit_classes, args.queries)
    cached = Path(args.out) / f"target_{args.data}.torchscript.pt" if args.out else None
    if args.model or (cached is not None and cached.exists()):
        target = load_encoder(args.model or str(cached), device="cpu")
    else:
        model, _ = train_ssl_encoder(
            target_data.pixels, EncoderRecipe("simclr", "resnet-tiny"),
            TrainConfig(epochs=args.target_epochs, batch_size=256, lr=3e-3, amp="auto", seed=0,
                        device="cpu"))
        if cached is not None:  # a rerun with the same --out reuses the target
            cached.parent.mkdir(parents=True, exist_ok=True)
            export_torchscript(model, cached)
        target = ModuleEncoder(model, device="cpu")

    n = min(args.queries, len(thief), len(legit))
    spread = thief.images[:n]
    views = create_attack("contsteal", family="stealing").query_views(int(spread.shape[-1]))
    assert views is not None
    contsteal_views = views(spread, torch.Generator().manual_seed(0), 1)[:, 0]
    clients = {"legitimate": legit.images[:n], "thief-clean": spread,
               "thief-contsteal": contsteal_views}
    defences = parse_answer_defences(args.defences)
    curves: dict[str, dict[str, list[dict]]] = {}
    legit_probe: dict[str, float] = {}
    assert legit.labels is not None
    labels = legit.labels[:n]
    legit_probe["none"] = own_task_accuracy(target.embed(clients["legitimate"]), labels)
    print(f"data {args.data}, {n} queries per client, requests of {REQUEST}")
    for defence in defences:
        curves[defence.spec] = {}
        for name, images in clients.items():
            curves[defence.spec][name], answers = coverage_curve(target, images, defence)
            if name == "legitimate":
                legit_probe[defence.spec] = own_task_accuracy(answers, labels)
        points = curves[defence.spec]["legitimate"]
        print(f"defence {defence.spec}: coverage before each request and the noise std "
              f"it gets")
        print(f"{'client':16s} " + " ".join(f"{'@' + str(p['queries']):>14s}"
                                            for p in points))
        for name, curve in curves[defence.spec].items():
            print(f"{name:16s} " + " ".join(f"{p['coverage']:5.1f}% {p['noise_std']:7.1e}"
                                            for p in curve))
    print(f"legitimate client's own {args.legit_classes}-class probe: " + ", ".join(
        f"{acc:.3f} ({spec})" for spec, acc in legit_probe.items()))

    report = steal_encoder(target, thief, budgets=args.budgets, methods=args.methods,
                           target_defences=[parse_answer_defences("none")[0], *defences],
                           epochs=args.epochs, device="cpu", probe_train=probe_train,
                           probe_test=probe_test, out_dir=args.out)
    print(f"target linear probe {report['target_probe_accuracy']:.3f}; random-init "
          f"surrogate {report['random_init_probe_accuracy']:.3f}")
    print(f"{'method':12s} {'defence':10s} {'budget':>7s} {'probe acc':>9s} "
          f"{'procrustes':>10s}")
    rows = []
    for r in report["results"]:
        m = r["metrics"]
        print(f"{r['method']:12s} {r['defence']:10s} {r['budget']:7d} "
              f"{m['surrogate_probe_accuracy']:9.3f} {m['procrustes_cosine']:10.3f}")
        rows.append({"method": r["method"], "defence": r["defence"], "budget": r["budget"],
                     "surrogate_probe_accuracy": m["surrogate_probe_accuracy"],
                     "procrustes_cosine": m["procrustes_cosine"]})
    for d in report.get("defences") or []:
        print(f"defence {d['defence']:10s}: the target's probe through it (one client "
              f"answered in probe order) {d['target_probe_accuracy']:.3f}")
    if args.json:
        write_json(args.json, {
            "benchmark": "b4b", "data": args.data, "defences": [d.spec for d in defences],
            "request_size": REQUEST, "queries_per_client": n,
            "legit_classes": args.legit_classes, "curves": curves,
            "legitimate_probe": legit_probe,
            "target_probe_accuracy": report["target_probe_accuracy"],
            "random_init_probe_accuracy": report["random_init_probe_accuracy"],
            "stealing": rows, "defence_costs": report.get("defences"), "epochs": args.epochs,
            "wall_seconds": round(time.time() - started, 1)})
        print(f"wrote {Path(args.json)}", file=sys.stderr)


if __name__ == "__main__":
    main()
