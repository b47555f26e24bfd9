"""Run a strategy against a cheap objective, with simulated asynchronous workers (no training).

Used by the strategy tests (toy objectives with a known optimum) and by
``benchmarks/search_strategies.py``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from c2fnas.search.strategies import Code, Strategy


def proposal_rng(seed: int, trials_so_far: int, attempt: int = 0) -> random.Random:
    """The generator of one proposal: a pure function of the run seed and the trial count.

    A restarted search therefore draws what an uninterrupted one would have drawn.
    """
    return random.Random(f"c2fnas:{seed}:{trials_so_far}:{attempt}")


def simulate(
    strategy: Strategy,
    objective: Callable[[Code], float],
    budget: int,
    workers: int = 1,
    seed: int = 0,
) -> list[tuple[Code, float]]:
    """Evaluate ``budget`` topologies with ``workers`` simulated workers.

    Each worker that is idle asks the strategy for a topology; then one busy worker, chosen at
    random (training times differ), finishes. Returns ``(code, score)`` in finishing order.
    """
    finished: list[tuple[Code, float]] = []
    pending: list[Code] = []
    clock = random.Random(f"simulate:{seed}")
    proposals = 0
    while len(finished) < budget:
        while len(pending) < workers and len(finished) + len(pending) < budget:
            code = strategy.propose(finished, set(pending), proposal_rng(seed, proposals))
            proposals += 1
            if code is None:
                break
            pending.append(code)
        if not pending:
            break
        code = pending.pop(clock.randrange(len(pending)))
        finished.append((code, objective(code)))
    return finished
