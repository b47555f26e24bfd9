"""Iterations, milestones and validation intervals that fit a wall-clock budget: pure functions
of measured costs (seconds), so tests can plan for any machine. What a budget buys (search,
folds, width, mirroring) is chosen by ``costs.solve``."""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field
from typing import Any

from c2fnas.training.config import SearchMode

PAPER_ITERATIONS = 40000  # deployment schedule; more would not be the paper's any more
PAPER_VALIDATIONS = 40  # every 1000 of 40000 iterations
MILESTONE_FRACTIONS = (0.4, 0.8)  # x0.5 at 16000 and 32000 of 40000 (8000, 16000 of 20000)
WARMUP_FRACTION = 1000 / 40000
SAFETY = 0.9
"""Plan to this share of the budget: the estimates miss file reading and writing, logging and
the machine's other load."""
STEP_OVERHEAD = 1.1
"""A training iteration over the measured step: the in-process loader's patch sampling and
augmentation (Hippocampus, 48 x 64 x 48, batch 2 on one core: 7 ms against a 0.5 s step),
logging and the machine's other load, which the step on random tensors leaves out."""
SEARCH_SHARE = 0.5
"""Of the time left for networks, what the search gets; the final folds get the rest (the paper
spent more on its search, but a budget user wants the deployed models to be trained well)."""
VALIDATION_SHARE = 0.1  # of a training run, at most, for validation
FINE_SCORING_SHARE = 0.1  # of the search, at most, for scoring the fine stage's colourings
PAPER_FINE_CANDIDATES = 2000
PAPER_COARSE_NETWORKS = 50
MIN_COARSE_NETWORKS = 4
NETWORKS_PER_CLUSTER = 6  # the paper's 50 networks over 8 clusters
MAX_CLUSTERS = 8
MIN_SEARCH_CLUSTERS = 2
"""Algorithm 1 differs from random search only with two clusters or more: with one, its initial
networks and its ranking picks are all uniform draws from the 924 topologies."""
MIN_RANKING_ITERATIONS = 2000
"""Candidates shorter than this are not trusted to rank topologies.
``benchmarks/search_landscape.py`` on Hippocampus (13 topologies trained 2,000 iterations of
32^3 patches, 6 with a second seed; AMD EPYC): none of 17 cheap scores after 250, 500 or 1,000
iterations ranked them like the 2,000-iteration Dice with a 95% interval clear of zero, and the
study's 240-iteration proxy ranked like a coin between two seeds (Spearman -0.03). 2,000 is the
longest schedule measured, not one shown to rank: there the seed noise (sd 0.004) equals the
spread between topologies (``benchmarks/results/search_landscape.json``)."""
FINE_ONLY_SHARE = 0.25
"""Of the time left for networks, what a fine stage alone gets: its supernet trains about one
fold's schedule (as in a full search, where it trains twice a coarse candidate's half)."""
MIN_ITERATIONS = 100
"""Fewer iterations teach a network nothing: a budget that allows fewer is refused."""
CHECKPOINT_SECONDS = 600.0  # a killed run loses at most about this much training
REFIT_AFTER = 0.05
"""Under a budget, ``c2fnas run`` re-fits the final training's schedule to the time its first
fold takes (``refit_training``) once this share of the fold's iterations is done and it has
validated at least once: late enough that the step and a validation are measured on the real
batches, early enough that only the warm-up has passed (the milestones lie at 40% and 80%).
The plan's step is a short measurement on random tensors, and this machine's speed drifts from
day to day: the hour planned on Hippocampus (AMD EPYC with AVX-512, 2 cores) measured 0.218 s a
step, ran at 0.19 s with validations, and finished in 40.4 of its 60 minutes
(``benchmarks/results/hippocampus_run_panc_60m.json`` as of commit 6881ecc)."""


class BudgetError(ValueError):
    """The budget is too small for the plan; the message says what it would need."""


@dataclass(frozen=True)
class Costs:
    """Measured or estimated seconds of the pieces of a run, on the planned device.

    Attributes:
        step: one training iteration (measured step x ``STEP_OVERHEAD``).
        validation: one validation of a fold's validation cases at the planned stride.
        fine_score: scoring one colouring on the search fold at the fine stage's stride.
        prediction: predicting the test images with the fold ensemble.
        data: checking and preprocessing the dataset.
    """

    step: float
    validation: float
    fine_score: float
    prediction: float
    data: float


@dataclass(frozen=True)
class TrainingSchedule:
    iterations: int
    validate_every: int
    checkpoint_every: int
    seconds: float
    """Estimated seconds of one run of this schedule, validations included."""

    @property
    def milestones(self) -> tuple[int, ...]:
        return milestones_for(self.iterations)

    @property
    def warmup_iterations(self) -> int:
        return max(1, round(WARMUP_FRACTION * self.iterations))

    def config_fields(self) -> dict[str, Any]:
        """The fields of a configuration's ``training`` section this schedule sets."""
        return {
            "iterations": self.iterations,
            "milestones": list(self.milestones),
            "warmup_iterations": self.warmup_iterations,
            "validate_every": self.validate_every,
            "checkpoint_every": self.checkpoint_every,
        }


@dataclass(frozen=True)
class SearchSchedule:
    """``coarse_networks`` and ``clusters`` are 0 for a fine stage alone; ``iterations`` is a
    coarse candidate's schedule, half the supernet's."""

    coarse_networks: int
    clusters: int
    iterations: int
    fine_candidates: int
    coarse_seconds: float
    fine_seconds: float

    @property
    def milestones(self) -> tuple[int, ...]:
        return milestones_for(self.iterations)


@dataclass(frozen=True)
class Schedule:
    training: TrainingSchedule
    search: SearchSchedule | None
    """None when no search is planned (``none``, or an architecture is given)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Estimated seconds per part: data, coarse, fine, training, prediction."""


def milestones_for(iterations: int) -> tuple[int, ...]:
    """The paper's decay points scaled to ``iterations`` (40000 -> 16000, 32000)."""
    points = sorted({round(fraction * iterations) for fraction in MILESTONE_FRACTIONS})
    return tuple(point for point in points if 0 < point < iterations)


def parse_duration(text: str) -> float:
    """Seconds in ``45m``, ``8h``, ``3d``, ``90s`` or combinations such as ``1h30m``.

    Raises:
        ValueError: naming the accepted forms.
    """
    compact = text.strip().lower().replace(" ", "")
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", compact)
    if not parts or "".join(number + unit for number, unit in parts) != compact:
        raise ValueError(f"time budget {text!r}: expected e.g. 45m, 8h, 3d or 1h30m")
    seconds = sum(float(n) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"time budget {text!r}: must be positive")
    return seconds


def training_run(
    iterations: int, costs: Costs, validations: int = PAPER_VALIDATIONS
) -> TrainingSchedule:
    """A run of ``iterations`` validated ``validations`` times (the last iteration included)."""
    validations = max(1, min(validations, iterations))
    validate_every = math.ceil(iterations / validations)
    per_checkpoint = max(1, math.floor(CHECKPOINT_SECONDS / costs.step))
    checkpoint_every = min(validate_every, per_checkpoint)
    done = iterations // validate_every + (1 if iterations % validate_every else 0)
    seconds = iterations * costs.step + done * costs.validation
    return TrainingSchedule(iterations, validate_every, checkpoint_every, seconds)


def fit_training(seconds: float, costs: Costs) -> TrainingSchedule:
    """The longest run (at most the paper's 40000 iterations) that takes ``seconds``, spending
    at most ``VALIDATION_SHARE`` of them on up to the paper's 40 validations.

    Raises:
        BudgetError: fewer than ``MIN_ITERATIONS`` would fit.
    """
    affordable = (
        math.floor(VALIDATION_SHARE * seconds / costs.validation)
        if costs.validation > 0
        else PAPER_VALIDATIONS
    )
    validations = max(1, min(PAPER_VALIDATIONS, affordable))
    iterations = math.floor((seconds - validations * costs.validation) / costs.step)
    if iterations < MIN_ITERATIONS:
        raise BudgetError(
            f"{seconds / 60:.1f} min for a training run allow {max(0, iterations)} iterations "
            f"at {costs.step:.2f} s each; at least {MIN_ITERATIONS} are needed"
        )
    return training_run(min(iterations, PAPER_ITERATIONS), costs, validations)


def refit_training(
    seconds: float, step: float, validation: float, earliest: int
) -> TrainingSchedule:
    """``fit_training`` of ``seconds`` at a measured ``step`` and ``validation`` (seconds), for a
    run that cannot end before iteration ``earliest`` (it has trained that far, or nearly): when
    the measurement leaves less, the run ends there."""
    measured = Costs(step=step, validation=validation, fine_score=0.0, prediction=0.0, data=0.0)
    with contextlib.suppress(BudgetError):  # fewer than MIN_ITERATIONS: the time is spent
        refitted = fit_training(seconds, measured)
        if refitted.iterations >= earliest:
            return refitted
    return training_run(earliest, measured)


def finished_step(seconds: float, iterations: int, validations: int, validation: float) -> float:
    """The seconds of a training step in finished training (of one fold or several together):
    ``seconds`` for ``iterations`` iterations, less ``validations`` validations of
    ``validation`` seconds each. Batch loading, checkpoints and the machine's drift over the
    whole run are in it, which the early measurement of ``refit_training``'s first call has
    not seen. Never below half of ``seconds`` per iteration (never 0)."""
    if iterations < 1:
        raise ValueError(f"{iterations} iterations: no step to measure")
    # validations said to take more than half of the time were measured slower than they ran
    # (a first, cold one): they never have half of it by the schedule, so the steps keep half
    return max(seconds / 2, seconds - validations * validation) / iterations


def fit_search(
    seconds: float, costs: Costs, final: TrainingSchedule, workers: int
) -> SearchSchedule:
    """Coarse and fine stage sizes that take ``seconds`` with ``workers`` parallel candidates.

    Search candidates train half the final schedule (the paper's 20000 of 40000 iterations),
    the supernet twice that; the fine stage scores at most ``FINE_SCORING_SHARE`` of the
    time's worth of colourings. The coarse stage gets what is left. Where that makes fewer
    networks than ``MIN_SEARCH_CLUSTERS`` clusters need, candidates train shorter so that they
    fit, down to ``MIN_RANKING_ITERATIONS``; where even that fails, shorter still so that
    ``MIN_COARSE_NETWORKS`` fit (a search ``choose_search`` does not choose by itself).

    Raises:
        BudgetError: not even ``MIN_COARSE_NETWORKS`` networks of ``MIN_ITERATIONS`` fit.
    """
    per_iteration = costs.step + costs.validation / final.validate_every
    candidates = max(
        1,
        min(PAPER_FINE_CANDIDATES, math.floor(FINE_SCORING_SHARE * seconds / costs.fine_score)),
    )
    scoring = candidates * costs.fine_score
    iterations = max(MIN_ITERATIONS, final.iterations // 2)
    networks = math.floor(
        (seconds - scoring - 2 * iterations * per_iteration)
        * workers
        / (iterations * per_iteration)
    )
    clustered = MIN_SEARCH_CLUSTERS * NETWORKS_PER_CLUSTER
    for floor in (clustered, MIN_COARSE_NETWORKS):
        if networks >= floor:
            break
        rounds = math.ceil(floor / workers) + 2  # coarse rounds, then the supernet (2x)
        shorter = math.floor((seconds - scoring) / (rounds * per_iteration))
        if floor == MIN_COARSE_NETWORKS or shorter >= MIN_RANKING_ITERATIONS:
            networks, iterations = floor, min(iterations, shorter)
            break
    networks = min(networks, PAPER_COARSE_NETWORKS)
    keep = max(f for f in (clustered, MIN_COARSE_NETWORKS) if f <= networks)
    planned = search_run(networks, iterations, candidates, costs, final.validate_every, workers)
    while planned.coarse_seconds + planned.fine_seconds > seconds and iterations >= MIN_ITERATIONS:
        # the rounding of validations per candidate: fewer networks down to the floor they
        # reached, then shorter candidates
        if networks > keep:
            networks -= 1
        else:
            iterations -= max(1, iterations // 100)
        planned = search_run(networks, iterations, candidates, costs, final.validate_every, workers)
    if iterations < MIN_ITERATIONS:
        raise BudgetError(
            f"{seconds / 60:.1f} min for the search allow {MIN_COARSE_NETWORKS} networks of "
            f"{max(0, iterations)} iterations; at least {MIN_ITERATIONS} are needed (give "
            "--arch to train a published network without a search, or a larger budget)"
        )
    return planned


def fit_fine(seconds: float, costs: Costs, final: TrainingSchedule) -> SearchSchedule:
    """A fine stage alone that takes ``seconds``: the longest supernet (at most twice the
    paper's candidate schedule), after at most ``FINE_SCORING_SHARE`` of the time's worth of
    colourings.

    Raises:
        BudgetError: the supernet would train fewer than ``MIN_ITERATIONS``.
    """
    per_iteration = costs.step + costs.validation / final.validate_every
    candidates = max(
        1,
        min(PAPER_FINE_CANDIDATES, math.floor(FINE_SCORING_SHARE * seconds / costs.fine_score)),
    )
    supernet = math.floor((seconds - candidates * costs.fine_score) / per_iteration)
    iterations = min(supernet // 2, PAPER_ITERATIONS // 2)
    while iterations >= MIN_ITERATIONS:
        planned = search_run(0, iterations, candidates, costs, final.validate_every, 1)
        if planned.fine_seconds <= seconds:
            return planned
        iterations -= max(1, iterations // 100)  # the rounding of validations
    raise BudgetError(
        f"{seconds / 60:.1f} min for the fine stage allow a supernet of {max(0, supernet)} "
        f"iterations; at least {2 * MIN_ITERATIONS} are needed"
    )


def search_run(
    networks: int, iterations: int, candidates: int, costs: Costs, validate_every: int, workers: int
) -> SearchSchedule:
    """The estimated time of a search of this size."""
    candidate = training_run(iterations, costs, math.ceil(iterations / validate_every))
    supernet = training_run(2 * iterations, costs, math.ceil(2 * iterations / validate_every))
    clusters = max(1, min(MAX_CLUSTERS, networks // NETWORKS_PER_CLUSTER)) if networks else 0
    return SearchSchedule(
        coarse_networks=networks,
        clusters=clusters,
        iterations=iterations,
        fine_candidates=candidates,
        coarse_seconds=math.ceil(networks / workers) * candidate.seconds,
        fine_seconds=supernet.seconds + candidates * costs.fine_score,
    )


def fit_budget(
    budget: float, costs: Costs, search: SearchMode, folds: int, workers: int = 1
) -> Schedule:
    """Split ``SAFETY`` x ``budget`` seconds: data and prediction first (fixed costs), then the
    search (``SEARCH_SHARE`` of the rest for ``coarse``, ``FINE_ONLY_SHARE`` for ``fine``) and
    the ``folds`` training runs.

    Raises:
        BudgetError: the budget does not cover the fixed costs, or too few iterations fit.
    """
    networks = SAFETY * budget - costs.data - costs.prediction
    if networks <= 0:
        raise BudgetError(
            f"a budget of {budget / 60:.1f} min does not cover preprocessing "
            f"({costs.data / 60:.1f} min) and prediction ({costs.prediction / 60:.1f} min)"
        )
    share = {"coarse": SEARCH_SHARE, "fine": FINE_ONLY_SHARE, "none": 0.0}[search]
    training = fit_training((1 - share) * networks / folds, costs)
    search_schedule = None
    if search == "coarse":
        search_schedule = fit_search(share * networks, costs, training, workers)
    elif search == "fine":
        search_schedule = fit_fine(share * networks, costs, training)
    return Schedule(training, search_schedule, _seconds(costs, training, search_schedule, folds))


def paper_schedule(
    costs: Costs, search: SearchMode, folds: int, workers: int = 1, fine_candidates: int = 2000
) -> Schedule:
    """The paper's schedule, with its estimated time on the measured device."""
    training = training_run(PAPER_ITERATIONS, costs)
    search_schedule = None
    if search != "none":
        networks = PAPER_COARSE_NETWORKS if search == "coarse" else 0
        search_schedule = search_run(
            networks, PAPER_ITERATIONS // 2, fine_candidates, costs, training.validate_every,
            workers,
        )  # fmt: skip
    return Schedule(training, search_schedule, _seconds(costs, training, search_schedule, folds))


def _seconds(
    costs: Costs, training: TrainingSchedule, search: SearchSchedule | None, folds: int
) -> dict[str, float]:
    return {
        "data": costs.data,
        "coarse": search.coarse_seconds if search else 0.0,
        "fine": search.fine_seconds if search else 0.0,
        "training": folds * training.seconds,
        "prediction": costs.prediction,
    }
