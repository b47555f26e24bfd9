"""Training: the strict run configuration, the schedule, one training loop, checkpoints.

``train`` (``c2fnas.training.run``) trains one fold of a run folder, ``fit``
(``c2fnas.training.loop``) any network on given batches. This ``__init__`` imports only what
loads without torch: ``from c2fnas.training import RunConfig, load_config, TrainingDiverged``
costs the command line no start-up time.
"""

from c2fnas.training.config import ConfigError, RunConfig, load_config
from c2fnas.training.errors import OutOfMemory, TrainingDiverged

__all__ = [
    "ConfigError",
    "OutOfMemory",
    "RunConfig",
    "TrainingDiverged",
    "load_config",
]
