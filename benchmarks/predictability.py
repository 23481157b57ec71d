"""Batched predictability error vs the per-image scikit-learn loop (target >= 5x, <= 1e-4).

The same images and per-pixel features go through leakprobe's batched torch solver and
through one ``LinearRegression`` per image (what the paper's reference code does).

    python benchmarks/predictability.py [--images 64] [--features builtin] [--json PATH]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.linear_model import LinearRegression

from leakprobe.attacks.membership.pixel_features import create_pixel_features
from leakprobe.attacks.membership.predictability import pixel_split, predictability_error
from leakprobe.data.synthetic import make_synthetic
from leakprobe.io import write_json


def sklearn_loop(features: torch.Tensor, outputs: torch.Tensor, seed: int) -> np.ndarray:
    train, test = pixel_split(features.shape[-1] ** 2, 0.7, seed)
    errors = []
    for f, y in zip(features, outputs, strict=True):
        x = f.flatten(1).t().double().numpy()
        t = y.flatten(1).t().double().numpy()
        reg = LinearRegression().fit(x[train], t[train])
        errors.append(np.abs(reg.predict(x[test]) - t[test]).mean())
    return np.array(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--features", default="builtin")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    data = make_synthetic(args.images, 32, seed=0)
    gray = data.images.mean(1, keepdim=True).expand(-1, 3, -1, -1)  # colourisation inputs
    extractor = create_pixel_features(args.features)
    with torch.inference_mode():
        feats = torch.cat([extractor(x) for x in gray.split(args.batch)])
    size = feats.shape[-1]
    outputs = torch.nn.functional.interpolate(data.images, size=(size, size), mode="bilinear",
                                              align_corners=False)
    start = time.perf_counter()
    ours = torch.cat([predictability_error(f, y) for f, y in
                      zip(feats.split(args.batch), outputs.split(args.batch), strict=True)])
    batched = time.perf_counter() - start
    start = time.perf_counter()
    ref = sklearn_loop(feats, outputs, seed=0)
    loop = time.perf_counter() - start
    diff = float(np.abs(ours.double().numpy() - ref).max())
    result = {"images": args.images, "features": int(feats.shape[1]), "resolution": size,
              "batched_images_per_second": round(args.images / batched, 1),
              "sklearn_images_per_second": round(args.images / loop, 1),
              "speedup": round(loop / batched, 2), "max_abs_difference": diff}
    print(f"{'solver':10s} {'images/s':>9s}")
    print(f"{'batched':10s} {result['batched_images_per_second']:9.1f}")
    print(f"{'sklearn':10s} {result['sklearn_images_per_second']:9.1f}")
    print(f"speed-up {result['speedup']:.1f}x, largest |difference| {diff:.2e} "
          f"({result['features']} features at {size}x{size})")
    if args.json:
        write_json(args.json, {"benchmark": "predictability", **result})


if __name__ == "__main__":
    main()
