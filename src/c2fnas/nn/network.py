"""The C2FNAS network and its supernet, built only from an ``Architecture``.

Shapes for a 96^3 patch at width 1 (F = 32)::

    input (B, in, 96, 96, 96)
    stem  -> level 0: (B, 64, 48, 48, 48)
    cells -> level l: (B, 64 * 2**l, 48 / 2**l, ...), the last cell back at level 0
    head  -> (B, classes, 96, 96, 96)  logits

Every spatial side of the input must be divisible by 16 (stem /2, then three /2 levels); in
training, instance norm also needs more than one voxel at level 3, so not every side may be 16.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from c2fnas.nn.cells import Cell, Upsample
from c2fnas.nn.ops import conv, norm
from c2fnas.space import OPS, Architecture, Op

DIVISOR = 16


def check_input_size(shape: Sequence[int]) -> None:
    """Raise a clear error unless every spatial side is divisible by 16."""
    sides = tuple(shape[2:])
    if len(sides) != 3 or any(side % DIVISOR for side in sides):
        raise ValueError(
            f"input of shape {tuple(shape)}: C2FNAS networks take (batch, channels, D, H, W) "
            f"with every spatial side divisible by {DIVISOR}"
        )


class _CellNetwork(nn.Module):
    def __init__(
        self,
        architecture: Architecture,
        in_channels: int,
        num_classes: int,
        op_choices: Sequence[Sequence[Op]],
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(
                f"need in_channels >= 1 and num_classes >= 1, got {in_channels}, {num_classes}"
            )
        self.architecture = architecture
        self.in_channels = in_channels
        self.num_classes = num_classes
        filters = architecture.filters
        stem_channels = architecture.channels(0)
        self.stem = nn.Sequential(
            conv(in_channels, filters, (3, 3, 3)),
            norm(filters),
            nn.ReLU(inplace=True),
            conv(filters, stem_channels, (3, 3, 3), stride=2),
            norm(stem_channels),
        )
        node_channels = [stem_channels]
        cells = []
        for cell_wiring, choices in zip(architecture.wiring, op_choices, strict=True):
            channels = architecture.channels(cell_wiring.level)
            cells.append(
                Cell(
                    input_channels=[node_channels[node] for node in cell_wiring.inputs],
                    level_changes=[cell_wiring.level - lvl for lvl in cell_wiring.input_levels],
                    channels=channels,
                    op_choices=choices,
                )
            )
            node_channels.append(channels)
        self.cells = nn.ModuleList(cells)
        self.head = nn.Sequential(
            conv(stem_channels, filters, (3, 3, 3)),
            norm(filters),
            nn.ReLU(inplace=True),
            Upsample(),
            conv(filters, filters, (3, 3, 3)),
            norm(filters),
            nn.ReLU(inplace=True),
            nn.Conv3d(filters, num_classes, 1),
        )

    def nodes(self, x: torch.Tensor, ops: Sequence[Op]) -> list[torch.Tensor]:
        """The stem's output and every cell's, in order (node ``i + 1`` is cell ``i``'s)."""
        check_input_size(x.shape)
        nodes = [self.stem(x)]
        for cell, cell_wiring, op in zip(self.cells, self.architecture.wiring, ops, strict=True):
            nodes.append(cell([nodes[node] for node in cell_wiring.inputs], op))
        return nodes

    def _forward(self, x: torch.Tensor, ops: Sequence[Op]) -> torch.Tensor:
        return self.head(self.nodes(x, ops)[-1])


def decoder_nodes(architecture: Architecture) -> list[tuple[int, int]]:
    """``(node, level)`` of the last cell at each level from the deepest minus one up to 1, the
    decoder outputs that deep supervision puts heads on (nnU-Net leaves out the deepest too).

    Level ``l`` has 1 / 2**(l + 1) of the input's resolution; level 0 feeds the network's own
    head. Example: the levels 0 1 2 3 2 1 0 ... give [(5, 2), (6, 1)] (node i is cell i - 1).
    """
    levels = [cell.level for cell in architecture.wiring]
    deepest = max(levels)
    last = {level: index + 1 for index, level in enumerate(levels)}
    return [(last[level], level) for level in range(deepest - 1, 0, -1)]


class C2FNet(_CellNetwork):
    """The stand-alone network ``N(s, c, w)`` of an architecture.

    Args:
        architecture: topology, ops and width.
        in_channels: image modalities.
        num_classes: output channels (background included); logits are returned.

    Example:
        >>> net = C2FNet(Architecture.coarse([0, 1, 2, 3, 2, 1, 0, 0, 0, 0, 0, 0], 0.25), 1, 3)
        >>> net(torch.zeros(1, 1, 16, 16, 16)).shape
        torch.Size([1, 3, 16, 16, 16])
    """

    def __init__(self, architecture: Architecture, in_channels: int, num_classes: int) -> None:
        super().__init__(architecture, in_channels, num_classes, [(op,) for op in architecture.ops])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x, self.architecture.ops)


class Supernet(_CellNetwork):
    """The fine stage's one-shot supernet of a topology: every op on every cell input.

    The ops of ``architecture`` are ignored; ``forward(x, ops)`` runs the single path of the
    colouring ``ops``. ``extract(ops)`` returns the stand-alone ``C2FNet`` of that path with the
    supernet's weights, which computes exactly the same output.
    """

    def __init__(self, architecture: Architecture, in_channels: int, num_classes: int) -> None:
        super().__init__(architecture, in_channels, num_classes, [OPS] * len(architecture.ops))

    def forward(self, x: torch.Tensor, ops: Sequence[Op]) -> torch.Tensor:
        return self._forward(x, ops)

    def extract(self, ops: Sequence[Op]) -> C2FNet:
        """The stand-alone network of colouring ``ops``, initialised from this supernet."""
        network = C2FNet(self.architecture.with_ops(ops), self.in_channels, self.num_classes)
        own = self.state_dict()
        network.load_state_dict({key: own[key] for key in network.state_dict()})
        return network.to(next(self.parameters()).device)


def build_network(architecture: Architecture, in_channels: int, num_classes: int) -> C2FNet:
    return C2FNet(architecture, in_channels, num_classes)
