"""A plain CNN encoder (no residual connections, no BatchNorm): the "other architecture" of
the recipe-mismatch calibration benchmark (``benchmarks/calibration.py --reference-arch
benchmarks/small_cnn.py:build``), a factory as users give to ``--reference-arch``."""

from __future__ import annotations

from torch import nn


class SmallCNN(nn.Module):
    """Four 3x3 convolutions (16-32-64-128 channels, GroupNorm, ReLU, stride 2 from the
    second), global average pooling: 128-d embeddings of (B, 3, H, W) images."""

    embed_dim = 128

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = (3, 16, 32, 64, 128)
        for i, (c_in, c_out) in enumerate(zip(channels, channels[1:], strict=False)):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=1 if i == 0 else 2, padding=1),
                       nn.GroupNorm(4, c_out), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)

    def forward(self, images):
        return self.features(images).mean(dim=(2, 3))


def build() -> SmallCNN:
    """A fresh, untrained :class:`SmallCNN`."""
    return SmallCNN()
