"""Topology codes: the resolution level after each of the 12 cells (SPEC section 1).

The stem output is level 0 (1/2 of the input resolution); level ``l`` is ``1/2**(l+1)``.
Consecutive levels differ by at most one. The U-shape prior of the paper keeps the codes with
exactly 3 down moves, all before the 3 up moves, ending at level 0: choosing which 6 of the 12
cells change resolution gives C(12, 6) = 924 topologies.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

NUM_CELLS = 12
NUM_LEVELS = 4
STEM = 0
"""Node index of the stem; cell ``i`` (1-based, as in the paper's figures) is node ``i``."""


class TopologyError(ValueError):
    """A topology code breaks a rule of the search space."""


def validate_levels(levels: Sequence[int], *, u_shape: bool = False) -> tuple[int, ...]:
    """Check a topology code and return it as a tuple.

    Args:
        levels: the level after each cell, e.g. ``[0, 0, 1, 1, 2, 3, 2, 2, 1, 0, 0, 0]``.
        u_shape: also require the paper's prior (3 downs, then 3 ups, ending at level 0).

    Raises:
        TopologyError: naming the first rule broken and where.
    """
    if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence):
        raise TopologyError(f"a topology code is a list of {NUM_CELLS} integers, got {levels!r}")
    if len(levels) != NUM_CELLS:
        raise TopologyError(f"a topology code has {NUM_CELLS} levels, got {len(levels)}")
    code = tuple(levels)
    for index, level in enumerate(code):
        if isinstance(level, bool) or not isinstance(level, int):
            raise TopologyError(f"level of cell {index + 1} must be an integer, got {level!r}")
        if not 0 <= level < NUM_LEVELS:
            raise TopologyError(
                f"level of cell {index + 1} is {level}; levels run from 0 to {NUM_LEVELS - 1}"
            )
    previous = 0
    for index, level in enumerate(code):
        if abs(level - previous) > 1:
            raise TopologyError(
                f"cell {index + 1} jumps from level {previous} to {level}; "
                "a cell moves at most one level"
            )
        previous = level
    if code[-1] != 0:
        raise TopologyError(f"the last cell must be at level 0 to reach the head, got {code[-1]}")
    if u_shape:
        moves = [b - a for a, b in zip((0, *code[:-1]), code, strict=True)]
        changes = [move for move in moves if move != 0]
        if changes != [1, 1, 1, -1, -1, -1]:
            raise TopologyError(
                "not U-shaped: the prior needs exactly 3 down moves followed by 3 up moves, "
                f"got moves {moves}"
            )
    return code


@cache
def u_shaped_topologies() -> tuple[tuple[int, ...], ...]:
    """All 924 U-shaped codes, in a stable order (lexicographic in the changing cells)."""
    codes = []
    for changing in itertools.combinations(range(NUM_CELLS), 6):
        downs, ups = set(changing[:3]), set(changing[3:])
        level, code = 0, []
        for cell in range(NUM_CELLS):
            level += 1 if cell in downs else -1 if cell in ups else 0
            code.append(level)
        codes.append(tuple(code))
    assert len(codes) == math.comb(NUM_CELLS, 6)
    return tuple(codes)


def count_unpruned_walks(*, end_at_zero: bool = True) -> int:
    """Size of the unpruned space S (reporting only).

    Counting rule: 12-step walks over levels 0..3 that start at level 0 (the stem) and move by
    -1, 0 or +1 per cell; with ``end_at_zero`` only walks that also end at level 0 (14,445), else
    all of them. The paper quotes 2.9e4 after Auto-DeepLab, whose count differs in detail.
    """
    ways = [1] + [0] * (NUM_LEVELS - 1)
    for _ in range(NUM_CELLS):
        ways = [
            sum(
                ways[source] for source in (level - 1, level, level + 1) if 0 <= source < NUM_LEVELS
            )
            for level in range(NUM_LEVELS)
        ]
    return ways[0] if end_at_zero else sum(ways)


def distance(first: Sequence[int], second: Sequence[int]) -> float:
    """Euclidean distance between two topology codes (the similarity of the coarse stage)."""
    if len(first) != len(second):
        raise TopologyError(f"codes of different lengths: {len(first)} and {len(second)}")
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(first, second, strict=True)))


@dataclass(frozen=True)
class Wiring:
    """The inputs of one cell, as node indices (0 is the stem, cell ``i`` is node ``i``).

    ``inputs[0]`` is always the previous node; a second entry, when present, is at the cell's
    own level (the previous-previous node, or the encoder skip after an up move).
    """

    cell: int
    level: int
    inputs: tuple[int, ...]
    input_levels: tuple[int, ...]


def wiring(levels: Sequence[int]) -> tuple[Wiring, ...]:
    """Derive every cell's inputs from a topology code (SPEC section 1, paper Sec. 4.1).

    A cell takes the previous node and, as a second input,
    (1) the node before the previous one when it sits at the cell's level, or
    (2) when the cell moves up to level ``l``: the last node at ``l`` before the matching move
        down from ``l`` (the encoder skip).
    """
    code = validate_levels(levels)
    node_levels = (0, *code)
    node_before_down: dict[int, int] = {}  # level -> last node at it before the latest down move
    cells = []
    for cell in range(1, NUM_CELLS + 1):
        level, previous_level = node_levels[cell], node_levels[cell - 1]
        inputs = [cell - 1]
        if level > previous_level:
            node_before_down[previous_level] = cell - 1
        if cell >= 2 and node_levels[cell - 2] == level:
            inputs.append(cell - 2)
        elif level < previous_level and level in node_before_down:
            inputs.append(node_before_down[level])
        cells.append(
            Wiring(
                cell=cell,
                level=level,
                inputs=tuple(inputs),
                input_levels=tuple(node_levels[node] for node in inputs),
            )
        )
    return tuple(cells)
