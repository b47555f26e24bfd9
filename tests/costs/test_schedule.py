"""Schedules that fit a budget, from given costs (no measurement)."""

import pytest

from c2fnas.costs import schedule
from c2fnas.costs.schedule import BudgetError, Costs, fit_budget, parse_duration

COSTS = Costs(step=0.5, validation=5.0, fine_score=4.0, prediction=120.0, data=30.0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("45m", 2700), ("8h", 28800), ("3d", 259200), ("90s", 90), ("1h30m", 5400), ("1.5h", 5400)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "45", "m45", "8 hours", "0m", "1h-2m"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError, match="time budget"):
        parse_duration(text)


@pytest.mark.parametrize("budget", [3600, 3 * 3600, 8 * 3600, 3 * 86400])
@pytest.mark.parametrize("search", ["none", "fine", "coarse"])
def test_the_whole_run_fits_the_budget(budget, search):
    planned = fit_budget(budget, COSTS, search=search, folds=5)
    assert sum(planned.seconds.values()) <= schedule.SAFETY * budget
    training = planned.training
    assert training.iterations <= schedule.PAPER_ITERATIONS
    assert training.validate_every <= training.iterations
    assert training.checkpoint_every <= training.validate_every
    assert list(training.milestones) == sorted(training.milestones)
    assert all(0 < m < training.iterations for m in training.milestones)
    assert (planned.search is not None) == (search != "none")
    if search == "coarse":
        assert planned.seconds["coarse"] > 0 and planned.seconds["fine"] > 0
        assert planned.search.coarse_networks >= schedule.MIN_COARSE_NETWORKS
    if search == "fine":
        assert planned.seconds["coarse"] == 0 and planned.seconds["fine"] > 0
        assert planned.search.coarse_networks == 0 and planned.search.iterations > 0


def test_a_larger_budget_trains_longer_until_the_papers_schedule():
    short = fit_budget(3600, COSTS, search="none", folds=5).training.iterations
    longer = fit_budget(8 * 3600, COSTS, search="none", folds=5).training.iterations
    assert short < longer
    huge = fit_budget(365 * 86400, COSTS, search="coarse", folds=5)
    assert huge.training.iterations == 40000 and huge.training.milestones == (16000, 32000)
    assert huge.search.iterations == 20000 and huge.search.coarse_networks == 50
    assert huge.search.clusters == 8 and huge.search.fine_candidates == 2000


def test_more_workers_evaluate_more_networks_in_the_same_time():
    one = fit_budget(3 * 3600, COSTS, search="coarse", folds=5, workers=1).search
    four = fit_budget(3 * 3600, COSTS, search="coarse", folds=5, workers=4).search
    assert four.coarse_networks > one.coarse_networks


def test_too_small_a_budget_is_refused_with_what_it_needs():
    with pytest.raises(BudgetError, match="preprocessing"):
        fit_budget(60, COSTS, search="none", folds=5)
    with pytest.raises(BudgetError, match="iterations"):
        fit_budget(400, COSTS, search="none", folds=5)
    with pytest.raises(BudgetError, match="--arch"):
        fit_budget(800, COSTS, search="coarse", folds=5)


def test_the_papers_schedule_without_a_budget():
    planned = schedule.paper_schedule(COSTS, search="coarse", folds=5)
    assert planned.training.iterations == 40000 and planned.training.validate_every == 1000
    assert planned.search.coarse_networks == 50 and planned.search.iterations == 20000


def test_the_coarse_floor_holds_after_the_rounding_of_validations():
    # planned 3 networks before: the loop that absorbs rounding went below the floor
    costs = Costs(step=0.1, validation=1.0, fine_score=4.0, prediction=60.0, data=30.0)
    for budget in (1800, 2400, 7200, 3 * 3600):
        planned = fit_budget(budget, costs, "coarse", folds=1)
        assert planned.search.coarse_networks >= schedule.MIN_COARSE_NETWORKS
        assert planned.seconds["coarse"] + planned.seconds["fine"] <= schedule.SEARCH_SHARE * (
            schedule.SAFETY * budget - costs.data - costs.prediction
        )


def test_a_refit_fills_the_seconds_at_the_measured_costs():
    """420 s at 0.1 s a step and 1 s a validation: 40 validations (10% of the time at most),
    (420 - 40) / 0.1 = 3,800 iterations, milestones at 40% and 80%."""
    refitted = schedule.refit_training(420.0, step=0.1, validation=1.0, earliest=200)
    assert refitted.iterations == 3800 and refitted.validate_every == 95
    assert refitted.milestones == (1520, 3040) and refitted.seconds <= 420.0


@pytest.mark.parametrize("seconds", [20.0, 5.0])
def test_a_refit_that_leaves_less_than_done_ends_at_the_earliest(seconds):
    """20 s fit 180 iterations (fewer than the 250 done), 5 s fewer than ``MIN_ITERATIONS``
    (no ``BudgetError``): either way the run ends at ``earliest``."""
    refitted = schedule.refit_training(seconds, step=0.1, validation=1.0, earliest=260)
    assert refitted.iterations == 260


def test_the_finished_step_is_the_time_less_validations_per_iteration():
    """3,800 iterations in 344 s, 40 of them validating at 1 s each: 0.08 s a step."""
    assert schedule.finished_step(344.0, 3800, 40, 1.0) == pytest.approx(0.08)
    # validations measured slower than they ran: the steps keep half of the time, never 0
    assert schedule.finished_step(30.0, 100, 40, 1.0) == pytest.approx(0.15)
    with pytest.raises(ValueError, match="0 iterations"):
        schedule.finished_step(10.0, 0, 1, 1.0)


def test_a_refit_to_validations_measured_at_zero_seconds_still_fits():
    """A validation rounded to 0 s (a tiny one on a GPU) costs nothing: the paper's 40."""
    refitted = schedule.refit_training(100.0, step=0.01, validation=0.0, earliest=1)
    assert refitted.iterations == 10000 and refitted.validate_every == 250
