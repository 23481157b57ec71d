"""The predictability error of Shafran, Peleg and Hoshen (ICCV 2021), batched in torch.

How hard is a sample, independently of any model? Fit a linear regression from per-pixel
input features to the ground-truth output pixels on a random 70% of the pixels and measure
the mean L1 error on the other 30%. The reference code fits one scikit-learn regression per
image on the CPU; here every image of a batch is solved at once:

- ``ridge == 0``: exact least squares with ``torch.linalg.lstsq`` in float64 (minimum-norm
  when under-determined), matching scikit-learn's ``LinearRegression``;
- ``ridge > 0``: the primal normal equations (features <= pixels) or the dual / kernel form
  (pixels < features, e.g. the paper's 3840 WRN features) solved by batched Cholesky.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_split(n_pixels: int, train_fraction: float, seed: int) -> tuple[torch.Tensor, ...]:
    """Seeded random split of pixel indices into (train, test)."""
    perm = torch.randperm(n_pixels, generator=torch.Generator().manual_seed(seed))
    n_train = int(round(n_pixels * train_fraction))
    return perm[:n_train], perm[n_train:]


def _design(features: torch.Tensor) -> torch.Tensor:
    """(B, F, S, S) -> (B, P, F + 1) with an intercept column."""
    x = features.flatten(2).transpose(1, 2).double()
    return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)


def _solve(xtr: torch.Tensor, ytr: torch.Tensor, xte: torch.Tensor, ridge: float) -> torch.Tensor:
    """Predictions on test pixels of per-image linear regressions, all images at once."""
    if ridge == 0:
        if xtr.device.type == "cpu":
            w = torch.linalg.lstsq(xtr, ytr, driver="gelsd").solution
            return xte @ w
        ridge = 1e-8  # CUDA's lstsq needs full rank: fall back to a vanishing ridge
    p, f = xtr.shape[1], xtr.shape[2]
    if f <= p:  # primal: (X^T X + r I) w = X^T y
        gram = xtr.transpose(1, 2) @ xtr
        gram = gram + ridge * torch.eye(f, dtype=gram.dtype, device=gram.device)
        w = torch.cholesky_solve(xtr.transpose(1, 2) @ ytr, torch.linalg.cholesky(gram))
        return xte @ w
    kernel = xtr @ xtr.transpose(1, 2)  # dual: w = X^T (X X^T + r I)^-1 y
    kernel = kernel + ridge * torch.eye(p, dtype=kernel.dtype, device=kernel.device)
    alpha = torch.cholesky_solve(ytr, torch.linalg.cholesky(kernel))
    return (xte @ xtr.transpose(1, 2)) @ alpha


def predictability_error(
    features: torch.Tensor,
    outputs: torch.Tensor,
    train_fraction: float = 0.7,
    ridge: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """Per-image predictability error.

    Args:
        features: (B, F, S, S) per-pixel input features.
        outputs: (B, C, S', S') ground-truth outputs in [0, 1] (resized to S x S, bilinear).
        train_fraction: pixels used to fit each regression.
        ridge: L2 penalty (0: exact least squares).
        seed: seeds the pixel split (shared by every image).
    Returns:
        (B,) mean absolute error on the held-out pixels.
    """
    size = features.shape[-1]
    if outputs.shape[-1] != size or outputs.shape[-2] != size:
        outputs = F.interpolate(outputs.float(), size=(size, size), mode="bilinear",
                                align_corners=False)
    x = _design(features)
    y = outputs.flatten(2).transpose(1, 2).double()
    train, test = pixel_split(x.shape[1], train_fraction, seed)
    train, test = train.to(x.device), test.to(x.device)
    pred = _solve(x[:, train], y[:, train], x[:, test], ridge)
    return (pred - y[:, test]).abs().mean(dim=(1, 2)).float()
