"""The coarse stage (paper Sec. 3.3): topology search with N local workers on a shared store.

``run_coarse`` opens (or resumes) the trial store, starts the worker processes, and refreshes
``RUN_DIR/coarse/{trials.csv, search.png, best_topology.json}`` while they run. Workers on other
machines join by running the same command with the same ``--storage``. One worker spanning
several GPUs under ``torchrun`` is ``c2fnas.search.distributed``'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna

from c2fnas.files.run_folder import CoarseFolder, RunFolder
from c2fnas.search.report import write_outputs
from c2fnas.search.store import Snapshot, TrialStore, default_storage
from c2fnas.search.strategies import NUM_CLUSTERS, Strategy, make_strategy
from c2fnas.search.study import dataset_identity, open_study, run_study
from c2fnas.search.worker import (
    Evaluate,
    prepare_worker_process,
    run_local_workers,
    run_worker,
)

CANDIDATE_SCORES = ("best", "final", "last3")
"""``SearchConfig.score``'s choices (repeated here, where no torch is imported; a test keeps the
two the same)."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoarseSettings:
    """How the coarse search runs (SPEC section 2 defaults).

    Attributes:
        budget: networks to evaluate (scored or failed), 50 in the paper.
        strategy: ``c2f`` (Algorithm 1), ``random`` or ``evolution``.
        seed: fixes the clustering and every proposal.
        clusters: K of the K-means over the 924 codes.
        explore: probability of a random cluster instead of the best one.
        heartbeat_interval: seconds between a busy worker's heartbeats.
        grace_period: seconds of silence after which a worker counts as dead.
        poll_seconds: how often an idle worker looks again while others finish.
        prune_min_iterations: 0 trains every candidate to the end (the paper). Otherwise the
            successive-halving pruner (reduction factor 3) compares candidates' validation
            Dice from this many iterations on and stops the weak ones. Not under torchrun.
        score: ``best`` scores a candidate by its best periodic validation Dice, ``final`` by
            its last one, ``last3`` by the mean of its last three (``SearchConfig.score``).
        scoring: the candidates' training settings that change their scores (``width``, the
            schedule, ... : ``evaluate.candidate_scoring``). They do not name the study; a
            resume with other values is refused (``study.open_study``). Empty for evaluators
            that train nothing (toy objectives).
    """

    budget: int = 50
    strategy: str = "c2f"
    seed: int = 0
    clusters: int = NUM_CLUSTERS
    explore: float = 0.2
    heartbeat_interval: int = 60
    grace_period: int = 600
    poll_seconds: float = 10.0
    prune_min_iterations: int = 0
    score: str = "best"
    scoring: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Checked here, not after the first candidate has trained for hours.
        if self.score not in CANDIDATE_SCORES:
            raise ValueError(f"score {self.score!r}: choose {', '.join(CANDIDATE_SCORES)}")

    def make_strategy(self) -> Strategy:
        """Raises ``ValueError`` for an unknown strategy name."""
        return make_strategy(self.strategy, self.seed, self.clusters, self.explore)

    def identity(self) -> dict[str, object]:
        """Settings a resumed search must share with the stored one. ``score`` joins them only
        when it is not the default, so searches stored before it existed keep their names."""
        identity: dict[str, object] = {
            "strategy": self.strategy,
            "seed": self.seed,
            "clusters": self.clusters,
        }
        if self.score != "best":
            identity["score"] = self.score
        return identity


@dataclass(frozen=True)
class CoarseJob:
    """Everything a worker process needs (picklable: it crosses a process boundary).

    ``dataset`` is the run folder's ``study.dataset_identity``; ``study`` the name of the
    search's study in the store (``study.run_study``).
    """

    run_dir: Path
    storage: str
    settings: CoarseSettings
    dataset: dict[str, str]
    study: str

    def identity(self) -> dict[str, object]:
        """What makes two searches the same search (names and guards its study)."""
        return {"dataset": self.dataset, **self.settings.identity()}

    @property
    def folder(self) -> CoarseFolder:
        return RunFolder(self.run_dir).coarse

    def open_store(self) -> TrialStore:
        pruner = None
        if self.settings.prune_min_iterations > 0:
            pruner = optuna.pruners.SuccessiveHalvingPruner(
                min_resource=self.settings.prune_min_iterations, reduction_factor=3
            )
        return TrialStore(
            self.storage,
            study_name=self.study,
            heartbeat_interval=self.settings.heartbeat_interval,
            grace_period=self.settings.grace_period,
            pruner=pruner,
        )


EvaluatorFactory = Callable[[CoarseJob, int], Evaluate]
"""Builds a worker's evaluator inside the worker process: ``factory(job, worker_index)``."""


def make_job(run_dir: Path, settings: CoarseSettings, storage: str | None = None) -> CoarseJob:
    """Raises ``RunFolderError`` when ``run_dir`` is not preprocessed."""
    dataset = dataset_identity(run_dir)
    study = run_study(run_dir, "coarse", {"dataset": dataset, **settings.identity()})
    return CoarseJob(
        run_dir=run_dir,
        storage=storage or default_storage(run_dir),
        settings=settings,
        dataset=dataset,
        study=study,
    )


def coarse_worker(index: int, job: CoarseJob, factory: EvaluatorFactory) -> None:
    """Body of one worker process: log to its own file, then evaluate until the budget is met."""
    name = prepare_worker_process(index, job.folder.logs)
    search_candidates(job, factory(job, index), name)


def search_candidates(job: CoarseJob, evaluate: Evaluate, worker: str) -> None:
    """Claim and evaluate candidates as ``worker`` until the budget is met (``run_worker``)."""
    settings = job.settings
    run_worker(
        job.open_store(),
        settings.make_strategy(),
        evaluate,
        settings.budget,
        seed=settings.seed,
        worker=worker,
        poll_seconds=settings.poll_seconds,
        clusters=settings.clusters,
    )


def open_search(job: CoarseJob) -> TrialStore:
    """Open or resume the store, refusing a store or run folder that holds another search."""
    store = open_study(
        job.run_dir, "coarse", job.study, job.identity(), job.open_store, job.settings.scoring
    )
    store.study.set_user_attr("last_settings", asdict(job.settings))
    return store


def run_coarse(
    job: CoarseJob,
    factory: EvaluatorFactory,
    workers: int = 1,
    gpus: int = 0,
    on_progress: Callable[[Snapshot], None] | None = None,
    refresh_seconds: float = 5.0,
) -> Snapshot:
    """Run (or resume) the search with ``workers`` local processes; returns the final state.

    Outputs are refreshed every ``refresh_seconds`` and once more at the end.
    """
    return run_local_workers(
        open_search(job), coarse_worker, (job, factory), workers, gpus,
        lambda snapshot: write_outputs(snapshot, job.folder, job.settings.clusters),
        "coarse search", job.folder.logs, on_progress, refresh_seconds,
    )  # fmt: skip
