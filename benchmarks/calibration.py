"""Calibrated (``--knowledge reference``) vs uncalibrated encoder attacks, at low FPR.

A SimCLR resnet-tiny target trains on ``--members`` Fashion-MNIST images (digits when the
Debian package is absent); ``--nonmembers`` other images are the audit's non-members and
``--population`` more are the attacker's reference data. The uncalibrated attacks run under
``known-subset`` (cross-fitted on the audited labels: the usual audit); the calibrated ones
(``lira-*``, ``rmia-*``) against R reference encoders trained with the target's recipe on
random halves of the population data, for each R of ``--references``. EncoderMI also runs
uncalibrated with ``--matched-views`` views (16: as many as the ``infonce`` statistic queries),
and the best uncalibrated attack is the best of both, so a calibrated win is not just more
queries. It prints AUC and TPR
at 1% and 0.1% FPR per attack (``-`` where the non-members cannot resolve that FPR: fewer than
10 false positives allowed), the best of each kind, and the references' training seconds;
and writes JSON. Target and references are cached in ``--out`` (rerunning reuses them).
``lira-joint`` (the multivariate LiRA over the statistics the calibrated attacks pay for
anyway) runs with them, and ``partcrop-v2`` with the uncalibrated attacks.

The recipe mismatch an auditor usually faces: ``--reference-arch`` gives the references
another architecture (a registered name or ``file.py:factory``, e.g. the plain CNN of
``benchmarks/small_cnn.py``) and ``--reference-epochs`` a shorter schedule than the
target's; ``--reference-init`` starts them from given weights.

    python benchmarks/calibration.py --references 4,8 --json benchmarks/results/calibration.json
    python benchmarks/calibration.py --references 4 --target-epochs 300 --reference-epochs 100 \
        --reference-arch benchmarks/small_cnn.py:build \
        --json benchmarks/results/calibration_mismatch.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def _metrics(report: dict) -> dict:
    out = {}
    for r in report["results"]:
        m = r["metrics"]
        out[r["attack"]] = {"auc": m["auc"], "tpr_at_1pct": m["tpr_at_fpr"].get("0.01"),
                            "tpr_at_0.1pct": m["tpr_at_fpr"].get("0.001")}
    return out


def _best(rows: dict, key: str, calibrated: bool) -> tuple[str, float]:
    pool = {a: v[key] for a, v in rows.items()
            if a != "blind" and v[key] is not None
            and a.startswith(("lira-", "rmia-")) == calibrated}
    if not pool:
        return "-", float("nan")
    name = max(pool, key=lambda a: pool[a])
    return name, float(pool[name])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--nonmembers", type=int, default=1000)
    parser.add_argument("--population", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--target-epochs", type=int, default=200)
    parser.add_argument("--reference-epochs", type=int, default=200)
    parser.add_argument("--references", default="4,8")
    parser.add_argument("--reference-arch", default=None,
                        help="the references' architecture (default: the target's, "
                             "resnet-tiny): a registered name or file.py:factory")
    parser.add_argument("--reference-init", default=None,
                        help="weights the references start from (default: random)")
    parser.add_argument("--shared-base-epochs", type=int, default=0,
                        help="LiRA's cheap references: first train one encoder of the "
                             "references' architecture on all the population data for this "
                             "many epochs, then fine-tune every reference from it for "
                             "--reference-epochs (its time counts in the references')")
    parser.add_argument("--out", default="runs/bench-calibration")
    parser.add_argument("--json", default="benchmarks/results/calibration.json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--matched-views", type=int, default=16,
                        help="views of the uncalibrated EncoderMI rerun (infonce's default)")
    args = parser.parse_args()
    os.environ.setdefault("LEAKPROBE_PROGRESS", "0")

    import torch

    from leakprobe.data.loaders import find_fashion_mnist, load_dataset
    from leakprobe.data.splits import make_split
    from leakprobe.targets.encoder import ModuleEncoder
    from leakprobe.targets.families import load_target
    from leakprobe.training.encoder import EncoderRecipe, save_encoder, train_ssl_encoder
    from leakprobe.training.trainer import TrainConfig
    from leakprobe.workflows.audit import audit_encoder
    from leakprobe.workflows.references import train_references

    spec = "fashion-mnist:train" if find_fashion_mnist() else "digits"
    data = load_dataset(spec, args.image_size)
    split = make_split(data, args.members, args.nonmembers + args.population, seed=0)
    members = split.members
    nonmembers = split.nonmembers.subset(range(args.nonmembers))
    population = split.nonmembers.subset(range(args.nonmembers,
                                               args.nonmembers + args.population))
    recipe = EncoderRecipe("simclr", "resnet-tiny", {}, (0.08, 1.0),
                           {"temperature": 0.2, "proj_dim": 0})
    out = Path(args.out)
    target_dir = out / "target"
    t0 = time.time()
    if not (target_dir / "model.json").exists():
        config = TrainConfig(epochs=args.target_epochs, batch_size=256, lr=3e-3, seed=0,
                             device=args.device)
        backbone, _ = train_ssl_encoder(members.pixels, recipe, config)
        save_encoder(backbone.cpu(), recipe, target_dir, {"train": config.to_dict()})
    target_seconds = time.time() - t0
    target = load_target(str(target_dir / "encoder.safetensors"), family="encoder",
                         device=args.device)
    assert isinstance(target, ModuleEncoder)

    rows: dict[str, dict] = {}
    t0 = time.time()
    report = audit_encoder(target, members, nonmembers,
                           attacks="all,sslmem,infonce,partcrop-v2", permutations=0, seed=0)
    rows["uncalibrated (known-subset)"] = {"attacks": _metrics(report),
                                           "audit_seconds": round(time.time() - t0, 1)}
    # the same attacks with as many views as the calibrated infonce statistic queries (16),
    # so a calibrated win is not just more queries
    t0 = time.time()
    report = audit_encoder(target, members, nonmembers, attacks="encodermi",
                           permutations=0, seed=0, n_views=args.matched_views)
    rows[f"uncalibrated, {args.matched_views} views"] = {
        "attacks": {f"{a}@{args.matched_views}": m for a, m in _metrics(report).items()
                    if a != "blind"},
        "audit_seconds": round(time.time() - t0, 1)}
    from dataclasses import replace

    ref_recipe = replace(recipe, arch=args.reference_arch or recipe.arch,
                         init=args.reference_init)
    base_seconds = 0.0
    if args.shared_base_epochs:
        # one encoder on every population image; the references start from it (audited
        # images are in none of them, so offline LiRA on the candidates stays valid)
        base_dir = out / f"shared-base-{args.shared_base_epochs}"
        t0 = time.time()
        if not (base_dir / "model.json").exists():
            config = TrainConfig(epochs=args.shared_base_epochs, batch_size=256, lr=3e-3,
                                 seed=1, device=args.device)
            backbone, _ = train_ssl_encoder(population.pixels, ref_recipe, config)
            save_encoder(backbone.cpu(), ref_recipe, base_dir, {"train": config.to_dict()})
        base_seconds = time.time() - t0
        ref_recipe = replace(ref_recipe, init=str(base_dir / "encoder.safetensors"))
    for r in sorted(int(x) for x in args.references.split(",")):
        config = TrainConfig(epochs=args.reference_epochs, batch_size=256, lr=3e-3, seed=0,
                             device=args.device)
        t0 = time.time()
        refs = train_references(population, count=r, recipe=ref_recipe, config=config,
                                out_dir=out / "references", seed=0, n_population=1000,
                                device=args.device)
        train_seconds = time.time() - t0
        t0 = time.time()
        report = audit_encoder(target, members, nonmembers, knowledge="reference",
                               references=refs, attacks="calibrated,lira-joint",
                               permutations=0, seed=0)
        rows[f"calibrated, R={r}"] = {
            "attacks": _metrics(report), "audit_seconds": round(time.time() - t0, 1),
            # the R references' recorded training time (cached ones included)
            "reference_training_seconds": round(refs.description["train_seconds"]
                                                + base_seconds, 1),
            "shared_base_seconds": round(base_seconds, 1),
            "wall_seconds_now": round(train_seconds, 1),
            "references_trained_now": refs.description["trained_now"]}
        torch.manual_seed(0)

    print(f"\ndata {spec} at {args.image_size} px: {args.members} members, {args.nonmembers} "
          f"non-members, {args.population} population images; target {args.target_epochs} "
          f"epochs, references {args.reference_epochs} epochs, {ref_recipe.arch}"
          + (f" from {ref_recipe.init}" if ref_recipe.init else "")
          + (" (the target's recipe)" if ref_recipe == recipe
             and args.reference_epochs == args.target_epochs else "") + "\n")
    print(f"{'setting':<28} {'attack':<28} {'AUC':>6} {'TPR@1%':>7} {'TPR@0.1%':>9}")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for setting, row in rows.items():
        for attack, m in row["attacks"].items():
            print(f"{setting:<28} {attack:<28} {m['auc']:>6.3f} {fmt(m['tpr_at_1pct']):>7} "
                  f"{fmt(m['tpr_at_0.1pct']):>9}")
    base = {a: m for setting, row in rows.items() if setting.startswith("uncalibrated")
            for a, m in row["attacks"].items()}
    summary = {}
    u_name, u_tpr = _best(base, "tpr_at_1pct", False)
    u_auc_name, u_auc = _best(base, "auc", False)
    print(f"\nbest uncalibrated: TPR@1% {u_tpr:.3f} ({u_name}), AUC {u_auc:.3f} ({u_auc_name})")
    for setting, row in rows.items():
        if not setting.startswith("calibrated"):
            continue
        c_name, c_tpr = _best(row["attacks"], "tpr_at_1pct", True)
        c_auc_name, c_auc = _best(row["attacks"], "auc", True)
        ratio = c_tpr / u_tpr if u_tpr > 0 else float("inf")
        summary[setting] = {"best_tpr_at_1pct": [c_name, c_tpr], "best_auc": [c_auc_name, c_auc],
                            "tpr_ratio_to_uncalibrated": ratio,
                            "reference_training_seconds": row["reference_training_seconds"]}
        print(f"best {setting}: TPR@1% {c_tpr:.3f} ({c_name}), {ratio:.2f}x; AUC {c_auc:.3f} "
              f"({c_auc_name}); the {setting.split('=')[-1]} references took "
              f"{row['reference_training_seconds']:.0f} s to train "
              f"({row['references_trained_now']} new now)")
    result = {"data": spec, "image_size": args.image_size, "members": args.members,
              "nonmembers": args.nonmembers, "population": args.population,
              "target_epochs": args.target_epochs, "reference_epochs": args.reference_epochs,
              "target_arch": recipe.arch, "reference_arch": ref_recipe.arch,
              "reference_init": ref_recipe.init,
              "shared_base_epochs": args.shared_base_epochs,
              "target_training_seconds": round(target_seconds, 1), "settings": rows,
              "best_uncalibrated": {"tpr_at_1pct": [u_name, u_tpr], "auc": [u_auc_name, u_auc]},
              "summary": summary, "cpu": os.cpu_count()}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
