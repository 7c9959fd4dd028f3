"""Torch architecture of the default model (imported only when torch is wanted).

:class:`FashionResNet` is a small residual CNN for ``float32 [B, 1, 28, 28]`` inputs in ``[0, 1]``.
Its last hidden layer is 64 features (ReLU, then global average pooling), followed by a single
``nn.Linear(64, 10)`` that produces the logits, so the exported ONNX graph ends in one affine
layer that ``guard`` can find.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock", "FashionResNet"]


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
