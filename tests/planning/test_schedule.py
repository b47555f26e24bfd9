"""Schedules that fit a budget, from given costs (no measurement)."""

import pytest

from c2fnas.planning import schedule
from c2fnas.planning.schedule import BudgetError, Costs, fit_budget, parse_duration

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


def _costs_of(folds):
    """Prediction grows with the folds ensembled, as in a real run."""
    return Costs(step=0.5, validation=5.0, fine_score=4.0, prediction=60.0 * folds, data=30.0)


def test_a_short_budget_trains_fewer_folds_each_long_enough():
    short_folds, short = schedule.fit_folds(3600, _costs_of, search="none")
    assert short_folds == 1  # 5 folds would train about 1100 iterations each
    assert short.training.iterations > fit_budget(3600, COSTS, "none", folds=5).training.iterations
    middle_folds, middle = schedule.fit_folds(4 * 3600, _costs_of, search="none")
    assert 1 < middle_folds < 5
    assert middle.training.iterations >= schedule.MIN_FOLD_ITERATIONS
    more = fit_budget(4 * 3600, _costs_of(middle_folds + 1), "none", folds=middle_folds + 1)
    assert more.training.iterations < schedule.MIN_FOLD_ITERATIONS  # the most that fit
    assert sum(middle.seconds.values()) <= schedule.SAFETY * 4 * 3600
    all_folds, _ = schedule.fit_folds(3 * 86400, _costs_of, search="coarse")
    assert all_folds == 5


def test_fold_choice_refuses_a_budget_too_small_for_one_fold():
    with pytest.raises(BudgetError, match="iterations"):
        schedule.fit_folds(160, _costs_of, search="none")


def test_the_coarse_floor_holds_after_the_rounding_of_validations():
    # planned 3 networks before: the loop that absorbs rounding went below the floor
    costs = Costs(step=0.1, validation=1.0, fine_score=4.0, prediction=60.0, data=30.0)
    for budget in (1800, 2400, 7200, 3 * 3600):
        planned = fit_budget(budget, costs, "coarse", folds=1)
        assert planned.search.coarse_networks >= schedule.MIN_COARSE_NETWORKS
        assert planned.seconds["coarse"] + planned.seconds["fine"] <= schedule.SEARCH_SHARE * (
            schedule.SAFETY * budget - costs.data - costs.prediction
        )


def _choice(budget, step, **options):
    def costs_of(folds):
        return Costs(step=step, validation=3.0, fine_score=4.0, prediction=60.0 * folds, data=30.0)

    return schedule.choose_search(budget, costs_of, **options)


def test_a_budget_that_buys_two_clusters_of_useful_candidates_searches_both_stages():
    choice = _choice(8 * 3600, step=0.12)
    search = choice.schedule.search
    assert choice.mode == "coarse"
    assert search.clusters >= schedule.MIN_SEARCH_CLUSTERS
    assert search.coarse_networks >= schedule.MIN_SEARCH_CLUSTERS * schedule.NETWORKS_PER_CLUSTER
    assert search.iterations >= schedule.MIN_RANKING_ITERATIONS
    assert f"{search.coarse_networks} networks in {search.clusters} clusters" in choice.reason


def test_a_budget_short_of_clusters_plans_the_fine_stage_alone():
    choice = _choice(3 * 3600, step=0.5)
    search = choice.schedule.search
    assert choice.mode == "fine"
    assert search.coarse_networks == 0 and choice.schedule.seconds["coarse"] == 0
    assert 2 * search.iterations >= schedule.MIN_SUPERNET_ITERATIONS
    assert "no coarse stage" in choice.reason and "cluster" in choice.reason
    assert "fine stage alone on C2FNAS-Panc's topology" in choice.reason


def test_a_budget_too_small_for_a_useful_supernet_plans_no_search():
    choice = _choice(3600, step=0.5)
    assert choice.mode == "none" and choice.schedule.search is None
    assert "no coarse stage" in choice.reason and "no fine stage" in choice.reason
    assert f"from {schedule.MIN_SUPERNET_ITERATIONS}" in choice.reason
    # no search leaves the folds the time a search would have taken
    fine = _choice(3600, step=0.5, forced="fine")
    assert choice.schedule.training.iterations * choice.folds > (
        fine.schedule.training.iterations * fine.folds
    )


def test_a_forced_search_is_planned_and_says_what_to_expect():
    choice = _choice(3600, step=0.5, forced="coarse")
    assert choice.mode == "coarse" and choice.schedule.search.coarse_networks >= 4
    assert choice.reason.startswith("forced (--search coarse)")
    assert "expect little of it" in choice.reason and "random search" in choice.reason
    fitting = _choice(8 * 3600, step=0.12, forced="coarse")
    assert "expect little" not in fitting.reason


def test_given_folds_are_kept_whatever_the_search():
    for budget in (3600, 3 * 3600, 8 * 3600):
        assert _choice(budget, step=0.12, folds=2).folds == 2
