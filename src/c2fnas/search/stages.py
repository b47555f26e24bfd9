"""One function per search stage, called by ``c2fnas run`` and by the stage's own command alike.

``coarse_stage``, ``fine_stage`` and ``scale_stage`` take the run folder and the resolved run
configuration and do everything the stage needs: settings from the configuration, the trial
store, local worker processes or the torchrun rank this process is. Both commands therefore run
the same stage the same way, with the same defaults (the candidates' width is
``search.width``, the scaling grid ``search.scale_widths``); the commands only parse and print.

What belongs to the process is the caller's: ``accelerated`` (train and score with the fast
layers swapped in, ``c2fnas.accel.swap.accelerate``; worker processes get the choice with their
job) and ``governor`` (a ``ThreadGovernor`` for the training this process runs itself).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from c2fnas.accel.process import ThreadGovernor
from c2fnas.costs.search import ComputeEstimate, estimate_search_compute, search_fold_windows
from c2fnas.files.lock import folder_lock
from c2fnas.files.run_folder import RunFolder
from c2fnas.search import coarse, distributed, fine
from c2fnas.search.evaluate import TrainingEvaluator, dataset_channels, settings_from_config
from c2fnas.search.scale import run_scaling
from c2fnas.search.store import Snapshot
from c2fnas.search.strategies import topology_clusters
from c2fnas.space import Architecture
from c2fnas.training.config import RunConfig

logger = logging.getLogger(__name__)

SnapshotCallback = Callable[[Snapshot], None]
TrainingCallback = Callable[[int, int, dict[str, float]], None]


def _under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def coarse_stage(
    run_dir: Path,
    config: RunConfig,
    *,
    strategy: str = "c2f",
    storage: str | None = None,
    workers: int = 1,
    gpus: int = 0,
    grace_period: int = 600,
    prune: bool = False,
    on_progress: SnapshotCallback | None = None,
    announce: Callable[[str], None] = logger.info,
    accelerated: bool = False,
) -> Snapshot | None:
    """Topology search (Algorithm 1, or ``random`` / ``evolution``) of ``search.coarse_networks``
    candidates at ``search.width``; resumes, or joins a search running elsewhere on ``storage``.

    Under torchrun this process is one rank of a single multi-GPU worker and ``workers`` is
    ignored. ``announce`` receives the compute estimate before the workers start. Returns the
    final state (None on ranks other than 0).

    Raises:
        ValueError: an unknown strategy; ``RunFolderError`` (a ``ValueError``): the run folder
            is not preprocessed or holds another search.
    """
    settings = settings_from_config(
        config,
        strategy,
        heartbeat_interval=max(1, grace_period // 10),
        grace_period=grace_period,
        prune_min_iterations=config.training.validate_every if prune else 0,
    )
    settings.make_strategy()  # an unknown strategy fails here, before any process starts
    job = coarse.make_job(run_dir, settings, storage)
    factory = TrainingEvaluator(config.to_yaml(), config.search.width, accelerated)
    if _under_torchrun():
        return distributed.run_under_torchrun(job, factory)
    announce(coarse_estimate(run_dir, config).describe(workers))
    return coarse.run_coarse(job, factory, workers, gpus, on_progress)


def coarse_estimate(
    run_dir: Path, config: RunConfig, measure: bool | None = None
) -> ComputeEstimate:
    """The compute ``coarse_stage`` will spend under ``config``, validations included, and its
    device-hours from a step measured on this machine (``measure``: see
    ``estimate_search_compute``; None measures where that is quick). Starts no search.

    Raises:
        RunFolderError: the run folder is not preprocessed (a ``ValueError``).
    """
    in_channels, classes = dataset_channels(run_dir)
    training = config.training
    return estimate_search_compute(
        typical_candidates(training.seed, config.search.clusters, config.search.width),
        config.data.patch,
        in_channels,
        classes,
        config.data.batch_size,
        config.search.iterations,
        config.search.coarse_networks,
        measure,
        validate_every=training.validate_every,
        validation_windows=search_fold_windows(run_dir, config.data.patch, training.stride),
        precision=training.precision,
        window_batch=training.window_batch,
    )


def typical_candidates(seed: int, clusters: int, width: float) -> list[Architecture]:
    """One random topology of each of the search's ``clusters`` at ``width``: MACs differ
    between topologies, so the compute estimate counts these."""
    cluster_of = topology_clusters(seed, clusters)
    rng = random.Random(seed)
    sample = [
        rng.choice(sorted(code for code, k in cluster_of.items() if k == cluster))
        for cluster in range(clusters)
    ]
    return [Architecture.coarse(code, width) for code in sample]


def searched_topology(run_dir: Path, config: RunConfig) -> Architecture:
    """The coarse stage's best topology at ``search.width``."""
    return Architecture.load(RunFolder(run_dir).coarse.best_topology).with_width(
        config.search.width
    )


def fine_stage(
    run_dir: Path,
    config: RunConfig,
    *,
    topology: Architecture | None = None,
    storage: str | None = None,
    workers: int = 1,
    gpus: int = 0,
    grace_period: int = 600,
    supernet_progress: TrainingCallback | None = None,
    on_progress: SnapshotCallback | None = None,
    accelerated: bool = False,
    governor: ThreadGovernor | None = None,
) -> Snapshot | None:
    """Op search: train (or resume) the one-shot supernet of ``topology`` (default: the coarse
    stage's best at ``search.width``), then score ``search.fine_candidates`` colourings with it.

    Under torchrun every rank trains the supernet and rank 0 alone scores; other ranks return
    None. A run folder or store holding a fine search of other settings is refused before the
    supernet trains, not after.

    Raises:
        FolderBusy: another process is training the supernet in this run folder.
    """
    job = fine.make_job(
        run_dir, topology or searched_topology(run_dir, config), config, storage, accelerated,
        heartbeat_interval=max(1, grace_period // 10), grace_period=grace_period,
    )  # fmt: skip
    fine.open_search(job).close()
    if not fine.supernet_trained(job):
        # One command trains it (every rank of a torchrun job, under rank 0's lock); scorers
        # on other machines join once it is trained, so only its training folder is locked.
        lock = folder_lock(job.folder.supernet.lock) if _rank() == 0 else nullcontext()
        with lock:
            fine.train_supernet(job, progress=supernet_progress, governor=governor)
    if _under_torchrun() and _rank() != 0:
        return None
    return fine.run_fine(job, workers, gpus, on_progress)


def final_architecture(run_dir: Path) -> Architecture:
    """The fine stage's best colouring of the searched topology."""
    return replace(Architecture.load(RunFolder(run_dir).fine.best_architecture), name="searched")


def scale_stage(
    run_dir: Path,
    config: RunConfig,
    *,
    architecture: Architecture | None = None,
    widths: Sequence[float] | None = None,
    on_width: Callable[[dict[str, Any]], None] | None = None,
    accelerated: bool = False,
    governor: ThreadGovernor | None = None,
) -> list[dict[str, Any]]:
    """Width scaling of ``architecture`` (default: the fine stage's best) over ``widths``
    (default ``search.scale_widths``); one row per width."""
    return run_scaling(
        run_dir,
        architecture or final_architecture(run_dir),
        config,
        widths if widths is not None else config.search.scale_widths,
        on_width,
        accelerated,
        governor,
    )
