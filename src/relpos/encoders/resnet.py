"""``resnet32``: the CIFAR ResNet-32 of He et al. (2016, §4.2), as the Spatial Reasoning paper trains it.

A 3×3 stem of 16 channels without pooling, then 3 stages of 5 basic blocks (two 3×3 convolutions
with batch norm each) of 16, 32 and 64 channels, the last two starting with a stride of 2, and a
global average pool: a 64-d vector per image, about 0.46 M weights. timm cannot build it from its
constructor arguments (its ResNet stem always downsamples, by 4), hence this module.

Where the width or the number of channels changes, the shortcut is a 1×1 convolution with batch
norm (He et al.'s option B, as Relational Reasoning's and Spatial Reasoning's code do); the paper's
CIFAR network uses zero-padding shortcuts (option A), 2,752 weights fewer (463,504 instead of
466,256 for three input channels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .base import Encoder, EncoderOptions

#: Channels of the three stages and blocks per stage: ResNet-(6·5 + 2) = ResNet-32.
STAGE_CHANNELS = (16, 32, 64)
BLOCKS_PER_STAGE = 5


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch norm, and the shortcut added before the last ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet32Encoder(Encoder):
    """CIFAR ResNet-32 (3×3 stem, no pooling, 16/32/64 channels, 64-d output): one vector per image."""

    name = "resnet32"
    outputs = ("vector",)
    n_axes = (2,)
    Config = EncoderOptions  # the paper's network has no setting to choose: arch alone

    def __init__(self, config: Any, in_channels: int, patch_shape: Sequence[int]):
        super().__init__(config, in_channels, patch_shape)
        self.stem = nn.Sequential(
            nn.Conv2d(self.in_channels, STAGE_CHANNELS[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(STAGE_CHANNELS[0]),
            nn.ReLU(inplace=True),
        )
        blocks = []
        width = STAGE_CHANNELS[0]
        for stage, channels in enumerate(STAGE_CHANNELS):
            for index in range(BLOCKS_PER_STAGE):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(width, channels, stride))
                width = channels
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = STAGE_CHANNELS[-1]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def embed_inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images to ``(B, 64)`` vectors."""
        return self.embed_inputs(x)
