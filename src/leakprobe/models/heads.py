"""Projection and prediction heads used by the SSL methods."""

from __future__ import annotations

import torch
from torch import nn

from leakprobe.models.registry import create_model, register_model


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


class Surrogate(nn.Module):
    """A stolen encoder: a registered backbone plus a linear map into the target's space.

    ``forward`` gives embeddings comparable with the target's; ``tokens`` are the backbone's.
    """

    def __init__(self, backbone: nn.Module, out_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.embed_dim, out_dim)
        self.embed_dim = out_dim
        self.input_size: int = int(getattr(backbone, "input_size", 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    @torch.jit.export
    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.tokens(x)


@register_model("surrogate")
def surrogate(
    backbone: str = "resnet-tiny",
    out_dim: int = 128,
    backbone_kwargs: dict | None = None,
    input_size: int = 32,
) -> Surrogate:
    """A backbone (by name) with a linear head to ``out_dim``: what encoder stealing trains."""
    return Surrogate(create_model(backbone, input_size=input_size, **(backbone_kwargs or {})),
                     out_dim)
