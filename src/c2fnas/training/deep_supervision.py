"""Deep supervision (nnU-Net's default): logits heads on the decoder and a loss at every scale.

A C2FNAS network ends in one head on its last level-0 cell. ``DeepSupervision`` adds a 1x1x1
convolution to the last cell of each decoder level above the deepest (``decoder_nodes``: levels 2
and 1 of every topology in the space, at 1/8 and 1/4 of the input's resolution) and returns the
network's logits followed by those heads'. ``DeepSupervisionLoss`` scores each output against the
label taken down to its size (nearest voxel, so labels stay labels) and weights them like nnU-Net:
by resolution (1 for the full-resolution output, 1/2**(l + 1) for level ``l``), normalised to sum
to 1. The heads exist only while training: the saved model is the network alone, so prediction,
export and every model folder are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from c2fnas.nn.network import decoder_nodes


class DeepSupervision(nn.Module):
    """``network`` plus a logits head on each decoder level; ``forward`` returns a list of logits,
    the network's own first. Takes the network's arguments (a supernet's ops too)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network  # registered first: the optimizer sees its parameters first
        architecture = network.architecture
        self.taps = decoder_nodes(architecture)
        self.heads = nn.ModuleList(
            nn.Conv3d(architecture.channels(level), network.num_classes, 1)
            for _, level in self.taps
        )
        device = next(network.parameters()).device
        self.heads.to(device)

    def forward(self, x: torch.Tensor, *ops: Any) -> list[torch.Tensor]:
        path = ops[0] if ops else self.network.architecture.ops
        nodes = self.network.nodes(x, path)
        taps = zip(self.heads, self.taps, strict=True)
        return [self.network.head(nodes[-1]), *(head(nodes[node]) for head, (node, _) in taps)]

    def weights(self) -> list[float]:
        """The loss weight of each output of ``forward``, summing to 1."""
        return output_weights([level for _, level in self.taps])


def output_weights(levels: Sequence[int]) -> list[float]:
    """Weights of the full-resolution output and of heads at ``levels``: by resolution (level
    ``l`` is 1/2**(l + 1) of the input), normalised to sum to 1."""
    raw = [1.0, *(0.5 ** (level + 1) for level in levels)]
    return [value / sum(raw) for value in raw]


def downsample_label(label: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``(B, 1, *spatial)`` integer labels taken to ``size`` by the nearest voxel."""
    if tuple(label.shape[2:]) == tuple(size):
        return label
    return F.interpolate(label.float(), size=tuple(size), mode="nearest-exact").to(label.dtype)


class DeepSupervisionLoss(nn.Module):
    """``sum_i weights[i] * loss(outputs[i], label at outputs[i]'s size)``."""

    def __init__(self, loss: nn.Module, weights: Sequence[float]) -> None:
        super().__init__()
        self.loss = loss
        self.weights = list(weights)

    def forward(self, outputs: Sequence[torch.Tensor], label: torch.Tensor) -> torch.Tensor:
        if len(outputs) != len(self.weights):
            raise ValueError(f"{len(outputs)} outputs for {len(self.weights)} loss weights")
        total = outputs[0].new_zeros(())
        for weight, logits in zip(self.weights, outputs, strict=True):
            total = total + weight * self.loss(logits, downsample_label(label, logits.shape[2:]))
        return total
