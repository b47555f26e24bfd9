"""A worker with a sleeping toy evaluator, run in separate processes by the store tests."""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

from c2fnas.search.store import TrialStore
from c2fnas.search.strategies import Code
from c2fnas.search.worker import run_worker
from c2fnas.space import u_shaped_topologies


class FirstUntaken:
    """Every worker proposes the same topology: the worst case for claiming."""

    name = "first"

    def propose(self, finished, pending, rng) -> Code | None:
        taken = pending | {code for code, _ in finished}
        return next((code for code in self.order() if code not in taken), None)

    def order(self) -> list[Code]:
        return u_shaped_topologies()


class LastUntaken(FirstUntaken):
    """The other end of the list: never proposes what ``FirstUntaken`` began with."""

    name = "last"

    def order(self) -> list[Code]:
        return u_shaped_topologies()[::-1]


STRATEGIES = {"first": FirstUntaken(), "last": LastUntaken()}
STEPS = 5


def toy_score(levels) -> float:
    return sum(level * (index + 1) for index, level in enumerate(levels)) / 100


def run(
    index: int,
    storage: str,
    budget: int,
    seconds: float,
    start_at: float = 0.0,
    strategy: str = "first",
    checkpoints: Path | None = None,
) -> None:
    """One worker; with ``start_at`` (a ``time.time()``), it waits so that all start together.

    With ``checkpoints``, a candidate trains ``STEPS`` steps of ``seconds / STEPS``, saving the
    steps done in ``checkpoints/<topology>.steps`` and resuming from there; every start appends
    its first step to ``<topology>.starts``.
    """
    store = TrialStore(storage, heartbeat_interval=1, grace_period=3)
    time.sleep(max(0.0, start_at - time.time()))
    rng = random.Random(index)

    def evaluate(architecture, context):
        if checkpoints is not None:
            return train_steps(architecture.levels, checkpoints, seconds / STEPS)
        time.sleep(seconds * (0.5 + rng.random()))
        if context.code == u_shaped_topologies()[3]:
            raise FloatingPointError("loss is nan")
        context.iterations = 7
        return toy_score(architecture.levels)

    run_worker(store, STRATEGIES[strategy], evaluate, budget, worker=f"w{index}", poll_seconds=0.2)


def train_steps(levels, checkpoints: Path, seconds_per_step: float) -> float:
    name = "-".join(map(str, levels))
    saved = checkpoints / f"{name}.steps"
    first = int(saved.read_text()) if saved.is_file() else 0
    with open(checkpoints / f"{name}.starts", "a") as starts:
        starts.write(f"{first}\n")
    for step in range(first + 1, STEPS + 1):
        time.sleep(seconds_per_step)
        saved.write_text(str(step))
    return toy_score(levels)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    parser = argparse.ArgumentParser()
    parser.add_argument("storage")
    parser.add_argument("budget", type=int)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--strategy", choices=sorted(STRATEGIES), default="first")
    parser.add_argument("--checkpoints", type=Path)
    options = parser.parse_args()
    run(
        options.index,
        options.storage,
        options.budget,
        options.seconds,
        strategy=options.strategy,
        checkpoints=options.checkpoints,
    )


def toy_factory(job, index):
    """An evaluator factory for ``run_coarse``: a quick deterministic score, one failure."""

    def evaluate(architecture, context):
        time.sleep(0.1)
        if architecture.levels == u_shaped_topologies()[0]:
            raise MemoryError("CUDA out of memory (pretend)")
        context.iterations = 3
        return toy_score(architecture.levels)

    return evaluate


def slow_factory(job, index):
    """Candidates that take 30 s: long enough to be interrupted."""

    def evaluate(architecture, context):
        time.sleep(30)
        return 0.0

    return evaluate


FIVE_CASES = tuple(f"case_{n:03d}" for n in range(1, 6))  # enough for the five folds


def toy_run_folder(run_dir: Path, cases: tuple[str, ...] = FIVE_CASES) -> Path:
    """The files of a preprocessed run folder that name its search studies: plan and cases."""
    from c2fnas.data.preprocess import ChannelNormalization, Plan

    run_dir.mkdir(parents=True, exist_ok=True)
    plan = Plan(
        spacing=(1.0, 1.0, 1.0),
        normalization=[ChannelNormalization(scheme="mr")],
        modalities={0: "MRI"},
        labels={0: "background", 1: "organ"},
    )
    plan.save(run_dir)
    training = [{"image": f"./imagesTr/{case}.nii.gz"} for case in cases]
    (run_dir / "dataset.json").write_text(json.dumps({"training": training}))
    return run_dir
