"""The real evaluator of the coarse stage: train a candidate from scratch, score it by Dice.

Each candidate trains with all ops ``3d`` through ``c2fnas.training.train`` on the run's split
(folds 1-4 train, fold 5 validates: index 4), with the search schedule of the configuration
(``RunConfig.for_search``), in ``RUN_DIR/coarse/candidates/trial_NNNN``. Its score is the mean
validation Dice over the foreground classes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from c2fnas.search.coarse import CoarseJob, CoarseSettings
from c2fnas.search.worker import Evaluate, TrialContext
from c2fnas.space import Architecture

if TYPE_CHECKING:
    from c2fnas.training.config import RunConfig

SEARCH_FOLD = 4
"""The fifth fold validates during the search (paper Sec. 4.1, SPEC section 5)."""


class RunFolderError(Exception):
    """The run folder is not ready for a search (names the missing file)."""


def settings_from_config(config: RunConfig, strategy: str, **overrides: object) -> CoarseSettings:
    """Coarse-search settings from the ``search`` section of a run configuration."""
    values: dict[str, object] = {
        "budget": config.search.coarse_networks,
        "strategy": strategy,
        "seed": config.training.seed,
        "clusters": config.search.clusters,
        "explore": config.search.random_cluster_probability,
    }
    values.update(overrides)
    return CoarseSettings(**values)  # type: ignore[arg-type]


def dataset_channels(run_dir: Path) -> tuple[int, int]:
    """``(input channels, classes with background)`` from ``RUN_DIR/dataset.json``."""
    path = run_dir / "dataset.json"
    try:
        dataset = json.loads(path.read_text(encoding="utf-8"))
        return len(dataset["modality"]), len(dataset["labels"])
    except OSError:
        raise RunFolderError(
            f"{path} not found: prepare the run folder first (c2fnas preprocess ...)"
        ) from None
    except (ValueError, KeyError, TypeError) as error:
        raise RunFolderError(f"{path}: no 'modality' and 'labels' ({error})") from None


@dataclass(frozen=True)
class TrainingEvaluator:
    """Picklable evaluator factory: each worker process rebuilds the configuration from YAML.

    Attributes:
        config_yaml: the resolved run configuration (``RunConfig.to_yaml()``).
        width: width multiplier of every candidate (1.0 in the paper).
    """

    config_yaml: str
    width: float = 1.0

    def __call__(self, job: CoarseJob, index: int) -> Evaluate:
        import yaml  # type: ignore[import-untyped]

        from c2fnas.training import TrainingDiverged, train
        from c2fnas.training.config import RunConfig

        config = RunConfig.model_validate(yaml.safe_load(self.config_yaml)).for_search()

        def evaluate(architecture: Architecture, context: TrialContext) -> float:
            out_dir = job.coarse_dir / "candidates" / f"trial_{context.number:04d}"
            try:
                result = train(
                    architecture.with_width(self.width), job.run_dir, SEARCH_FOLD, config, out_dir
                )
            except TrainingDiverged as error:
                raise TrainingDiverged(f"training diverged: {error}") from error
            context.iterations = int(result.iterations)
            return float(result.mean)

        return evaluate
