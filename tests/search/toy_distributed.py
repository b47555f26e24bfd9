"""One coarse-search worker over 2 ranks (``torchrun``), with an evaluator that checks that every
rank trains the same candidate. Run by ``test_distributed.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from c2fnas.search.coarse import CoarseSettings, make_job
from c2fnas.search.distributed import run_under_torchrun


def factory(job, index):
    def evaluate(architecture, context):
        levels = torch.tensor(architecture.levels, dtype=torch.float64)
        total = levels.clone()
        dist.all_reduce(total)  # as DDP would: every rank must be in the same candidate
        same = bool(torch.equal(total, levels * dist.get_world_size()))
        with open(job.run_dir / f"rank{dist.get_rank()}.txt", "a") as log:
            log.write(f"{context.number} {'-'.join(map(str, architecture.levels))} {same}\n")
        return float(levels.sum()) / 100

    return evaluate


if __name__ == "__main__":
    settings = CoarseSettings(
        budget=3, strategy="random", heartbeat_interval=1, grace_period=5, poll_seconds=0.2
    )
    run_under_torchrun(make_job(Path(sys.argv[1]), settings), factory)
