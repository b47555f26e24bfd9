"""Planning a run from the dataset's fingerprint, the device and a time budget (``c2fnas plan``).

``geometry`` (spacing, patch, stride) and ``schedule`` (iterations that fit a budget) are pure;
``memory`` sizes batch and width by the activation estimate; ``measure`` times one training
step; ``plan`` puts them together into a configuration that ``--config`` accepts.
"""

from c2fnas.planning.memory import NetworkMemory, fit_batch
from c2fnas.planning.plan import Choice, PlanError, RunPlan, plan_run
from c2fnas.planning.schedule import BudgetError, parse_duration

__all__ = [
    "BudgetError",
    "Choice",
    "NetworkMemory",
    "PlanError",
    "RunPlan",
    "fit_batch",
    "parse_duration",
    "plan_run",
]
