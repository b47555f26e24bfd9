"""The reference 3D U-Net of Cicek et al. (2016), used to check our parameter and MAC counts.

Encoder 32-64, 64-128, 128-256, 256-512 with max-pooling; decoder with transposed-conv
up-sampling, concatenated skips and two 3x3x3 convs per level; BatchNorm + ReLU after each conv.
"""

from __future__ import annotations

import torch
from torch import nn


def _double_conv(in_channels: int, middle: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(in_channels, middle, 3, padding=1),
        nn.BatchNorm3d(middle),
        nn.ReLU(),
        nn.Conv3d(middle, out_channels, 3, padding=1),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(),
    )


class UNet3D(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 3) -> None:
        super().__init__()
        self.encoder = nn.ModuleList(
            [
                _double_conv(in_channels, 32, 64),
                _double_conv(64, 64, 128),
                _double_conv(128, 128, 256),
                _double_conv(256, 256, 512),
            ]
        )
        self.pool = nn.MaxPool3d(2)
        self.up = nn.ModuleList(nn.ConvTranspose3d(c, c, 2, stride=2) for c in (512, 256, 128))
        self.decoder = nn.ModuleList(
            [
                _double_conv(512 + 256, 256, 256),
                _double_conv(256 + 128, 128, 128),
                _double_conv(128 + 64, 64, 64),
            ]
        )
        self.out = nn.Conv3d(64, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for index, block in enumerate(self.encoder):
            x = block(x if index == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, block in zip(self.up, self.decoder, strict=True):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.out(x)
