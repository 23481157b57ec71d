"""Projection and prediction heads used by the SSL methods."""

from __future__ import annotations

import torch
from torch import nn

from leakprobe.models.registry import create_model, int_attribute, register_model


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

    ``forward`` gives embeddings comparable with the target's. ``tokens`` are the backbone's
    tokens mapped by the same linear head, so they live in the embedding space too (for a
    mean-pooling backbone the embedding is exactly their mean); the model declares it with
    ``tokens_in_embedding_space``, which PartCrop checks.
    """

    def __init__(self, backbone: nn.Module, out_dim: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(int_attribute(backbone, "embed_dim"), out_dim)
        self.embed_dim = out_dim
        self.input_size: int = int(getattr(backbone, "input_size", 32))
        self.tokens_in_embedding_space = bool(
            getattr(backbone, "tokens_in_embedding_space", True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    @torch.jit.export
    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, out_dim): the backbone's tokens through the head (a per-token linear map)."""
        # TorchScript compiles this body, so no typed helper here; the backbone's ``tokens`` is
        # a method, which nn.Module.__getattr__'s stub types as a tensor or a module
        return self.head(self.backbone.tokens(x))  # type: ignore[operator]


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


class DINOHead(nn.Module):
    """DINO's projection head: MLP -> l2-normalised bottleneck -> weight-normalised linear.

    The paper uses 3 layers of width 2048, a 256-d bottleneck and 65536 outputs, GELU and no
    BatchNorm, and a last layer whose weight is normalised with its gain fixed to 1
    (``norm_last_layer``). Here every size is a parameter; the last layer is the cosine of
    the bottleneck with each output prototype (no BatchNorm, so it runs per image).

    Args:
        in_dim: backbone embedding size.
        out_dim: number of prototypes (softmax outputs).
        hidden: MLP width.
        bottleneck: size of the normalised bottleneck.
        layers: MLP layers before the bottleneck (>= 1).
        norm: BatchNorm after each hidden layer (DINO's ``use_bn_in_head``).
        norm_last: normalise the prototypes (gain fixed to 1: logits are cosines); False
            learns their norms too (the paper's ``norm_last_layer=False``).
    """

    def __init__(
        self, in_dim: int, out_dim: int, hidden: int = 512, bottleneck: int = 128,
        layers: int = 3, norm: bool = False, norm_last: bool = True,
    ) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        d = in_dim
        for _ in range(layers - 1):
            mods += [nn.Linear(d, hidden), *([nn.BatchNorm1d(hidden)] if norm else []), nn.GELU()]
            d = hidden
        mods.append(nn.Linear(d, bottleneck))
        self.mlp = nn.Sequential(*mods)
        self.norm_last = norm_last
        # unit-norm rows at initialisation either way (weight norm with gain 1)
        self.prototypes = nn.Parameter(
            nn.functional.normalize(torch.randn(out_dim, bottleneck), dim=-1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = nn.functional.normalize(self.mlp(x), dim=-1)
        w = nn.functional.normalize(self.prototypes, dim=-1) if self.norm_last else self.prototypes
        return z @ w.t()
