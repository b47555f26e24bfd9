"""Training: the strict run configuration, the schedule, one training loop, checkpoints.

``from c2fnas.training import train, fit, RunConfig, load_config, TrainingDiverged`` works.
"""

from c2fnas.training.config import ConfigError, RunConfig, load_config
from c2fnas.training.loop import TrainingDiverged, TrainResult, fit
from c2fnas.training.run import train

__all__ = [
    "ConfigError",
    "RunConfig",
    "TrainResult",
    "TrainingDiverged",
    "fit",
    "load_config",
    "train",
]
