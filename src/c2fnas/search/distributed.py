"""One search worker spanning several GPUs: a worker launched under ``torchrun``.

Rank 0 talks to the trial store (claims, heartbeats, results); before evaluating a candidate it
announces the topology and trial number to the other ranks, and every rank then trains the same
candidate together (the training loop uses DDP when a process group exists). When rank 0 stops,
it announces the end and the other ranks return.

Pruning is not available here: rank 0 stopping a training alone would leave the others waiting.

``run_under_torchrun`` is the coarse command's body on each rank; the coarse stage's local
workers (``c2fnas.search.coarse``) never load this module, nor torch until they train.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import cast

import torch
import torch.distributed as dist

from c2fnas.search.coarse import CoarseJob, EvaluatorFactory, open_search, search_candidates
from c2fnas.search.report import write_outputs
from c2fnas.search.store import Snapshot
from c2fnas.search.worker import Evaluate, TrialContext, prepare_worker_process
from c2fnas.space import Architecture

logger = logging.getLogger(__name__)


def run_under_torchrun(job: CoarseJob, factory: EvaluatorFactory) -> Snapshot | None:
    """The coarse command under ``torchrun``: this process is one rank of one multi-GPU worker.

    Returns the final state on rank 0 (which also writes the outputs), None on other ranks.

    Raises:
        ValueError: the job prunes, which needs every rank to stop together.
    """
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        open_search(job)
    index = int(os.environ.get("LOCAL_RANK", "0"))
    name = prepare_worker_process(index, job.folder.logs)
    evaluate = factory(job, index)
    if job.settings.prune_min_iterations > 0:
        raise ValueError("pruning needs every rank to stop together: not available under torchrun")
    init_process_group()
    if rank > 0:
        follow(evaluate, f"{name}-rank{rank}")
        return None
    try:
        search_candidates(job, announcing(evaluate), name)
    finally:
        announce_end()
    snapshot = job.open_store().snapshot()
    write_outputs(snapshot, job.folder, job.settings.clusters)
    return snapshot


def init_process_group() -> None:
    """Join the ``torchrun`` process group (NCCL with GPUs, Gloo on CPUs)."""
    if dist.is_initialized():
        return
    # Ranks > 0 wait in a broadcast while rank 0 waits for work, possibly for hours.
    timeout = timedelta(hours=24)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl", timeout=timeout)
    else:
        dist.init_process_group("gloo", timeout=timeout)


def announcing(evaluate: Evaluate) -> Evaluate:
    """Rank 0's evaluator: tell the other ranks the candidate, then train it with them."""

    def shared(architecture: Architecture, context: TrialContext) -> float:
        dist.broadcast_object_list([(list(architecture.levels), context.number)], src=0)
        return evaluate(architecture, context)

    return shared


def announce_end() -> None:
    dist.broadcast_object_list([None], src=0)


def follow(evaluate: Evaluate, worker: str) -> int:
    """Ranks > 0: train every candidate rank 0 announces; returns how many."""
    followed = 0
    while True:
        message: list[object] = [None]
        dist.broadcast_object_list(message, src=0)
        if message[0] is None:
            return followed
        levels, number = cast(tuple[list[int], int], message[0])
        context = TrialContext(number=number, code=tuple(levels), worker=worker, trial=None)
        try:
            evaluate(Architecture.coarse(levels), context)
        except Exception:  # rank 0 records the failure; this rank waits for the next one
            logger.exception("%s: candidate of trial %d failed", worker, number)
        followed += 1
