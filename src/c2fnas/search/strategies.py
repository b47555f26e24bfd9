"""Topology search strategies of the coarse stage: pure code, no torch (a test enforces it).

Every strategy answers one question, ``propose(finished, pending, rng)``: given the scored
topologies so far (in the order they finished), the topologies that are being trained or that
failed, and a random generator, which topology should an idle worker train next? A strategy keeps
no state of its own between calls, so a search restarted from its trial history continues where
it stopped; the caller seeds ``rng`` from the run seed and the trial count.

Scores are maximised (validation Dice). ``None`` means nothing is left to propose.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Protocol

from c2fnas.space import NUM_CELLS, u_shaped_topologies

Code = tuple[int, ...]
"""A candidate: a topology's levels in the coarse stage, a colouring's op indices in the fine
stage."""
Finished = Sequence[tuple[Code, float]]

NUM_CLUSTERS = 8
STRATEGIES = ("c2f", "random", "evolution")


class Strategy(Protocol):
    @property
    def name(self) -> str:
        """Short name stored with the search (``c2f``, ``random``, ``evolution``)."""
        ...

    def propose(self, finished: Finished, pending: set[Code], rng: random.Random) -> Code | None:
        """A topology in the 924-space that is neither in ``finished`` nor in ``pending``."""
        ...


@cache
def topology_clusters(seed: int = 0, clusters: int = NUM_CLUSTERS) -> dict[Code, int]:
    """K-means over the 924 U-shaped codes (Euclidean distance between codes, SPEC section 2).

    Cluster ids are renumbered by the first member in the stable order of
    ``u_shaped_topologies()``, so they do not depend on K-means' internal label order.
    """
    import numpy as np
    from sklearn.cluster import KMeans  # type: ignore[import-untyped]
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    codes = u_shaped_topologies()
    # 924 x 12 points take milliseconds on one thread; OpenMP threads on a busy machine can
    # take seconds to synchronise.
    with threadpool_limits(limits=1):
        labels = KMeans(n_clusters=clusters, n_init=10, random_state=seed).fit_predict(
            np.asarray(codes, dtype=np.float64)
        )
    renumber: dict[int, int] = {}
    for label in labels:
        renumber.setdefault(int(label), len(renumber))
    return {code: renumber[int(label)] for code, label in zip(codes, labels, strict=True)}


def _untaken(candidates: Sequence[Code], finished: Finished, pending: set[Code]) -> list[Code]:
    taken = pending | {code for code, _ in finished}
    return [code for code in candidates if code not in taken]


@dataclass(frozen=True)
class CoarseToFine:
    """Algorithm 1 of the paper: topology-similarity-guided asynchronous evolution.

    1. K-means (``clusters``) over the 924 codes, fixed by ``seed``.
    2. Until every cluster holds ``initial_per_cluster`` topologies (scored, training or failed),
       propose a random topology of the emptiest cluster.
    3. Otherwise draw one scored topology at random from every cluster that has one, rank the
       clusters by those scores, and take the best cluster (or, with probability ``explore``, a
       random cluster); propose a random untrained topology of it that nobody holds. A cluster
       with nothing left falls through to the next in the ranking.
    """

    seed: int = 0
    clusters: int = NUM_CLUSTERS
    initial_per_cluster: int = 2
    explore: float = 0.2
    name: str = field(default="c2f", init=False)

    def members(self) -> list[list[Code]]:
        """The codes of each cluster, in the stable order of ``u_shaped_topologies()``."""
        cluster_of = topology_clusters(self.seed, self.clusters)
        groups: list[list[Code]] = [[] for _ in range(self.clusters)]
        for code in u_shaped_topologies():
            groups[cluster_of[code]].append(code)
        return groups

    def propose(self, finished: Finished, pending: set[Code], rng: random.Random) -> Code | None:
        cluster_of = topology_clusters(self.seed, self.clusters)
        available = [_untaken(group, finished, pending) for group in self.members()]
        held = [0] * self.clusters
        for code in pending | {code for code, _ in finished}:
            held[cluster_of[code]] += 1

        starting = [
            k for k in range(self.clusters) if held[k] < self.initial_per_cluster and available[k]
        ]
        if starting:
            fewest = min(held[k] for k in starting)
            cluster = rng.choice([k for k in starting if held[k] == fewest])
            return rng.choice(available[cluster])

        scored: list[list[float]] = [[] for _ in range(self.clusters)]
        for code, score in finished:
            scored[cluster_of[code]].append(score)
        # One network drawn per cluster: the ranking is noisy on purpose, as in the paper.
        draws = {k: rng.choice(scores) for k, scores in enumerate(scored) if scores}
        ranking = sorted(draws, key=lambda k: (-draws[k], k))
        open_clusters = [k for k in range(self.clusters) if available[k]]
        if not open_clusters:
            return None
        explore = rng.random() < self.explore
        ranked_open = [k for k in ranking if available[k]]
        cluster = rng.choice(open_clusters) if explore or not ranked_open else ranked_open[0]
        return rng.choice(available[cluster])


@dataclass(frozen=True)
class RandomSearch:
    """Uniform sampling without replacement over the 924 topologies."""

    name: str = field(default="random", init=False)

    def propose(self, finished: Finished, pending: set[Code], rng: random.Random) -> Code | None:
        available = _untaken(u_shaped_topologies(), finished, pending)
        return rng.choice(available) if available else None


def _changing_cells(code: Code) -> tuple[int, ...]:
    previous = (0, *code[:-1])
    return tuple(cell for cell in range(NUM_CELLS) if code[cell] != previous[cell])


def _code_from_changing(changing: Sequence[int]) -> Code:
    ordered = sorted(changing)
    downs, level, code = set(ordered[:3]), 0, []
    for cell in range(NUM_CELLS):
        level += (1 if cell in downs else -1) if cell in ordered else 0
        code.append(level)
    return tuple(code)


@cache
def neighbours(code: Code) -> tuple[Code, ...]:
    """U-shaped topologies one move away: one resolution change shifted to an adjacent cell."""
    changing = set(_changing_cells(code))
    found = []
    for cell in sorted(changing):
        for target in (cell - 1, cell + 1):
            if 0 <= target < NUM_CELLS and target not in changing:
                found.append(_code_from_changing(sorted(changing - {cell} | {target})))
    return tuple(sorted(set(found)))


@dataclass(frozen=True)
class RegularizedEvolution:
    """Aging evolution (Real et al., 2019) with a mutation that moves one changing cell.

    The population is the ``population`` most recently finished topologies; a parent is the best
    of ``sample`` of them drawn at random, and the child is a random untaken neighbour of the
    parent (or the nearest untaken topology in the neighbour graph when all are taken). Until the
    first population is complete, proposals are random.
    """

    population: int = 10
    sample: int = 3
    name: str = field(default="evolution", init=False)

    def propose(self, finished: Finished, pending: set[Code], rng: random.Random) -> Code | None:
        if len(finished) + len(pending) < self.population or not finished:
            return RandomSearch().propose(finished, pending, rng)
        alive = list(finished)[-self.population :]
        contenders = rng.sample(alive, min(self.sample, len(alive)))
        parent = max(contenders, key=lambda item: item[1])[0]
        return self._nearest_untaken(parent, finished, pending, rng)

    @staticmethod
    def _nearest_untaken(
        parent: Code, finished: Finished, pending: set[Code], rng: random.Random
    ) -> Code | None:
        taken = pending | {code for code, _ in finished}
        seen, ring = {parent}, [parent]
        while ring:
            next_ring = sorted({n for code in ring for n in neighbours(code)} - seen)
            untaken = [code for code in next_ring if code not in taken]
            if untaken:
                return rng.choice(untaken)
            seen.update(next_ring)
            ring = next_ring
        return None


def make_strategy(
    name: str, seed: int = 0, clusters: int = NUM_CLUSTERS, explore: float = 0.2
) -> Strategy:
    """The strategy called ``name`` (one of ``STRATEGIES``); ``seed`` fixes the clustering."""
    if name == "c2f":
        return CoarseToFine(seed=seed, clusters=clusters, explore=explore)
    if name == "random":
        return RandomSearch()
    if name == "evolution":
        return RegularizedEvolution()
    raise ValueError(f"unknown strategy {name!r}; choose from {list(STRATEGIES)}")
