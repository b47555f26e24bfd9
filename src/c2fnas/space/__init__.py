"""The C2FNAS search space as plain data: no torch is imported here (a test enforces it).

A network is a topology (the level of each of the 12 cells), an op per cell (its colouring) and
a width multiplier. See ``Architecture``.
"""

from c2fnas.space.architecture import C2FNAS_PANC, SCHEMA_VERSION, Architecture, ArchitectureError
from c2fnas.space.ops import OPS, Op
from c2fnas.space.topology import (
    NUM_CELLS,
    NUM_LEVELS,
    TopologyError,
    Wiring,
    count_unpruned_walks,
    distance,
    u_shaped_topologies,
    validate_levels,
    wiring,
)

__all__ = [
    "C2FNAS_PANC",
    "NUM_CELLS",
    "NUM_LEVELS",
    "OPS",
    "SCHEMA_VERSION",
    "Architecture",
    "ArchitectureError",
    "Op",
    "TopologyError",
    "Wiring",
    "count_unpruned_walks",
    "distance",
    "u_shaped_topologies",
    "validate_levels",
    "wiring",
]
