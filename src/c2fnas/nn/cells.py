"""Cells: pre-process each input to the cell's level, one op per input, sum, post-process.

The same ``Cell`` serves the stand-alone network (one op choice) and the supernet (all three):
each input owns a ``ModuleDict`` keyed by op name, so a supernet path and the network of the same
colouring share parameter names and weights copy over by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from c2fnas.nn.ops import make_op, relu_conv_norm
from c2fnas.space import Op


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Trilinear x2 of a (B, C, D, H, W) batch, voxel centres kept (``align_corners=False``)."""
    return nn.functional.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=False)


class Upsample(nn.Module):
    """Trilinear x2 (used by up-moving inputs and the head)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample2x(x)


def preprocess(in_channels: int, out_channels: int, level_change: int) -> nn.Module:
    """Bring an input to the cell's level: 0 same, +1 the cell moves down, -1 it moves up.

    The ReLU reads a node output that other cells read too, so it is in place only after the
    upsampling, whose output is this step's own.
    """
    if level_change == 0:
        return relu_conv_norm(in_channels, out_channels)
    if level_change == 1:
        return relu_conv_norm(in_channels, out_channels, (3, 3, 3), stride=2)
    if level_change == -1:
        return nn.Sequential(Upsample(), relu_conv_norm(in_channels, out_channels, inplace=True))
    raise ValueError(f"an input can only be one level away from its cell, got {level_change}")


class Cell(nn.Module):
    """One cell with one or two inputs.

    Args:
        input_channels: channels of each input, in wiring order (previous node first).
        level_changes: the cell's level minus each input's level.
        channels: the cell's output channels (C_l of its level).
        op_choices: the ops each input may run; one for a network, all for a supernet.
    """

    def __init__(
        self,
        input_channels: Sequence[int],
        level_changes: Sequence[int],
        channels: int,
        op_choices: Sequence[Op],
    ) -> None:
        super().__init__()
        self.pre = nn.ModuleList(
            preprocess(c, channels, change)
            for c, change in zip(input_channels, level_changes, strict=True)
        )
        self.paths = nn.ModuleList(
            nn.ModuleDict({op: make_op(op, channels) for op in op_choices}) for _ in input_channels
        )
        self.post = relu_conv_norm(channels, channels, inplace=True)  # on the cell's own sum

    def forward(self, inputs: Sequence[torch.Tensor], op: Op) -> torch.Tensor:
        total = None
        for x, pre, path in zip(inputs, self.pre, self.paths, strict=True):
            y = path[op](pre(x))
            total = y if total is None else total + y
        assert total is not None
        return self.post(total)
