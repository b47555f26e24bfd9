"""``Architecture``: the frozen, hashable value every network is built from.

Saved as JSON with a schema version, e.g.::

    {"schema_version": 1, "name": "c2fnas-panc",
     "levels": [0, 0, 1, 1, 2, 3, 2, 2, 1, 0, 0, 0],
     "ops": ["2d", "p3d", "3d", "3d", "3d", "2d", "3d", "3d", "p3d", "3d", "2d", "3d"],
     "width": 1.0}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from c2fnas.space.ops import COARSE_OP, OPS, Op
from c2fnas.space.topology import NUM_CELLS, TopologyError, Wiring, validate_levels, wiring

SCHEMA_VERSION = 1
BASE_FILTERS = 32
_KEYS = {"schema_version", "name", "levels", "ops", "width"}


class ArchitectureError(ValueError):
    """An architecture (or its JSON file) is invalid; the message names the field."""


@dataclass(frozen=True)
class Architecture:
    """A topology code, one op per cell and a width multiplier.

    Attributes:
        levels: the level after each of the 12 cells (see ``c2fnas.space.topology``).
        ops: one of ``3d``, ``2d``, ``p3d`` per cell (the colouring).
        width: multiplier of the base filter count 32; F = round(32 * width) must be >= 1.
        name: a label for reports; not part of the identity.
    """

    levels: tuple[int, ...]
    ops: tuple[Op, ...]
    width: float = 1.0
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        try:
            levels = validate_levels(self.levels)
        except TopologyError as error:
            raise ArchitectureError(f"levels: {error}") from None
        object.__setattr__(self, "levels", levels)
        if isinstance(self.ops, (str, bytes)) or not isinstance(self.ops, Sequence):
            raise ArchitectureError(f"ops: expected a list of {NUM_CELLS} op names")
        if len(self.ops) != NUM_CELLS:
            raise ArchitectureError(f"ops: expected {NUM_CELLS} op names, got {len(self.ops)}")
        for index, op in enumerate(self.ops):
            if op not in OPS:
                raise ArchitectureError(
                    f"ops: cell {index + 1} has unknown op {op!r}; choose from {list(OPS)}"
                )
        object.__setattr__(self, "ops", tuple(self.ops))
        if isinstance(self.width, bool) or not isinstance(self.width, (int, float)):
            raise ArchitectureError(f"width: expected a number, got {self.width!r}")
        if not math.isfinite(self.width) or round(BASE_FILTERS * self.width) < 1:
            raise ArchitectureError(
                f"width: {self.width} gives {BASE_FILTERS} x width < 1 filter; use a positive width"
            )
        object.__setattr__(self, "width", float(self.width))
        if not isinstance(self.name, str):
            raise ArchitectureError(f"name: expected a string, got {self.name!r}")

    @classmethod
    def coarse(cls, levels: Sequence[int], width: float = 1.0) -> Architecture:
        """The coarse-stage candidate of a topology: ``3d`` in every cell."""
        return cls(levels=tuple(levels), ops=(COARSE_OP,) * NUM_CELLS, width=width)

    @property
    def filters(self) -> int:
        """F, the stem's first filter count: 32 x width."""
        return max(1, round(BASE_FILTERS * self.width))

    def channels(self, level: int) -> int:
        """Channels carried at a level: 2F * 2**level (64, 128, 256, 512 at width 1)."""
        return int(2 * self.filters * 2**level)

    @property
    def wiring(self) -> tuple[Wiring, ...]:
        """The inputs of every cell, derived from the levels."""
        return wiring(self.levels)

    def with_ops(self, ops: Sequence[Op]) -> Architecture:
        return Architecture(self.levels, tuple(ops), self.width, self.name)

    def with_width(self, width: float) -> Architecture:
        return Architecture(self.levels, self.ops, width, self.name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "levels": list(self.levels),
            "ops": list(self.ops),
            "width": self.width,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Architecture:
        """Build from parsed JSON; unknown keys and bad values raise ``ArchitectureError``."""
        if not isinstance(data, Mapping):
            raise ArchitectureError(f"expected a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - _KEYS)
        if unknown:
            raise ArchitectureError(f"unknown keys {unknown}; allowed: {sorted(_KEYS)}")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ArchitectureError(f"schema_version: expected {SCHEMA_VERSION}, got {version!r}")
        for key in ("levels", "ops"):
            if key not in data:
                raise ArchitectureError(f"{key}: missing")
            if not isinstance(data[key], list):
                raise ArchitectureError(f"{key}: expected a list, got {data[key]!r}")
        return cls(
            levels=tuple(data["levels"]),
            ops=tuple(cast(list[Op], data["ops"])),
            width=data.get("width", 1.0),
            name=data.get("name", ""),
        )

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ArchitectureError(f"not valid JSON: {error}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> Architecture:
        """Read an architecture file; errors name the file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ArchitectureError(f"{path}: cannot read: {error.strerror}") from None
        try:
            return cls.from_json(text)
        except ArchitectureError as error:
            raise ArchitectureError(f"{path}: {error}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")


C2FNAS_PANC = Architecture(
    levels=(0, 0, 1, 1, 2, 3, 2, 2, 1, 0, 0, 0),
    ops=("2d", "p3d", "3d", "3d", "3d", "2d", "3d", "3d", "p3d", "3d", "2d", "3d"),
    name="c2fnas-panc",
)
"""The paper's searched network for pancreas tumours (Fig. 5), as in
``architectures/c2fnas-panc.json``: what a plan without a search trains, and whose topology a
plan with the fine stage alone colours."""
