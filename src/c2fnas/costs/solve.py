"""What a budget buys, solved once per plan (``solve_budget``): the search and the folds, the
width, whether prediction mirrors, and the schedule that fits.

Each choice takes what the earlier ones settled: the search and the folds from the narrowest
network without mirroring, the width with those, mirroring with that width. A budget problem
(the same costs, search and folds) is solved once: the schedule found while choosing is the
plan's when the final costs are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, Self, TypeVar, get_args

from c2fnas.costs.schedule import (
    MIN_RANKING_ITERATIONS,
    MIN_SEARCH_CLUSTERS,
    NETWORKS_PER_CLUSTER,
    PAPER_ITERATIONS,
    BudgetError,
    Costs,
    Schedule,
    fit_budget,
)
from c2fnas.data.splits import NUM_FOLDS
from c2fnas.training.config import SearchMode

SEARCH_MODES: tuple[SearchMode, ...] = get_args(SearchMode)
MIN_SUPERNET_ITERATIONS = 10_000
"""The fine stage is planned only when its supernet trains at least this many iterations: the
round number above the longest supernet measured not to pay. End to end on Hippocampus (AMD EPYC
with AVX-512, 2 cores, 3 h): the fine stage alone with a supernet of 8,388 iterations took 38 of
the 180 minutes and left 5 folds of 5,590 iterations, out-of-fold Dice 0.876
(``benchmarks/results/hippocampus_run_search_3h.json``); C2FNAS-Panc trained the whole budget, 5
folds of 10,096, scored 0.881, +0.005 [+0.004, +0.007] paired over the 200 cases
(``hippocampus_run_panc_3h.json``). Shorter supernets rank nothing either:
``benchmarks/search_landscape.py`` part 7 (2,000 iterations against 10 colourings trained 1,000
with two seeds) gave Spearman +0.13 [-0.55, +0.69], no better than the colourings' own seed-to-seed
+0.13. Whether 10,000 pays is not measured; it is at least twice a candidate's
``MIN_RANKING_ITERATIONS``, as the paper trains a supernet twice a candidate's schedule."""
MIN_FOLD_ITERATIONS = PAPER_ITERATIONS
"""Under a budget, the plan trains more than one fold (of five) only when each still gets the
paper's whole schedule, 40,000 iterations; else one model gets the budget. At equal wall time one
longer model scored higher than more, shorter folds in every measurement on Hippocampus
(C2FNAS-Panc at width 0.25, 2 cores; the seed noise of one configuration is 0.0041):

- 20 min (``benchmarks/levers.py``, AMD EPYC): three models of 1,243 iterations, each on another
  4/5 of the same 160 cases, ensembled: -0.0203 [-0.0251, -0.0155] against one of 3,779;
- 60 min (``benchmarks/hippocampus.py --run-budget 60m``, AMD EPYC with AVX-512): one model of
  17,780 iterations scored fold 0's 40 held-out cases 0.8932, the two-fold plan's fold 0 model of
  7,916 scored 0.8886: +0.0046 [+0.0018, +0.0072] paired;
- 60 min on 40 cases no model saw (``benchmarks/folds_rule.py``, Intel Xeon with AMX, both
  mirrored), one model against the plan's ensemble: seed 0, 4 folds of 5,233 (the ensemble ran 46
  of its 60 minutes), +0.0075 [+0.0036, +0.0115]; seed 1, 3 folds of 6,447, 5,769 and 5,180
  re-fitted before each fold (53.2 min, the one model of 18,326 48.1 min), +0.0085 [+0.0038,
  +0.0131] (``folds_rule_60m_seed1.json``);
- 3 h (Intel Xeon with AMX): one model of 40,000 iterations scored fold 0's cases 0.8982 (nnU-Net
  v2 0.8876), the 5-fold plan's fold 0 model of 14,400 scored 0.8906: +0.0076 [+0.0039, +0.0114].

A fold's model still improved from 14,400 to 40,000 iterations (above); whether two folds of
30,000 beat one of 40,000 on new cases is not measured. ``c2fnas run --folds`` trains more folds
whatever they get (the rule was 5,000 iterations, an eighth of the paper's, until these
measurements)."""
MIN_LATE_FOLD_ITERATIONS = 5000
"""A later fold re-fitted before it starts (``Pipeline.refit_later``) still trains this many
iterations, or its schedule where that is shorter, when an overrun left it less time: a late fold
kept that short is still worth its vote. An eighth of the paper's 40,000; fewer leave a weak
model (Hippocampus, C2FNAS-Panc at width 0.25 on the AVX2 AMD EPYC: validation Dice 0.864 after
2,500 iterations, 0.881 at its best after 6,000,
``benchmarks/results/hippocampus_run_panc_60m.json`` as of commit 3ae71b6). The budget may be
overrun by this floor; it is not the plan's rule for how many folds to train
(``MIN_FOLD_ITERATIONS``)."""
ITERATIONS_BEFORE_WIDTH = 20000
"""Under a budget, a network wider than the narrowest is planned only when it still trains the
paper's search schedule (20000 iterations, what the paper deemed enough to rank networks).
Measured below it (``benchmarks/levers.py``, Hippocampus fold 0, 20 minutes on one core of a
2-core AMD EPYC): width 0.5 costs 2.0x width 0.25 per iteration and, trained 1,859 iterations
against 3,779, scored -0.0035 [-0.0076, +0.0007] Dice with the best checkpoint and -0.0082
[-0.0139, -0.0024] with the last: a short budget is better spent on iterations. Since a fold
needs ``MIN_FOLD_ITERATIONS``, a budget with time to spare after its folds' full schedules can
plan a wider network with fewer iterations (8 h at 0.12 s a step with a coarse search: two folds
of the network at twice the step, about 25,000 iterations each, where the narrowest would stop at
40,000); not measured against each other."""
TTA_SHARE = 0.05
"""Under a budget, prediction mirrors when that costs at most this share of the budget."""


class Candidate(Protocol):
    """A network a plan may train, as the solver sees it."""

    def costs(self, folds: int, mirrored: bool) -> Costs:
        """The run's costs when it trains ``folds`` folds and prediction mirrors or not."""
        ...

    def measured(self) -> Self:
        """Itself with a measured step where measuring is cheap (its costs may have been
        extrapolated from another network's)."""
        ...


CandidateT = TypeVar("CandidateT", bound=Candidate)


@dataclass(frozen=True)
class BudgetPlan(Generic[CandidateT]):
    """What ``solve_budget`` settled."""

    mode: SearchMode
    folds: int
    network: CandidateT
    """The chosen candidate, measured where that was cheap."""
    mirrored: bool
    """Whether prediction mirrors (test-time augmentation)."""
    schedule: Schedule
    why: str | None
    """Why this search (``SearchChoice.why``); None when a given network is trained."""


def solve_budget(
    budget: float,
    candidates: Sequence[CandidateT],
    workers: int = 1,
    folds: int | None = None,
    search: SearchMode | None = None,
    network_given: bool = False,
) -> BudgetPlan[CandidateT]:
    """Everything a plan fits into ``budget`` seconds, in one call.

    1. The search and the folds (``choose_search``), or with ``network_given`` no search and the
       folds of ``fit_folds`` (one where not even one fits: the schedule then says why).
    2. The widest candidate that still trains ``ITERATIONS_BEFORE_WIDTH`` iterations, by its
       costs as given; only that one is ``measured``.
    3. Mirroring where it costs at most ``TTA_SHARE`` of the budget, and the schedule. When the
       measured wider network no longer fits, the narrowest is planned instead.

    Args:
        candidates: the networks that fit the memory, narrowest first; the narrowest's costs
            measured.
        folds: train this many folds (default: see ``fit_folds``).
        search: search this whatever the budget buys (``choose_search``'s ``forced``).
        network_given: a given network is trained: nothing is searched or chosen to search.

    Raises:
        BudgetError: not even the narrowest network fits (says what the budget lacks).
    """
    narrowest = candidates[0]
    solved: dict[Costs, Schedule] = {}

    def costs_of(count: int) -> Costs:
        return narrowest.costs(count, False)

    why = None
    mode: SearchMode = "none"
    if not network_given:
        choice = choose_search(budget, costs_of, workers, folds, search)
        mode, count, why = choice.mode, choice.folds, choice.why
        solved[costs_of(count)] = choice.schedule
    elif folds is None:
        try:
            count, planned = fit_folds(budget, costs_of, mode, workers)
            solved[costs_of(count)] = planned
        except BudgetError:
            count = 1  # the schedule below says what the budget lacks
    else:
        count = folds

    def fit(costs: Costs) -> Schedule:
        if costs not in solved:
            solved[costs] = fit_budget(budget, costs, mode, count, workers)
        return solved[costs]

    chosen = narrowest
    for candidate in reversed(candidates[1:]):
        try:
            planned = fit(candidate.costs(count, False))
        except BudgetError:
            continue
        if planned.training.iterations >= ITERATIONS_BEFORE_WIDTH:
            chosen = candidate.measured()
            break

    def mirrored_fit(candidate: CandidateT) -> tuple[Schedule, bool]:
        mirrored = candidate.costs(count, True).prediction <= TTA_SHARE * budget
        return fit(candidate.costs(count, mirrored)), mirrored

    try:
        planned, mirrored = mirrored_fit(chosen)
    except BudgetError:
        if chosen is narrowest:
            raise
        chosen = narrowest  # the measured step of the wider network was slower than estimated
        planned, mirrored = mirrored_fit(chosen)
    return BudgetPlan(mode, count, chosen, mirrored, planned, why)


def fit_folds(
    budget: float, costs_of: Callable[[int], Costs], search: SearchMode, workers: int = 1
) -> tuple[int, Schedule]:
    """The most folds (of ``NUM_FOLDS``) whose training runs each still get
    ``MIN_FOLD_ITERATIONS`` iterations in ``budget``, and their schedule; one fold when two
    would each get fewer.

    Args:
        costs_of: the run's costs when it trains that many folds (prediction grows with them).

    Raises:
        BudgetError: not even one fold fits.
    """
    for folds in range(NUM_FOLDS, 1, -1):
        try:
            planned = fit_budget(budget, costs_of(folds), search, folds, workers)
        except BudgetError:
            continue
        if planned.training.iterations >= MIN_FOLD_ITERATIONS:
            return folds, planned
    return 1, fit_budget(budget, costs_of(1), search, 1, workers)


@dataclass(frozen=True)
class SearchChoice:
    """What the plan searches, for how many folds, with which schedule, and why."""

    mode: SearchMode
    folds: int
    schedule: Schedule
    reason: str
    """Why, and the search's size."""
    why: str
    """Why alone (the plan's table shows the size beside it)."""


def choose_search(
    budget: float,
    costs_of: Callable[[int], Costs],
    workers: int = 1,
    folds: int | None = None,
    forced: SearchMode | None = None,
) -> SearchChoice:
    """Search only where a search can pay: a coarse stage when the budget buys Algorithm 1 at
    least ``MIN_SEARCH_CLUSTERS`` clusters of candidates trained at least
    ``MIN_RANKING_ITERATIONS``; else the fine stage alone when its supernet trains at least
    ``MIN_SUPERNET_ITERATIONS``; else no search. ``forced`` takes that mode whatever it buys,
    and the reason then says what to expect of it.

    Args:
        costs_of: the run's costs when it trains that many folds.
        folds: train this many folds (default: the most that each train
            ``MIN_FOLD_ITERATIONS``, see ``fit_folds``).

    Raises:
        BudgetError: not even training without a search fits (or the forced mode does not).
    """

    def planned(mode: SearchMode) -> tuple[int, Schedule]:
        if folds is None:
            return fit_folds(budget, costs_of, mode, workers)
        return folds, fit_budget(budget, costs_of(folds), mode, folds, workers)

    if forced:
        count, schedule = planned(forced)
        problem = _search_problem(forced, schedule)
        why = f"forced (--search {forced})" + (f"; expect little of it: {problem}" * bool(problem))
        reason = f"forced (--search {forced}): {_search_summary(forced, schedule)}"
        if problem:
            reason += f"; expect little of it: {problem}"
        return SearchChoice(forced, count, schedule, reason, why)
    skipped = []
    for mode in SEARCH_MODES:
        try:
            count, schedule = planned(mode)
        except BudgetError as error:
            if mode == "none":
                raise
            skipped.append(f"no {mode} stage: {error}")
            continue
        problem = _search_problem(mode, schedule)
        if problem is None:
            reason = "; ".join([*skipped, _search_summary(mode, schedule)])
            why = "; ".join(skipped) or "the budget buys a search that can rank"
            return SearchChoice(mode, count, schedule, reason, why)
        skipped.append(f"no {mode} stage: {problem}")
    raise AssertionError("unreachable: 'none' has no problem")  # pragma: no cover


def _search_problem(mode: SearchMode, planned: Schedule) -> str | None:
    """Why ``planned``'s search cannot pay, or None when it can."""
    search = planned.search
    if search is None:
        return None
    if mode == "coarse" and search.clusters < MIN_SEARCH_CLUSTERS:
        return (
            f"{search.coarse_networks} networks make {search.clusters} cluster(s), and "
            f"Algorithm 1 needs {MIN_SEARCH_CLUSTERS} "
            f"({MIN_SEARCH_CLUSTERS * NETWORKS_PER_CLUSTER} networks) to be more than random "
            "search"
        )
    if mode == "coarse" and search.iterations < MIN_RANKING_ITERATIONS:
        return (
            f"candidates would train {search.iterations} iterations, and scores rank "
            f"topologies only from {MIN_RANKING_ITERATIONS}"
        )
    if mode == "fine" and 2 * search.iterations < MIN_SUPERNET_ITERATIONS:
        return (
            f"the supernet would train {2 * search.iterations} iterations, and ranks "
            f"colourings only from {MIN_SUPERNET_ITERATIONS}"
        )
    return None


def _search_summary(mode: SearchMode, planned: Schedule) -> str:
    search = planned.search
    if mode == "none" or search is None:
        return "C2FNAS-Panc trained without a search"
    supernet = f"a supernet of {2 * search.iterations} iterations scoring {search.fine_candidates}"
    if mode == "fine":
        return f"the fine stage alone on C2FNAS-Panc's topology: {supernet} colourings"
    return (
        f"{search.coarse_networks} networks in {search.clusters} clusters x "
        f"{search.iterations} iterations, then {supernet} colourings"
    )
