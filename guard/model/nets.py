"""Torch architecture of the default model (imported only when torch is wanted).

:class:`FashionResNet` is a small residual CNN for ``float32 [B, 1, 28, 28]`` inputs in ``[0, 1]``.
Its last hidden layer is 64 features (ReLU, then global average pooling), followed by a single
``nn.Linear(64, 10)`` that produces the logits, so the exported ONNX graph ends in one affine
layer that ``guard`` can find.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock", "FashionResNet", "ResNet20", "to_rgb32"]


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with an identity shortcut, or a 1x1 conv + BN projection
    shortcut where the stride or the channel count changes. ReLU after the sum."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class FashionResNet(nn.Module):
    """Small ResNet for Fashion-MNIST.

    Layout: stem conv 1->32 (3x3) + BN + ReLU at 28x28; block 32->64 stride 2 (14x14);
    block 64->64 stride 2 (7x7); block 64->64 (7x7); global average pooling -> ``[B, 64]``;
    ``fc = nn.Linear(64, 10)`` -> logits ``[B, 10]``.
    """

    num_features = 64
    num_classes = 10

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True)
        )
        self.layer1 = BasicBlock(32, 64, stride=2)
        self.layer2 = BasicBlock(64, 64, stride=2)
        self.layer3 = BasicBlock(64, 64, stride=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_features, self.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``float32 [B, 1, 28, 28]`` -> penultimate features ``[B, 64]`` (non-negative)."""
        x = self.stem(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``float32 [B, 1, 28, 28]`` in ``[0, 1]`` -> logits ``[B, 10]``."""
        return self.fc(self.features(x))


class ResNet20(nn.Module):
    """CIFAR-style ResNet-20 (He et al. 2016, 3 stages of 3 basic blocks, 16/32/64 channels) for
    ``float32 [B, 3, 32, 32]`` inputs in ``[0, 1]``: the size of the deployed CIFAR-10 models.

    Its last hidden layer is 64 features (ReLU, global average pooling), then ``fc``. Trained here
    on Fashion-MNIST padded to 32x32 with the grey channel repeated (:func:`to_rgb32`), so that a
    3-channel, 32x32 model exists without a data download.
    """

    num_features = 64

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)
        )
        blocks: list[nn.Module] = []
        in_ch = 16
        for out_ch, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(BasicBlock(in_ch, out_ch, stride if i == 0 else 1))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.num_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``float32 [B, 3, 32, 32]`` -> penultimate features ``[B, 64]`` (non-negative)."""
        return torch.flatten(self.pool(self.blocks(self.stem(x))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def to_rgb32(x: torch.Tensor) -> torch.Tensor:
    """``[B, 1, 28, 28]`` -> ``[B, 3, 32, 32]``: zero padding of 2 pixels, grey channel repeated
    (the input layout of :class:`ResNet20` trained on 28x28 grey images)."""
    return torch.nn.functional.pad(x, (2, 2, 2, 2)).repeat(1, 3, 1, 1)
