"""A small U-Net for image-to-image tasks (translation, denoising, segmentation).

Images enter in [0, 1] and are normalised inside; the output is in [0, 1] too: a sigmoid per
channel for image outputs, or a softmax over channels (class probabilities) for
segmentation. The model is TorchScript-scriptable and accepts any input side: sides that are
not a multiple of ``2**depth`` are padded (replicate) before the encoder and the output is
cropped back to the input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leakprobe.models.registry import register_model
from leakprobe.models.resnet import make_norm

OUTPUTS = ("sigmoid", "softmax")
UPSAMPLING = ("bilinear", "transpose")


class DoubleConv(nn.Module):
    """(3x3 conv -> norm -> ReLU) twice."""

    def __init__(self, c_in: int, c_out: int, norm: str) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False),
            make_norm(norm, c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            make_norm(norm, c_out),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Up(nn.Module):
    """Upsample the deeper map by 2, concatenate the skip connection, then a DoubleConv."""

    def __init__(self, c_deep: int, c_skip: int, norm: str, mode: str) -> None:
        super().__init__()
        self.transpose = mode == "transpose"
        if self.transpose:
            self.up: nn.Module = nn.ConvTranspose2d(c_deep, c_skip, 2, 2)
            self.conv = DoubleConv(2 * c_skip, c_skip, norm)
        else:
            self.up = nn.Identity()
            self.conv = DoubleConv(c_deep + c_skip, c_skip, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        if self.transpose:
            x = self.up(x)
        else:
            x = F.interpolate(x, size=[skip.shape[-2], skip.shape[-1]], mode="bilinear",
                              align_corners=False)
        return self.conv(torch.cat([x, skip], dim=1))


class UNet(nn.Module):
    """U-Net: ``depth`` max-pool downsamplings with skip connections, channels doubling.

    Args:
        in_channels: input channels (images are given in [0, 1]).
        out_channels: output channels (3 for images, the number of classes for segmentation).
        width: channels of the first level (doubled at each deeper level).
        depth: number of downsamplings (input sides are padded to a multiple of 2**depth).
        norm: ``batch`` or ``group`` (GroupNorm for DP-SGD).
        input_size: the square side the model is trained at (informative only).
        output: ``sigmoid`` (per-channel values in [0, 1]) or ``softmax`` (class
            probabilities over channels).
        up: ``bilinear`` upsampling or ``transpose`` (2x2 transposed convolutions).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        width: int = 16,
        depth: int = 3,
        norm: str = "batch",
        input_size: int = 32,
        output: str = "sigmoid",
        up: str = "bilinear",
    ) -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be 'sigmoid' or 'softmax', got {output!r}")
        if up not in UPSAMPLING:
            raise ValueError(f"up must be 'bilinear' or 'transpose', got {up!r}")
        if depth < 1 or width < 1 or in_channels < 1 or out_channels < 1:
            raise ValueError("depth, width, in_channels and out_channels must be >= 1")
        self.input_size = input_size
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depth = depth
        self.multiple = 2**depth
        self.output = output
        self.softmax_output = output == "softmax"
        self.register_buffer("mean", torch.full((1, in_channels, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, in_channels, 1, 1), 0.25))
        self.mean: torch.Tensor  # the buffers' types (not class annotations: TorchScript
        self.std: torch.Tensor  # reads those, and cannot parse them as strings)
        channels = [width * 2**i for i in range(depth + 1)]
        self.stem = DoubleConv(in_channels, channels[0], norm)
        self.downs = nn.ModuleList(
            [DoubleConv(channels[i], channels[i + 1], norm) for i in range(depth)]
        )
        self.ups = nn.ModuleList(
            [Up(channels[i + 1], channels[i], norm, up) for i in reversed(range(depth))]
        )
        self.head = nn.Conv2d(channels[0], out_channels, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activation outputs (B, out_channels, H, W) for images (B, C, H, W) in [0, 1]."""
        h, w = x.shape[-2], x.shape[-1]
        m = self.multiple
        pad_h, pad_w = (m - h % m) % m, (m - w % m) % m
        x = (x - self.mean) / self.std
        if pad_h > 0 or pad_w > 0:
            x = F.pad(x, [0, pad_w, 0, pad_h], mode="replicate")
        x = self.stem(x)
        skips: list[torch.Tensor] = []
        for down in self.downs:
            skips.append(x)
            x = down(F.max_pool2d(x, 2))
        for i, up in enumerate(self.ups):
            x = up(x, skips[len(skips) - 1 - i])
        return self.head(x)[:, :, :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs in [0, 1]: sigmoid values or softmax class probabilities (B, C', H, W)."""
        out = self.logits(x)
        if self.softmax_output:
            return torch.softmax(out, dim=1)
        return torch.sigmoid(out)


@register_model("unet-small")
def unet_small(**kw) -> UNet:
    """U-Net of width 16 and depth 3 (about 0.5M parameters): CPU demos and tests."""
    return UNet(width=kw.pop("width", 16), depth=kw.pop("depth", 3), **kw)
