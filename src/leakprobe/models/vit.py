"""A small Vision Transformer whose patch tokens are exposed to the auditor.

``vit-tiny``: patch 4 at 32x32 (64 patches), width 192, 3 heads; ``depth`` defaults to 6
rather than ViT-Tiny's 12 so it trains on a CPU (pass ``depth=12`` for the original).
Position embeddings are interpolated for other input sizes, so part crops at half size work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leakprobe.models.registry import register_model


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """ViT with a CLS token; ``forward`` gives the CLS embedding, ``tokens`` the patch tokens."""

    def __init__(
        self,
        input_size: int = 32,
        patch_size: int = 4,
        dim: int = 192,
        depth: int = 6,
        heads: int = 3,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.patch_size = patch_size
        self.grid = input_size // patch_size
        self.embed_dim = dim
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1))
        self.mean: torch.Tensor  # the buffers' types (not class annotations: TorchScript
        self.std: torch.Tensor  # reads those, and cannot parse them as strings)
        self.patch_embed = nn.Conv2d(3, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid * self.grid, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        # CLS embedding and patch tokens leave the same final norm, no head: one space
        self.tokens_in_embedding_space = True

    def _pos(self, h: int, w: int) -> torch.Tensor:
        if h == self.grid and w == self.grid:
            return self.pos_embed
        grid = self.pos_embed.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return grid.flatten(2).transpose(1, 2)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """All output tokens, CLS first: (B, 1 + L, D)."""
        x = self.patch_embed((x - self.mean) / self.std)
        h, w = x.shape[-2], x.shape[-1]
        x = x.flatten(2).transpose(1, 2) + self._pos(h, w)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.norm(self.blocks(x))

    def encode_visible(self, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """Encode only the patches ``ids_keep`` (B, K) of each image, CLS first: (B, 1 + K, D).

        The MAE encoder path: patches are embedded with their position, the kept ones are
        gathered per image, and only those (plus CLS) go through the blocks.
        """
        x = self.patch_embed((x - self.mean) / self.std)
        h, w = x.shape[-2], x.shape[-1]
        x = x.flatten(2).transpose(1, 2) + self._pos(h, w)
        x = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.norm(self.blocks(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[:, 0]

    @torch.jit.export
    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[:, 1:]


@register_model("vit-tiny")
def vit_tiny(**kw) -> ViT:
    """ViT with patch 4 at 32x32, width 192, 3 heads, depth 6 (override with ``depth=12``)."""
    return ViT(**kw)
