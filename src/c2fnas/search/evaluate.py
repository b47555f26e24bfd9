"""The real evaluator of the coarse stage: train a candidate from scratch, score it by Dice.

Each candidate trains with all ops ``3d`` through ``c2fnas.training.train`` on the run's split
(folds 1-4 train, fold 5 validates: index 4), with the search schedule of the configuration
(``RunConfig.for_search``), in ``RUN_DIR/coarse/candidates/<topology>``. Its score is the mean
validation Dice over the foreground classes, of its best periodic validation or of its final
weights (``CoarseSettings.score``, from ``search.score``). A NaN loss raises
``TrainingDiverged``, which the worker records as the candidate's failure.

A candidate that runs out of memory is not a failure of its topology but of the machine: it
resumes from its checkpoint with half the micro-batch and gradient accumulation (the same
effective batch, ``with_smaller_micro_batches``), and fails only when one sample per pass does not
fit. Otherwise small GPUs would bias the search toward light topologies.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml  # type: ignore[import-untyped]

from c2fnas.data.preprocess import Plan
from c2fnas.data.splits import SEARCH_FOLD
from c2fnas.search.coarse import CANDIDATE_SCORES, CoarseJob, CoarseSettings
from c2fnas.search.report import code_text
from c2fnas.search.study import RunFolderError, scoring_settings
from c2fnas.search.worker import CandidateFailed, Evaluate, TrialContext
from c2fnas.space import Architecture
from c2fnas.training.config import RunConfig
from c2fnas.training.errors import OutOfMemory
from c2fnas.training.loop import TrainResult, with_smaller_micro_batches
from c2fnas.training.run import train


def settings_from_config(config: RunConfig, strategy: str, **overrides: object) -> CoarseSettings:
    """Coarse-search settings from the ``search`` section of a run configuration."""
    values: dict[str, object] = {
        "budget": config.search.coarse_networks,
        "strategy": strategy,
        "seed": config.training.seed,
        "clusters": config.search.clusters,
        "explore": config.search.random_cluster_probability,
        "score": config.search.score,
        "scoring": candidate_scoring(config),
    }
    values.update(overrides)
    return CoarseSettings(**values)  # type: ignore[arg-type]


def candidate_scoring(config: RunConfig) -> dict[str, object]:
    """What changes a coarse candidate's score beyond the study's name: the search's training
    settings (``study.scoring_settings``), the candidates' width, and the validations that
    score it (how often: ``best`` picks among them, the pruner reads them; the window step)."""
    stride = config.training.stride
    return {
        **scoring_settings(config),
        "width": config.search.width,
        "validate_every": config.training.validate_every,
        "validation_stride": stride if isinstance(stride, int) else list(stride),
    }


def candidate_score(result: TrainResult, score: str) -> float:
    """The mean validation Dice of the best periodic validation (``best``), of the last one, the
    final weights (``final``), or the mean of the last three (``last3``; fewer if fewer ran)."""
    if score == "final":
        return float(result.history["dice"][-1][2])
    if score == "best":
        return float(result.best_mean)
    if score == "last3":
        return statistics.mean(float(entry[2]) for entry in result.history["dice"][-3:])
    raise ValueError(f"score {score!r}: choose {', '.join(CANDIDATE_SCORES)}")


def dataset_channels(run_dir: Path) -> tuple[int, int]:
    """``(input channels, classes with background)`` from the run's preprocessing plan."""
    try:
        plan = Plan.load(run_dir)
    except (OSError, ValueError) as error:
        raise RunFolderError(str(error)) from None
    return plan.in_channels, plan.num_classes


def candidate_dir(job: CoarseJob, code: tuple[int, ...]) -> Path:
    """Training folder of a topology. Keyed by topology, not trial: when a worker dies, the
    next holder of the topology resumes from the last checkpoint instead of starting over."""
    return job.folder.candidate(code_text(code)).root


@dataclass(frozen=True)
class TrainingEvaluator:
    """Picklable evaluator factory: each worker process rebuilds the configuration from YAML.

    Attributes:
        config_yaml: the resolved run configuration (``RunConfig.to_yaml()``).
        width: width multiplier of every candidate (1.0 in the paper).
        accelerated: the candidates train with the fast layers swapped in (``accelerate``):
            the command's choice, carried to the worker processes.

    With ``CoarseSettings.prune_min_iterations``, every validation Dice goes to the store's
    successive-halving pruner, which may stop the candidate early (``optuna.TrialPruned``).
    """

    config_yaml: str
    width: float = 1.0
    accelerated: bool = False

    def __call__(self, job: CoarseJob, index: int) -> Evaluate:
        config = RunConfig.model_validate(yaml.safe_load(self.config_yaml)).for_search()
        iterations = config.training.iterations
        prune = job.settings.prune_min_iterations > 0

        def evaluate(architecture: Architecture, context: TrialContext) -> float:
            def progress(done: int, total: int, values: dict[str, float]) -> None:
                context.iterations = done

            def validated(iteration: int, dice: float) -> None:
                # the last validation ends the training anyway: nothing left to prune
                if prune and iteration < iterations and math.isfinite(dice):
                    context.report(dice, iteration)
                    if context.should_prune():
                        raise optuna.TrialPruned(f"pruned at iteration {iteration}")

            def attempt(micro_batch: int | None) -> TrainResult:
                return train(
                    architecture.with_width(self.width),
                    job.run_dir,
                    SEARCH_FOLD,
                    config,
                    candidate_dir(job, architecture.levels),
                    resume=True,
                    progress=progress,
                    on_validation=validated,
                    micro_batch=micro_batch,
                    accelerated=self.accelerated,
                )

            try:
                result = with_smaller_micro_batches(attempt)
            except OutOfMemory as error:
                reason = f"does not fit in memory even one sample per pass: {error}"
                raise CandidateFailed(reason) from error
            context.iterations = int(result.iterations)
            return candidate_score(result, job.settings.score)

        return evaluate
