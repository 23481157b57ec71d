"""Projection and prediction heads used by the SSL methods."""

from __future__ import annotations

from torch import nn


def mlp_head(
    in_dim: int, hidden: int, out_dim: int, layers: int = 2, norm: bool = True
) -> nn.Module:
    """An MLP ``in -> hidden (x layers-1) -> out`` with BatchNorm + ReLU between layers."""
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers - 1):
        mods.append(nn.Linear(d, hidden))
        if norm:
            mods.append(nn.BatchNorm1d(hidden))
        mods.append(nn.ReLU(inplace=True))
        d = hidden
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)
