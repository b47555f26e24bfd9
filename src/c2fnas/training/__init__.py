"""Training: the strict run configuration, the schedule, one training loop, checkpoints."""

from c2fnas.training.config import ConfigError, RunConfig, load_config
from c2fnas.training.loop import TrainingDiverged, TrainResult, fit

__all__ = ["ConfigError", "RunConfig", "TrainResult", "TrainingDiverged", "fit", "load_config"]
