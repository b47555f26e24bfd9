"""Run a strategy against a cheap objective, with simulated asynchronous workers (no training).

Used by the strategy tests (toy objectives with a known optimum), by
``benchmarks/search_strategies.py``, and, through ``Surrogate`` (a landscape interpolated from
the topologies trained for real, with their measured seed noise), by
``benchmarks/search_landscape.py``.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from c2fnas.search.strategies import Code, Strategy
from c2fnas.space import distance, u_shaped_topologies


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


@dataclass(frozen=True)
class Outcomes:
    """How a strategy did over many seeds on a ``Surrogate``."""

    chance_best: float
    """Share of seeds whose pick (the best observed score) is the best trained topology."""
    chance_top_quarter: float
    """Share of seeds whose pick is worth at least the upper quartile of the trained scores."""
    mean_regret: float
    """Mean of (best trained score - the pick's noise-free score)."""


class Surrogate:
    """A landscape over all 924 topologies built from the few that were trained for real.

    A topology's noise-free score is the measured score of its nearest trained topology in code
    distance (the mean where several are equally near); each evaluation adds Gaussian noise with
    the measured seed-to-seed deviation, so a search sees what a retrained candidate would give.
    """

    def __init__(self, scores: Mapping[Code, float], noise: float) -> None:
        if not scores:
            raise ValueError("a surrogate needs at least one trained topology")
        self.scores = dict(scores)
        self.noise = noise
        self.values = {code: self._nearest(code) for code in u_shaped_topologies()}
        ordered = sorted(self.scores.values())
        self.best = ordered[-1]
        self.upper_quartile = (
            float(statistics.quantiles(ordered, n=4, method="inclusive")[-1])
            if len(ordered) > 1
            else ordered[0]
        )

    def _nearest(self, code: Code) -> float:
        distances = {trained: distance(code, trained) for trained in self.scores}
        closest = min(distances.values())
        return statistics.mean(
            score for trained, score in self.scores.items() if distances[trained] == closest
        )

    def objective(self, seed: int) -> Callable[[Code], float]:
        """Noisy evaluations for one search run (its own noise stream)."""
        rng = random.Random(f"surrogate:{seed}")
        return lambda code: self.values[code] + rng.gauss(0.0, self.noise)

    def outcomes(
        self, strategy: Callable[[int], Strategy], budget: int, seeds: int, workers: int = 1
    ) -> Outcomes:
        """Run ``strategy(seed)`` for ``seeds`` seeds of ``budget`` evaluations each; score the
        topology each run would pick (its best observed score) by its noise-free value."""
        picks = []
        for seed in range(seeds):
            found = simulate(strategy(seed), self.objective(seed), budget, workers, seed)
            picked = max(found, key=lambda item: item[1])[0]
            picks.append(self.values[picked])
        return Outcomes(
            chance_best=sum(value >= self.best for value in picks) / seeds,
            chance_top_quarter=sum(value >= self.upper_quartile for value in picks) / seeds,
            mean_regret=statistics.mean(self.best - value for value in picks),
        )
