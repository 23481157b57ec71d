"""Reports shaped like `make demo`'s, built in memory in about a second (no training).

The encoder report has the demo's ten attacks (nine plus the blind floor) on 128 + 128
images, each carrying its full view recipe in ``params`` and in the context (as an audit
given ``--views`` writes them), the cross-fitted attacks with 100 shared label permutations,
and the encoder's utility; the image-to-image and captioner reports have their families'
attacks. Scores are Gaussian with a per-attack member shift chosen to land near the demo's
AUCs.
"""

from __future__ import annotations

import numpy as np

from leakprobe.evaluation.permutation import null_aucs_of_fixed_scores, permuted_labels
from leakprobe.report.schema import AttackResult, build_report
from leakprobe.views import parse_views

N = 128
PERMUTATIONS = 100
# attack -> (member shift in sds, cross-fitted on the audited labels, view preset or None)
ENCODER_ATTACKS = {
    "partcrop": (0.85, True, None),
    "encodermi-vector": (2.4, True, "byol"),
    "encodermi-set": (2.4, True, "byol"),
    "encodermi-threshold": (1.95, True, "byol"),
    "lpla-p1": (0.47, True, "byol,crop-scale=0.2:1"),
    "lpla-p2": (0.8, True, "byol,crop-scale=0.2:1"),
    "lpla-pinf": (1.04, True, "byol,crop-scale=0.2:1"),
    "baseline-norm": (1.35, False, None),
    "baseline-consistency": (1.9, False, "byol,crop-scale=0.2:1"),
    "blind": (0.07, True, None),
}
IMAGE2IMAGE_ATTACKS = {"reconstruction": (6.0, False, None),
                       "predictability": (-0.08, False, None),
                       "membership-error": (6.0, False, None)}
CAPTIONER_ATTACKS = {"m4i-metric": (3.0, False, None), "m4i-feature": (1.27, False, None),
                     "blind": (0.3, True, None)}


def _params(name: str, preset: str | None) -> dict:
    params: dict = {"seed": 0, "images_per_batch": 128}
    if name.startswith(("encodermi", "lpla", "baseline-consistency")):
        params["n_views"] = 10 if name.startswith("encodermi") else 4
    if name.startswith("encodermi"):
        params.update(variant=name.split("-")[1], epochs=100)
    if name == "partcrop":
        params.update(num_parts=128, crop_scale=[0.08, 0.2], similarity="dot", epochs=100)
    if preset is not None:
        params["views"] = parse_views(preset).to_dict()  # the long recipe (13 keys)
    return params


def membership_report(kind: str, attacks: dict, *, seed: int = 0, n: int = N,
                      n_bootstrap: int = 200, context: dict | None = None) -> dict:
    """A membership report of ``attacks`` (name -> (shift, fitted, view preset))."""
    rng = np.random.default_rng(seed)
    member = np.r_[np.ones(n, bool), np.zeros(n, bool)]
    labels = permuted_labels(member, PERMUTATIONS, seed)
    results = []
    for name, (shift, fitted, preset) in attacks.items():
        scores = rng.normal(size=2 * n) + shift * member
        results.append(AttackResult(
            attack=name, params=_params(name, preset), scores=scores, is_member=member,
            ids=[f"img{i:04d}" for i in range(2 * n)], folds=np.arange(2 * n) % 2,
            queries=2 * n * (10 if preset else 1), seconds=float(rng.uniform(0.5, 40)),
            null_aucs=null_aucs_of_fixed_scores(rng.normal(size=2 * n) if fitted else scores,
                                                labels),
            refitted=fitted))
    views = {name: parse_views(preset).to_dict()
             for name, (_, _, preset) in attacks.items() if preset}
    ctx = {"target": "runs/demo/target/encoder.safetensors", "members": "synthetic:128",
           "nonmembers": "synthetic:128 (unseen)", "permutations": PERMUTATIONS,
           **({"views_setting": "recipe given (owner's audit): byol", "views": views}
              if views else {}),
           **(context or {})}
    return build_report(kind, "known-subset", seed, results, context=ctx,
                        n_bootstrap=n_bootstrap)


def encoder_report(**kw) -> dict:
    return membership_report("encoder-membership", ENCODER_ATTACKS, context={
        "utility": {"knn_accuracy": 0.62, "linear_probe_accuracy": 0.71}}, **kw)


def demo_reports() -> list[dict]:
    """The demo page's three reports: encoder, image-to-image, captioner."""
    return [encoder_report(),
            membership_report("image2image-membership", IMAGE2IMAGE_ATTACKS, seed=1, n=64),
            membership_report("captioner-membership", CAPTIONER_ATTACKS, seed=2, n=60)]
