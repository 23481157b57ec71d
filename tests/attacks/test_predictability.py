"""The batched predictability solver agrees with the per-image scikit-learn reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression

from leakprobe.attacks.membership.predictability import pixel_split, predictability_error


def sklearn_reference(features, outputs, seed, train_fraction=0.7):
    """One LinearRegression per image, as the paper's reference code does."""
    train, test = pixel_split(features.shape[-1] ** 2, train_fraction, seed)
    errors = []
    for f, y in zip(features, outputs, strict=True):
        x = f.flatten(1).t().double().numpy()
        t = y.flatten(1).t().double().numpy()
        reg = LinearRegression().fit(x[train], t[train])
        errors.append(np.abs(reg.predict(x[test]) - t[test]).mean())
    return np.array(errors)


@pytest.mark.parametrize("n_features", [5, 40])
def test_batched_solver_matches_sklearn(n_features):
    g = torch.Generator().manual_seed(0)
    features = torch.rand(4, n_features, 12, 12, generator=g)
    outputs = torch.rand(4, 3, 12, 12, generator=g)
    ours = predictability_error(features, outputs, seed=3).double().numpy()
    ref = sklearn_reference(features, outputs, seed=3)
    assert np.abs(ours - ref).max() <= 1e-4


def test_ridge_forms_agree_with_each_other():
    g = torch.Generator().manual_seed(1)
    outputs = torch.rand(3, 1, 8, 8, generator=g)
    primal = predictability_error(torch.rand(3, 10, 8, 8, generator=g), outputs, ridge=1e-6)
    assert torch.isfinite(primal).all()
    wide = torch.rand(3, 200, 8, 8, generator=g)  # more features than pixels: dual form
    dual = predictability_error(wide, outputs, ridge=1e-3)
    exact = predictability_error(wide, outputs, ridge=0)
    assert torch.isfinite(dual).all() and torch.isfinite(exact).all()


def test_predictable_outputs_have_lower_error():
    g = torch.Generator().manual_seed(2)
    features = torch.rand(2, 6, 16, 16, generator=g)
    linear = (features[:, :3] * 0.5 + 0.2).clamp(0, 1)  # a linear function of the features
    noise = torch.rand(2, 3, 16, 16, generator=g)
    assert (predictability_error(features, linear) < 1e-6).all()
    assert (predictability_error(features, noise) > 0.1).all()
