"""The fine stage (paper Sec. 3.4): a one-shot supernet of the searched topology, then random
search over colourings scored with the supernet's weights.

1. ``train_supernet``: every iteration trains the path of one colouring drawn uniformly
   (single-path one-shot), for twice the coarse stage's iterations, through the same ``train``
   as every other network (checkpointed, resumable, DDP under torchrun).
2. ``run_fine``: K distinct colourings (paper: 2000) drawn once from a seed are scored on the
   validation fold with sliding-window stride 48 by as many workers as are started, through an
   Optuna trial store like the coarse stage's (study ``fine``): resumable, nothing scored twice,
   a dead worker's candidate handed out again.

The colourings as codes and the random search over them are ``c2fnas.search.colourings``.
Outputs: ``RUN_DIR/fine/{supernet/, candidates.csv, best_architecture.json}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import yaml  # type: ignore[import-untyped]

from c2fnas.accel.precision import resolve_precision
from c2fnas.accel.process import ThreadGovernor
from c2fnas.accel.swap import accelerate
from c2fnas.data import loader, splits
from c2fnas.data.pipeline import cached_case_ids
from c2fnas.data.preprocess import Plan
from c2fnas.data.splits import SEARCH_FOLD
from c2fnas.files import model_folder
from c2fnas.files.atomic import write_text_atomic
from c2fnas.files.run_folder import FineFolder, RunFolder
from c2fnas.nn import Supernet
from c2fnas.search.colourings import (
    ColouringList,
    colouring_text,
    decode,
    sample_colourings,
    uniform_colouring,
)
from c2fnas.search.report import write_trials_csv
from c2fnas.search.store import Snapshot, TrialStore, default_storage
from c2fnas.search.strategies import Code
from c2fnas.search.study import dataset_identity, open_study, run_study, scoring_settings
from c2fnas.search.worker import (
    Evaluate,
    TrialContext,
    prepare_worker_process,
    run_local_workers,
    run_worker,
)
from c2fnas.space import NUM_CELLS, Architecture
from c2fnas.training.config import RunConfig
from c2fnas.training.loop import TrainResult
from c2fnas.training.run import train
from c2fnas.training.validation import validate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FineSettings:
    """How the fine search runs.

    Attributes:
        candidates: colourings scored by random search (paper: 2000).
        seed: fixes the colourings drawn and the supernet's sampled paths.
        stride: sliding-window step for scoring (paper: 48).
    """

    candidates: int = 2000
    seed: int = 0
    stride: int = 48
    heartbeat_interval: int = 60
    grace_period: int = 600
    poll_seconds: float = 10.0


@dataclass(frozen=True)
class FineJob:
    """Everything a worker process needs (picklable); ``dataset`` and ``study`` as in
    ``CoarseJob``."""

    run_dir: Path
    storage: str
    settings: FineSettings
    topology: Architecture
    config_yaml: str
    dataset: dict[str, str]
    study: str
    accelerated: bool = False
    """The supernet trains, and is scored, with the fast layers swapped in (``accelerate``):
    the command's choice, carried to the scoring processes."""

    @property
    def folder(self) -> FineFolder:
        return RunFolder(self.run_dir).fine

    @property
    def supernet_dir(self) -> Path:
        return self.folder.supernet.root

    def config(self) -> RunConfig:
        return RunConfig.model_validate(yaml.safe_load(self.config_yaml))

    def candidate(self, code: Code) -> Architecture:
        return self.topology.with_ops(decode(code))

    def identity(self) -> dict[str, object]:
        """What a resumed search must share with the stored one (names and guards its study)."""
        return {"dataset": self.dataset, **_settings_identity(self.settings, self.topology)}

    def scoring(self) -> dict[str, object]:
        """What changes a colouring's score beyond the study's name: the supernet's training
        (``study.scoring_settings`` at twice the search iterations) and the scoring stride.
        Checked, not named, so that fine studies stored before keep their names
        (``c2fnas.search.study``)."""
        return {**scoring_settings(self.config(), 2), "stride": self.settings.stride}

    def open_store(self) -> TrialStore:
        return TrialStore(
            self.storage,
            study_name=self.study,
            heartbeat_interval=self.settings.heartbeat_interval,
            grace_period=self.settings.grace_period,
            # a colouring is stored as one; the old study "fine" held it under the coarse key
            key="topology" if self.study == "fine" else "colouring",
        )


def make_job(
    run_dir: Path,
    topology: Architecture,
    config: RunConfig,
    storage: str | None = None,
    accelerated: bool = False,
    **overrides: object,
) -> FineJob:
    """A fine-stage job from the run configuration (``search.fine_candidates``, ``fine_stride``)."""
    values: dict[str, object] = {
        "candidates": config.search.fine_candidates,
        "seed": config.training.seed,
        "stride": config.search.fine_stride,
    }
    values.update(overrides)
    settings = FineSettings(**values)  # type: ignore[arg-type]
    topology = topology.with_ops(("3d",) * NUM_CELLS)
    dataset = dataset_identity(run_dir)
    identity = {"dataset": dataset, **_settings_identity(settings, topology)}
    return FineJob(
        run_dir=run_dir,
        storage=storage or default_storage(run_dir, "fine"),
        settings=settings,
        topology=topology,
        config_yaml=config.to_yaml(),
        dataset=dataset,
        study=run_study(run_dir, "fine", identity),
        accelerated=accelerated,
    )


def _settings_identity(settings: FineSettings, topology: Architecture) -> dict[str, object]:
    return {
        "candidates": settings.candidates,
        "seed": settings.seed,
        "topology": list(topology.levels),
        "width": topology.width,
    }


def supernet_trained(job: FineJob) -> bool:
    model = job.folder.supernet.last
    if not all((model / name).is_file() for name in model_folder.MODEL_FILES):
        return False
    info = model_folder.read_json(model / "model.json")
    return int(info.get("iteration", -1)) >= job.config().for_search(2).training.iterations


def train_supernet(
    job: FineJob,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    governor: ThreadGovernor | None = None,
) -> TrainResult:
    """Train (or resume) the supernet of the job's topology for 2x the search iterations
    (``governor``: see ``c2fnas.training.loop.fit``)."""
    config = job.config().for_search(2)
    plan = Plan.load(job.run_dir)
    torch.manual_seed(config.training.seed)
    supernet = Supernet(job.topology, plan.in_channels, plan.num_classes)
    return train(
        job.topology,
        job.run_dir,
        SEARCH_FOLD,
        config,
        job.supernet_dir,
        resume=True,
        network=supernet,
        sample_ops=uniform_colouring,
        progress=progress,
        accelerated=job.accelerated,
        governor=governor,
    )


def load_supernet(job: FineJob) -> Supernet:
    """The trained supernet (``supernet/last``) with its weights, in the paper's form."""
    plan = Plan.load(job.run_dir)
    found, weights, _ = model_folder.read_model(job.folder.supernet.last)
    supernet = Supernet(job.topology, plan.in_channels, plan.num_classes)
    model_folder.load_weights(supernet, weights, job.folder.supernet.last, found)
    return supernet


def supernet_scorer(job: FineJob, supernet: Supernet) -> Evaluate:
    """Load the validation fold once; score a colouring by its path's mean validation Dice in
    ``supernet`` (``load_supernet``, accelerated or not), with sliding-window step
    ``settings.stride``."""
    config = job.config()
    plan = Plan.load(job.run_dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    supernet.to(device).eval()
    folds = splits.load_or_create(job.run_dir, cached_case_ids(job.run_dir))
    cases = list(loader.validation_cases(job.run_dir, folds[SEARCH_FOLD].val))
    precision = resolve_precision(config.training.precision, device)

    def evaluate(architecture: Architecture, context: TrialContext) -> float:
        total, count = validate(
            lambda x: supernet(x, architecture.ops),
            cases,
            plan.num_classes,
            config.data.patch,
            job.settings.stride,
            precision,
            device,
            config.training.window_batch,
        )
        return float((total / max(count, 1)).mean())

    return evaluate


def fine_worker(index: int, job: FineJob) -> None:
    """Body of one scoring worker process: the entry point of its process, so the place where
    the fast layers go in (``FineJob.accelerated``)."""
    name = prepare_worker_process(index, job.folder.logs)
    settings = job.settings
    supernet = load_supernet(job)
    if job.accelerated:
        accelerate(supernet)  # in place
    run_worker(
        job.open_store(),
        ColouringList(sample_colourings(settings.candidates, settings.seed)),
        supernet_scorer(job, supernet),
        settings.candidates,
        seed=settings.seed,
        worker=name,
        poll_seconds=settings.poll_seconds,
        clusters=None,
        architecture_of=job.candidate,
    )


def write_outputs(snapshot: Snapshot, job: FineJob) -> Architecture | None:
    """``candidates.csv`` (one row per trial) and ``best_architecture.json``."""
    write_trials_csv(snapshot, job.folder.candidates_csv, "ops", colouring_text)
    best = snapshot.best
    if best is None or best.code is None:
        return None
    architecture = replace(job.candidate(best.code), name=f"fine-best-trial-{best.number}")
    write_text_atomic(job.folder.best_architecture, architecture.to_json())
    return architecture


def open_search(job: FineJob) -> TrialStore:
    """Open or resume the store, refusing a store or run folder that holds another search."""
    return open_study(job.run_dir, "fine", job.study, job.identity(), job.open_store, job.scoring())


def run_fine(
    job: FineJob,
    workers: int = 1,
    gpus: int = 0,
    on_progress: Callable[[Snapshot], None] | None = None,
    refresh_seconds: float = 5.0,
) -> Snapshot:
    """Score the colourings with ``workers`` local processes (the supernet must be trained)."""
    if not supernet_trained(job):
        raise RuntimeError(f"{job.supernet_dir}: the supernet is not trained yet")
    return run_local_workers(
        open_search(job), fine_worker, (job,), workers, gpus,
        lambda snapshot: write_outputs(snapshot, job), "fine search", job.folder.logs,
        on_progress, refresh_seconds,
    )  # fmt: skip
