"""Ownership verification on suspects built here: is each flagged as derived from the victim?

The owner trains a SimCLR resnet-tiny (the victim; no projection head, temperature 0.2,
lr 3e-3, batch 32: the recipe of the test suite's memorising target) on ``--members``
synthetic images and holds out as many more; every other set is disjoint and drawn from the
same distribution. Suspects:

- ``victim``: the owner's encoder itself;
- ``stolen-mse``, ``stolen-contsteal``: copies stolen by queries on the attacker's own images
  (``--budget`` queries, leakprobe's ``steal encoder`` methods);
- ``fine-tuned``: the victim's weights trained ``--finetune-epochs`` more epochs of SimCLR on
  other images;
- ``independent-a``, ``independent-b``: the victim's recipe on other images (two seeds).

Each suspect goes through ``leakprobe audit ownership`` (:func:`run_ownership`) with the
victim and ``--references`` references: the victim's recipe on other images of the same
size, given as ``--reference-model`` (the independent encoders are then one more draw of the
references' kind, the null both kinds of test assume). Prints one row per suspect (each
test's p-value, the combined p-value and the verdict) and writes JSON.

    python benchmarks/ownership.py [--members 64] [--epochs 300] [--references 2]
        [--budget 2000] [--out runs/bench/ownership] [--json benchmarks/results/ownership.json]

Everything trained is kept in ``--out`` and reused by a second run with the same settings.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from leakprobe.data.images import ImageSet
from leakprobe.data.loaders import save_image_folder
from leakprobe.data.synthetic import make_synthetic
from leakprobe.io import write_json
from leakprobe.models.serialization import export_torchscript
from leakprobe.targets.encoder import ModuleEncoder
from leakprobe.training.encoder import (
    EncoderRecipe,
    build_ssl_method,
    export_backbone,
    train_ssl_encoder,
)
from leakprobe.training.trainer import TrainConfig, Trainer
from leakprobe.workflows.ownership import OwnershipSpec, run_ownership
from leakprobe.workflows.steal import steal_encoder

RECIPE = EncoderRecipe("simclr", "resnet-tiny", {}, (0.08, 1.0),
                       {"temperature": 0.2, "proj_dim": 0})
LR, BATCH = 3e-3, 32
TESTS = ("calibrated-membership", "calibrated-isolation", "similarity-cka",
         "similarity-procrustes", "dataset-inference")


def _train(images: ImageSet, path: Path, epochs: int, seed: int) -> Path:
    """The victim's recipe on ``images``, cached as TorchScript."""
    if not path.exists():
        model, _ = train_ssl_encoder(images.images, RECIPE, TrainConfig(
            epochs=epochs, batch_size=BATCH, lr=LR, seed=seed, device="cpu", amp="auto"))
        export_torchscript(model.cpu(), path)
    return path


def _finetune(victim: Path, images: ImageSet, path: Path, epochs: int, seed: int) -> Path:
    """The victim's weights trained ``epochs`` more epochs of SimCLR on ``images``."""
    if not path.exists():
        torch.manual_seed(seed)
        method = build_ssl_method(RECIPE, images.image_size)
        state = torch.jit.load(str(victim)).state_dict()
        method.backbone.load_state_dict(state)
        config = TrainConfig(epochs=epochs, batch_size=BATCH, lr=LR / 3, seed=seed,
                             device="cpu", amp="auto")
        Trainer(method, config).fit(images.images, method.loss)
        export_torchscript(export_backbone(method).eval().cpu(), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=64, help="owner's training images")
    parser.add_argument("--epochs", type=int, default=300,
                        help="victim, independent encoders and references")
    parser.add_argument("--references", type=int, default=2)
    parser.add_argument("--budget", type=int, default=2000, help="stealing queries")
    parser.add_argument("--steal-epochs", type=int, default=10)
    parser.add_argument("--finetune-epochs", type=int, default=20)
    parser.add_argument("--n-views", type=int, default=10)
    parser.add_argument("--di-components", type=int, default=2,
                        help="dataset inference's mixture (the paper's 10 need >= 200 members)")
    parser.add_argument("--alpha", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (small models: 1 is fastest on 2 cores)")
    parser.add_argument("--out", default="runs/bench/ownership")
    parser.add_argument("--json", default="benchmarks/results/ownership.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    out = Path(args.out)
    (out / "models").mkdir(parents=True, exist_ok=True)
    m = args.members
    # one pool, cut into disjoint parts of one distribution
    sizes = {"members": m, "nonmembers": m, "independent-a": m, "independent-b": m,
             **{f"reference-{r}": m for r in range(args.references)}, "finetune": m,
             "query": args.budget}
    pool = make_synthetic(sum(sizes.values()), 32, seed=0)
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(0))
    parts, start = {}, 0
    for name, n in sizes.items():
        parts[name] = pool.subset(order[start:start + n])
        start += n
    folders = {}
    for name in ("members", "nonmembers"):
        folders[name] = out / "data" / name
        if not folders[name].exists():
            save_image_folder(ImageSet(parts[name].images, parts[name].ids), folders[name])

    models = out / "models"
    stages: dict[str, float] = {}
    victim = _train(parts["members"], models / "victim.pt", args.epochs, 0)
    stages["victim"] = time.time() - t0
    suspects: dict[str, Path] = {"victim": victim}
    victim_target = ModuleEncoder(torch.jit.load(str(victim)), device="cpu")
    report = steal_encoder(victim_target, parts["query"], budgets=args.budget,
                           methods="mse,contsteal", epochs=args.steal_epochs, device="cpu",
                           seed=0, out_dir=out / "steal")
    for r in report["results"]:
        suspects[f"stolen-{r['method']}"] = Path(r["model"]).parent / "encoder.torchscript.pt"
    stages["stealing"] = time.time() - t0 - sum(stages.values())
    suspects["fine-tuned"] = _finetune(victim, parts["finetune"], models / "finetuned.pt",
                                       args.finetune_epochs, 0)
    stages["fine-tuning"] = time.time() - t0 - sum(stages.values())
    for i, name in enumerate(("independent-a", "independent-b")):
        suspects[name] = _train(parts[name], models / f"{name}.pt", args.epochs, 1 + i)
    references = [str(_train(parts[f"reference-{r}"], models / f"reference-{r}.pt",
                             args.epochs, 10 + r)) for r in range(args.references)]
    stages["independent encoders and references"] = time.time() - t0 - sum(stages.values())
    train_seconds = time.time() - t0

    rows = []
    for name, path in suspects.items():
        spec = OwnershipSpec(
            suspect=str(path), members=str(folders["members"]),
            nonmembers=str(folders["nonmembers"]), victim=str(victim),
            reference_model=tuple(references), alpha=args.alpha, n_views=args.n_views,
            di_components=args.di_components,
            out=out / "audits" / name, device="cpu", batch_size=256)
        own = run_ownership(spec)
        p = {t["name"]: t["p_value"] for t in own["tests"]}
        rows.append({"suspect": name, "p_values": p, "p_value": own["p_value"],
                     "verdict": own["verdict"], "combined_tests": own["combined_tests"],
                     "statistics": {t["name"]: t["statistic"] for t in own["tests"]},
                     "similarity_z": {t["name"]: t.get("z") for t in own["tests"]
                                      if t["name"].startswith("similarity")},
                     "reference_values": {t["name"]: t.get("reference_values")
                                          for t in own["tests"]
                                          if t["name"].startswith("similarity")},
                     "seconds": own["seconds"]})

    def cell(v: float | None) -> str:
        return "skipped" if v is None else f"{v:.2g}"

    print(f"{args.members} members + {args.members} held out, victim/independents/"
          f"{args.references} references: SimCLR resnet-tiny, {args.epochs} epochs; "
          f"stealing budget {args.budget}; alpha {args.alpha}")
    head = ["suspect", "views", "isolation", "cka", "procrustes", "dataset-inf", "combined",
            "verdict"]
    print(f"{head[0]:18s} " + " ".join(f"{h:>11s}" for h in head[1:]))
    for r in rows:
        cells = [cell(r["p_values"].get(t)) for t in TESTS]
        print(f"{r['suspect']:18s} " + " ".join(f"{c:>11s}" for c in cells)
              + f" {r['p_value']:11.2g} {r['verdict']:>11s}")
    print("similarity statistics (the references': " + "; ".join(
        f"{k} {', '.join(f'{v:.2f}' for v in vals)}"
        for k, vals in rows[0]["reference_values"].items() if vals) + ")")
    for r in rows:
        print(f"{r['suspect']:18s} " + " ".join(
            f"{k.split('-')[1]} {r['statistics'][k]:.2f} (z {r['similarity_z'][k]:.1f})"
            for k in r["similarity_z"] if r["similarity_z"][k] is not None))
    wall = time.time() - t0
    print(f"wall {wall:.0f} s (training {train_seconds:.0f} s: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in stages.items()) + ")")
    if args.json:
        write_json(args.json, {
            "benchmark": "ownership", "data": "synthetic", "members": m, "nonmembers": m,
            "epochs": args.epochs, "references": args.references, "budget": args.budget,
            "steal_epochs": args.steal_epochs, "finetune_epochs": args.finetune_epochs,
            "n_views": args.n_views, "alpha": args.alpha, "di_components": args.di_components,
            "recipe": "simclr resnet-tiny, no head, temperature 0.2, lr 3e-3, batch 32",
            "rows": rows, "wall_seconds": round(wall, 1),
            "train_seconds": round(train_seconds, 1),
            "stage_seconds": {k: round(v, 1) for k, v in stages.items()}})


if __name__ == "__main__":
    main()
