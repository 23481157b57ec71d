"""Backbones in the key layouts of published self-supervised checkpoints, in plain torch.

- ``resnet50``: torchvision's ResNet-50 (``conv1``, ``bn1``, ``layer1..4`` of Bottleneck blocks
  with ``downsample.0/.1``), as released by MoCo v2/v3, DINO, SimCLR ports, BYOL ports... The
  embedding is the global-average-pooled last stage (2048-d); the tokens are that last feature
  map as (B, h*w, 2048). The classifier ``fc`` is not part of the model (a checkpoint's ``fc``
  is a head, ignored when loading).
- ``vit-tiny-patch16``, ``vit-small-patch16``, ``vit-small-patch8``, ``vit-base-patch16``: timm's
  VisionTransformer (``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.N.{norm1,
  attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}``, ``norm``), as released by DINO, MoCo v3 and
  MAE. The embedding is the CLS token after the final norm; the tokens are the patch tokens
  after the same norm. Position embeddings are interpolated bicubically for other input sizes,
  as DINO's ``interpolate_pos_encoding`` does.

Every model takes images in [0, 1] and applies the ImageNet mean/std itself; the default input
side is 224.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from leakprobe.models.registry import register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: The registered names of the public-layout architectures (loaded by
#: :mod:`leakprobe.targets.checkpoints`).
PUBLIC_ARCHS = ("resnet50", "vit-tiny-patch16", "vit-small-patch16", "vit-small-patch8",
                "vit-base-patch16")


class _ImageNetInput(nn.Module):
    """Holds the ImageNet normalisation buffers (not saved: published weights lack them)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
                             persistent=False)
        self.mean: torch.Tensor  # the buffers' types (see models/vit.py)
        self.std: torch.Tensor

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet v1.5: the stride sits on the 3x3 convolution)."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1) -> None:
        super().__init__()
        c_out = width * self.expansion
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet50(_ImageNetInput):
    """torchvision's ResNet-50 without its classifier: pooled 2048-d embedding, map tokens.

    Args:
        input_size: the square side the model expects (any size works; default 224).
        layers: Bottleneck blocks per stage (ResNet-50: 3, 4, 6, 3).
    """

    def __init__(self, input_size: int = 224, layers: tuple[int, ...] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.input_size = input_size
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c_in = 64
        stages = []
        for i, n in enumerate(layers):
            width = 64 * 2**i
            blocks = [Bottleneck(c_in, width, 1 if i == 0 else 2)]
            c_in = width * Bottleneck.expansion
            blocks += [Bottleneck(c_in, width) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.embed_dim = c_in
        self.tokens_in_embedding_space = True  # the embedding is the tokens' mean

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's map (B, 2048, h, w)."""
        x = self.maxpool(F.relu(self.bn1(self.conv1(self.normalise(x)))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3))

    @torch.jit.export
    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).flatten(2).transpose(1, 2)


class PatchEmbed(nn.Module):
    """timm's patch embedding: one strided convolution named ``proj``."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Attention(nn.Module):
    """timm's multi-head self-attention (one ``qkv`` projection with bias, then ``proj``)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """timm's MLP: ``fc1``, GELU, ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TimmBlock(nn.Module):
    """timm's pre-norm transformer block (LayerNorm eps 1e-6)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TimmViT(_ImageNetInput):
    """timm's VisionTransformer (CLS token, learned position embeddings), without a head.

    Args:
        input_size: the square side the model expects (other sizes work; default 224).
        patch_size: side of a patch.
        dim: token width.
        depth: transformer blocks.
        heads: attention heads.
        pos_grid: side of the patch grid the position embeddings are stored for (default:
            ``224 // patch_size``, the grid of the published checkpoints, whatever
            ``input_size`` is).
    """

    def __init__(
        self,
        input_size: int = 224,
        patch_size: int = 16,
        dim: int = 384,
        depth: int = 12,
        heads: int = 6,
        pos_grid: int | None = None,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.patch_size = patch_size
        self.grid = pos_grid or 224 // patch_size
        self.embed_dim = dim
        self.patch_embed = PatchEmbed(patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + self.grid * self.grid, dim) * 0.02)
        self.blocks = nn.Sequential(*[TimmBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        # CLS embedding and patch tokens leave the same final norm, no head: one space
        self.tokens_in_embedding_space = True

    def _pos(self, h: int, w: int) -> torch.Tensor:
        """Position embeddings for an h x w patch grid, CLS first.

        Exactly DINO's ``interpolate_pos_encoding``: bicubic, with the scale factor
        ``(h + 0.1) / side`` (the 0.1 keeps the output size from rounding down).
        """
        if h == self.grid and w == self.grid:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        side = int(math.sqrt(patch_pos.shape[1]))
        grid = patch_pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=[(h + 0.1) / side, (w + 0.1) / side],
                             mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, grid.flatten(2).transpose(1, 2)], dim=1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """All output tokens after the final norm, CLS first: (B, 1 + L, D)."""
        x = self.patch_embed(self.normalise(x))
        h, w = x.shape[-2], x.shape[-1]
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self._pos(h, w)
        return self.norm(self.blocks(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[:, 0]

    @torch.jit.export
    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[:, 1:]


@register_model("resnet50")
def resnet50(**kw) -> ResNet50:
    """torchvision ResNet-50 layout (MoCo v2/v3, DINO...): 2048-d pooled embedding, 224 px."""
    return ResNet50(**kw)


@register_model("vit-tiny-patch16")
def vit_tiny_patch16(**kw) -> TimmViT:
    """timm ViT-Ti/16: width 192, 12 blocks, 3 heads, 224 px."""
    return TimmViT(**{"patch_size": 16, "dim": 192, "depth": 12, "heads": 3, **kw})


@register_model("vit-small-patch16")
def vit_small_patch16(**kw) -> TimmViT:
    """timm ViT-S/16 (DINO ``dino_deitsmall16``, MoCo v3 ViT-S): width 384, 12 blocks, 6 heads."""
    return TimmViT(**{"patch_size": 16, "dim": 384, "depth": 12, "heads": 6, **kw})


@register_model("vit-small-patch8")
def vit_small_patch8(**kw) -> TimmViT:
    """timm ViT-S/8 (DINO ``dino_deitsmall8``): width 384, 12 blocks, 6 heads, patch 8."""
    return TimmViT(**{"patch_size": 8, "dim": 384, "depth": 12, "heads": 6, **kw})


@register_model("vit-base-patch16")
def vit_base_patch16(**kw) -> TimmViT:
    """timm ViT-B/16 (DINO, MoCo v3, MAE ViT-B): width 768, 12 blocks, 12 heads, 224 px."""
    return TimmViT(**{"patch_size": 16, "dim": 768, "depth": 12, "heads": 12, **kw})
