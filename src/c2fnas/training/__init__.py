"""Training: the strict run configuration, the schedule, one training loop, checkpoints.

``from c2fnas.training import train, fit, RunConfig, load_config, TrainingDiverged`` works; the
names load lazily so that ``c2fnas.inference`` can use ``training.precision`` without a cycle.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ConfigError": "config",
    "RunConfig": "config",
    "load_config": "config",
    "TrainResult": "loop",
    "TrainingDiverged": "loop",
    "fit": "loop",
    "train": "run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'c2fnas.training' has no attribute {name!r}")
    return getattr(import_module(f"c2fnas.training.{_EXPORTS[name]}"), name)
