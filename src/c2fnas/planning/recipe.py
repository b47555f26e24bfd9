"""The training recipe a plan sets, lever by lever, with the measurement behind each.

Every lever was measured by ``benchmarks/levers.py`` (``benchmarks/results/levers.json``):
C2FNAS-Panc at width 0.25 on Hippocampus, trained on fold 0's 160 cases and scored on its 40,
each variant given the iterations that 20 minutes of the paper's recipe buy on one core of a
2-core AMD EPYC with AVX-512, scaled by the variant's own measured cost per iteration. A lever is
adopted when its paired per-case difference to the paper's recipe has a 95% interval above 0 and
exceeds the gap between two seeds of the paper's recipe (0.0041). None did: at equal compute the
paper's recipe stands, and the plan's table says so with the numbers, so that a user who knows
nnU-Net sees why its defaults are not here.

A plan writes each lever into ``plan.yaml``. A lever that costs time per iteration (deep
supervision's heads, a heavier augmentation) must enter ``costs.measure.measure_step`` before a
plan adopts it, so that the schedule pays for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from c2fnas.training.config import RunConfig

_MEASURED = "at equal time, benchmarks/levers.py (Hippocampus, 2-core AMD EPYC)"


@dataclass(frozen=True)
class Lever:
    """One setting of the recipe: a field of ``plan.yaml`` and a row of the plan's table."""

    setting: str
    section: Literal["data", "training"]
    field: str
    value: Any
    reason: str

    @property
    def shown(self) -> str:
        if isinstance(self.value, bool):
            return "on" if self.value else "off"
        return str(self.value)


LEVERS = (
    # Poly had the same 3,779 iterations; given 7.6% more in an earlier sitting it scored +0.0063,
    # most of that the compute.
    Lever("lr decay", "training", "lr_decay", "step",
          f"the paper's: poly +0.0025 [-0.0008, +0.0061] Dice {_MEASURED}, within seed noise"),
    # Deep supervision costs 5% per iteration here (3,600 iterations); with the last checkpoint it
    # scored -0.0070 [-0.0124, -0.0014].
    Lever("deep supervision", "training", "deep_supervision", False,
          f"the paper's: on, -0.0028 [-0.0080, +0.0023] Dice {_MEASURED}"),
    # nnU-Net-like rotation, scaling and intensity changes cost 4% per iteration here (3,626
    # iterations); with the last checkpoint they scored -0.0047 [-0.0088, -0.0007].
    Lever("augmentation", "data", "augmentation", "paper",
          f"the paper's: nnU-Net-like -0.0012 [-0.0047, +0.0024] Dice {_MEASURED}"),
)  # fmt: skip
"""Each setting the plan writes, with the paper's value unless a measurement beat it."""


def apply(config: RunConfig) -> RunConfig:
    """``config`` with every lever's value."""
    for lever in LEVERS:
        config = config.with_fields(lever.section, **{lever.field: lever.value})
    return config
