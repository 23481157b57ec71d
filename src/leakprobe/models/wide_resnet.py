"""ImageNet ResNets with Bottleneck blocks (torchvision layout), in plain torch.

:class:`ImageNetResNet` reproduces torchvision's ``ResNet`` module tree exactly (``conv1``,
``bn1``, ``layer1`` .. ``layer4`` of ``Bottleneck`` blocks with ``conv1/bn1/conv2/bn2/conv3/
bn3`` and ``downsample.0/downsample.1``, ``fc``), so a torchvision state dict converted to
safetensors loads with ``load_state_dict(strict=True)``; files without the BatchNorm
``num_batches_tracked`` buffers (older torchvision weights) load too. Images enter in [0, 1]
and are normalised with the ImageNet mean and standard deviation inside.

``features(x)`` returns the outputs of ``layer1`` .. ``layer4`` (strides 4, 8, 16, 32), which
is what the predictability error of the reconstruction membership attack uses.

Converting torchvision weights (on a machine that has torchvision)::

    import torchvision
    from safetensors.torch import save_file
    m = torchvision.models.wide_resnet50_2(weights="IMAGENET1K_V1")
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, "wrn50_2.safetensors")
"""

from __future__ import annotations

import torch
from torch import nn

from leakprobe.models.registry import register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet v1.5: the stride sits on the 3x3 convolution)."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, width: int
    ) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return self.relu(out + identity)


class ImageNetResNet(nn.Module):
    """torchvision-compatible ResNet-50-style network (Bottleneck blocks).

    Args:
        layers: blocks per stage (``(3, 4, 6, 3)`` for ResNet-50 / Wide ResNet-50-2).
        width_per_group: bottleneck width of the first stage is ``64 * width_per_group / 64``
            (64: ResNet-50; 128: Wide ResNet-50-2).
        num_classes: outputs of ``fc``.
        input_size: the side the model expects (224 for ImageNet weights).
    """

    def __init__(
        self,
        layers: tuple[int, ...] = (3, 4, 6, 3),
        width_per_group: int = 128,
        num_classes: int = 1000,
        input_size: int = 224,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be four positive block counts, got {layers!r}")
        self.input_size = input_size
        self.register_buffer(
            "mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.mean: torch.Tensor  # the buffers' types (not class annotations: TorchScript
        self.std: torch.Tensor  # reads those, and cannot parse them as strings)
        self.inplanes = 64
        self.width_per_group = width_per_group
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(64, layers[0], 1)
        self.layer2 = self._make_layer(128, layers[1], 2)
        self.layer3 = self._make_layer(256, layers[2], 2)
        self.layer4 = self._make_layer(512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)
        self.feature_channels = [64 * 2**i * Bottleneck.expansion for i in range(4)]
        self.embed_dim = num_classes
        self.tokens_in_embedding_space = False  # tokens are layer4 features, forward is logits
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        width = int(planes * (self.width_per_group / 64.0))
        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, width)]
        self.inplanes = out
        layers += [Bottleneck(out, planes, 1, None, width) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    @torch.jit.export
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of layer1..layer4 for images (B, 3, H, W) in [0, 1].

        Returns:
            Four maps (B, C_i, H / 2**(i+2), W / 2**(i+2)) with C = 256, 512, 1024, 2048.
        """
        x = (x - self.mean) / self.std
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [f1, f2, f3, f4]

    @torch.jit.export
    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map as tokens (B, h*w, 2048)."""
        return self.features(x)[3].flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes), as torchvision's model gives them."""
        f4 = self.features(x)[3]
        return self.fc(torch.flatten(self.avgpool(f4), 1))


@register_model("wide-resnet50-2")
def wide_resnet50_2(**kw) -> ImageNetResNet:
    """Wide ResNet-50-2 (68.9M parameters), state-dict compatible with torchvision's."""
    layers = tuple(kw.pop("layers", (3, 4, 6, 3)))
    return ImageNetResNet(layers, kw.pop("width_per_group", 128), **kw)
