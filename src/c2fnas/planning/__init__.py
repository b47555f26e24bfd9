"""Planning a run from the dataset's fingerprint, the device and a time budget (``c2fnas plan``).

``geometry`` (spacing, patch, stride) is pure; ``plan`` puts it together with what the run
costs (``c2fnas.costs``: the batch that fits the memory, the measured step, and what the budget
buys, solved once) into a configuration that ``--config`` accepts.
"""

from c2fnas.planning.plan import Choice, PlanError, RunPlan, plan_run

__all__ = [
    "Choice",
    "PlanError",
    "RunPlan",
    "plan_run",
]
