"""``train``: one fold of a preprocessed run folder, on one process or under ``torchrun``."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from c2fnas.accel.process import ThreadGovernor
from c2fnas.accel.swap import accelerate
from c2fnas.data import loader, splits
from c2fnas.data.pipeline import cached_case_ids, verify_cache
from c2fnas.data.preprocess import Plan
from c2fnas.files.run_folder import RunFolder
from c2fnas.nn import C2FNet
from c2fnas.space import Architecture
from c2fnas.training.config import ConfigError, RunConfig
from c2fnas.training.loop import (
    BatchSource,
    OpsSampler,
    Progress,
    Reschedule,
    TrainResult,
    ValidationCallback,
    fit,
)

log = logging.getLogger(__name__)


def stream_seed(seed: int, rank: int, start: int) -> int:
    """The patch stream's seed for a process restarting at ``start`` (checkpoints restart it)."""
    digest = hashlib.sha256(f"{seed}/{rank}/{start}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def init_distributed() -> torch.device:
    """Join the ``torchrun`` process group when launched by it; return this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def train(
    architecture: Architecture,
    run_dir: str | Path,
    fold: int,
    config: RunConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    network: nn.Module | None = None,
    sample_ops: OpsSampler | None = None,
    progress: Progress | None = None,
    micro_batch: int | None = None,
    on_validation: ValidationCallback | None = None,
    accelerated: bool = False,
    governor: ThreadGovernor | None = None,
    reschedule: Reschedule | None = None,
) -> TrainResult:
    """Train ``architecture`` on fold ``fold`` of a preprocessed run folder.

    Args:
        architecture: the network to build (or the topology of ``network``).
        run_dir: ``plan.json``, ``dataset.json``, ``preprocessed/`` (``c2fnas preprocess``).
        fold: 0..4; trains on the other folds, validates on this one (``splits.json``).
        config: resolved configuration; saved as ``out_dir/config.yaml``.
        out_dir: default ``RUN_DIR/train/fold_K``.
        resume: continue from ``out_dir/checkpoints``.
        network: a prebuilt module, e.g. a ``Supernet``; default ``C2FNet(architecture)``.
        sample_ops: colouring sampler for a supernet (see ``fit``).
        progress: per-iteration callback on rank 0.
        micro_batch: samples per pass through the network on each process, the gradients of
            ``data.batch_size // processes`` accumulated (see ``fit``); None: the checkpoint's
            when resuming, else the whole batch.
        on_validation: see ``fit``.
        accelerated: swap the fast layers into the network first (``accelerate``). The entry
            point decides: the commands do, tests comparing numbers need not.
        governor: see ``fit``; started by the entry point that owns the process.
        reschedule: see ``fit``.

    Raises:
        FileNotFoundError: the run folder is not preprocessed (names the missing file).
        CacheError: a case of the fold is missing, damaged, replaced or made with another plan
            than ``plan.json`` (names each file and the ``c2fnas preprocess`` command to run).
        ConfigError: the batch does not split over the processes.
        TrainingDiverged: NaN or infinite loss.
        OutOfMemory: a training step did not fit in memory (``with_smaller_micro_batches``).
    """
    run_dir = Path(run_dir)
    plan = Plan.load(run_dir)
    folds = splits.load_or_create(run_dir, cached_case_ids(run_dir))
    if not 0 <= fold < len(folds):
        raise ValueError(f"fold {fold}: choose 0..{len(folds) - 1}")
    device = init_distributed()
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if config.data.batch_size % world:
        raise ConfigError(
            f"data.batch_size {config.data.batch_size} does not split over {world} processes"
        )
    train_ids, val_ids = folds[fold].train, folds[fold].val
    verify_cache(run_dir, [*train_ids, *val_ids], plan)  # now, not at the first validation
    data = config.data

    def batches(start: int) -> Any:
        return loader.train_batches(
            run_dir, train_ids, data.patch, data.batch_size // world,
            stream_seed(config.training.seed, rank, start), data.foreground_oversample,
            data.workers, data.augmentation,
        )  # fmt: skip

    def validation() -> Any:
        return loader.validation_cases(run_dir, val_ids[rank::world])

    if network is None:
        torch.manual_seed(config.training.seed)
        network = C2FNet(architecture, plan.in_channels, plan.num_classes)
    out = Path(out_dir) if out_dir is not None else RunFolder(run_dir).fold(fold).root
    log.info("training fold %d: %d train / %d validation cases -> %s",
             fold, len(train_ids), len(val_ids), out)  # fmt: skip
    source: BatchSource = batches
    return fit(
        accelerate(network) if accelerated else network, architecture, source, validation,
        config, out, resume=resume, sample_ops=sample_ops, progress=progress,
        on_validation=on_validation, device=device, micro_batch=micro_batch, governor=governor,
        reschedule=reschedule,
        model_info={"fold": fold, "plan": plan.model_dump(mode="json"), "run_dir": str(run_dir)},
    )  # fmt: skip
