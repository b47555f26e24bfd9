"""The fine stage's candidates as codes, and the random search over them; torch-free, so that
the command line shows them without loading the training stack.

A colouring (one op per cell) is stored in the trial store as a code of op indices into ``OPS``
(``3d`` = 0, ``2d`` = 1, ``p3d`` = 2), so the coarse stage's claim machinery serves it unchanged.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from c2fnas.search.strategies import Code, Finished
from c2fnas.space import NUM_CELLS, OPS, Op


def encode(ops: Sequence[Op]) -> Code:
    """A colouring as op indices into ``OPS``."""
    return tuple(OPS.index(op) for op in ops)


def decode(code: Code) -> tuple[Op, ...]:
    return tuple(OPS[index] for index in code)


def colouring_text(code: Code | None) -> str:
    """A colouring code as its op names, e.g. ``2d p3d 3d ...`` (empty when unknown)."""
    return " ".join(decode(code)) if code else ""


def sample_colourings(count: int, seed: int) -> tuple[Code, ...]:
    """``count`` distinct colourings drawn uniformly without replacement, fixed by ``seed``."""
    total = len(OPS) ** NUM_CELLS
    if not 1 <= count <= total:
        raise ValueError(f"the number of candidates must be 1..{total}, got {count}")
    numbers = random.Random(seed).sample(range(total), count)
    return tuple(
        tuple((number // len(OPS) ** cell) % len(OPS) for cell in range(NUM_CELLS))
        for number in numbers
    )


def uniform_colouring(rng: random.Random) -> tuple[Op, ...]:
    """The path a supernet trains at one iteration: one op per cell, uniformly."""
    return tuple(rng.choice(OPS) for _ in range(NUM_CELLS))


@dataclass(frozen=True)
class ColouringList:
    """Random search as a strategy: the pre-drawn colourings, in order, skipping taken ones."""

    codes: tuple[Code, ...]
    name: str = "random-colourings"

    def propose(self, finished: Finished, pending: set[Code], rng: random.Random) -> Code | None:
        taken = pending | {code for code, _ in finished}
        return next((code for code in self.codes if code not in taken), None)
