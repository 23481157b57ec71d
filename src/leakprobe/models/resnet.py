"""CIFAR-style ResNets (3x3 stem, no max-pool) that take images in [0, 1].

``forward`` gives the pooled embedding (B, D); ``tokens`` gives the last feature map as
(B, h*w, D) tokens, which is what PartCrop compares part embeddings against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leakprobe.models.registry import register_model


def make_norm(kind: str, channels: int) -> nn.Module:
    """BatchNorm, or GroupNorm (per-sample gradients for DP-SGD need it)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(32, channels // 4) or 1, channels)
    raise ValueError(f"norm must be 'batch' or 'group', got {kind!r}")


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = make_norm(norm, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = make_norm(norm, c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), make_norm(norm, c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCIFAR(nn.Module):
    """ResNet for small images.

    Args:
        blocks: residual blocks per stage.
        width: channels of the first stage (doubled at each later stage).
        norm: ``batch`` or ``group``.
        input_size: the square side the model is trained at (informative only: any size works).
    """

    def __init__(
        self,
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        width: int = 64,
        norm: str = "batch",
        input_size: int = 32,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1))
        self.mean: torch.Tensor  # the buffers' types (not class annotations: TorchScript
        self.std: torch.Tensor  # reads those, and cannot parse them as strings)
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), make_norm(norm, width))
        stages = []
        c_in = width
        for i, n in enumerate(blocks):
            c_out = width * 2**i
            layers = [BasicBlock(c_in, c_out, 1 if i == 0 else 2, norm)]
            layers += [BasicBlock(c_out, c_out, 1, norm) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.embed_dim = c_in
        self.tokens_in_embedding_space = True  # the embedding is the tokens' mean

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return self.stages(F.relu(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3))

    @torch.jit.export
    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).flatten(2).transpose(1, 2)


@register_model("resnet18-cifar")
def resnet18_cifar(**kw) -> ResNetCIFAR:
    """ResNet-18 adapted to 32x32 inputs (512-d embedding)."""
    return ResNetCIFAR(tuple(kw.pop("blocks", (2, 2, 2, 2))), kw.pop("width", 64), **kw)


@register_model("resnet-tiny")
def resnet_tiny(**kw) -> ResNetCIFAR:
    """A four-stage, one-block-per-stage ResNet of width 16 (128-d): CPU demos and tests."""
    return ResNetCIFAR(tuple(kw.pop("blocks", (1, 1, 1, 1))), kw.pop("width", 16), **kw)
