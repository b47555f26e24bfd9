"""What a budget buys (search, folds, width, mirroring), from given costs (no measurement)."""

from dataclasses import dataclass, replace

import pytest

from c2fnas.costs import schedule, solve
from c2fnas.costs.schedule import BudgetError, Costs, fit_budget

COSTS = Costs(step=0.5, validation=5.0, fine_score=4.0, prediction=120.0, data=30.0)


def _costs_of(folds):
    """Prediction grows with the folds ensembled, as in a real run."""
    return Costs(step=0.5, validation=5.0, fine_score=4.0, prediction=60.0 * folds, data=30.0)


def test_a_short_budget_trains_fewer_folds_each_long_enough():
    short_folds, short = solve.fit_folds(3600, _costs_of, search="none")
    assert short_folds == 1  # 5 folds would train about 1100 iterations each
    assert short.training.iterations > fit_budget(3600, COSTS, "none", folds=5).training.iterations
    two = fit_budget(8 * 3600, _costs_of(2), "none", folds=2)
    assert two.training.iterations < solve.MIN_FOLD_ITERATIONS  # about 28,000 each at 0.5 s
    assert solve.fit_folds(8 * 3600, _costs_of, search="none")[0] == 1
    middle_folds, middle = solve.fit_folds(24 * 3600, _costs_of, search="none")
    assert 1 < middle_folds < 5
    assert middle.training.iterations >= solve.MIN_FOLD_ITERATIONS
    more = fit_budget(24 * 3600, _costs_of(middle_folds + 1), "none", folds=middle_folds + 1)
    assert more.training.iterations < solve.MIN_FOLD_ITERATIONS  # the most that fit
    assert sum(middle.seconds.values()) <= schedule.SAFETY * 24 * 3600
    all_folds, _ = solve.fit_folds(3 * 86400, _costs_of, search="coarse")
    assert all_folds == 5


def test_a_fold_is_added_only_when_each_gets_the_paper_schedule():
    assert solve.MIN_FOLD_ITERATIONS == schedule.PAPER_ITERATIONS
    # an hour and three hours at the Hippocampus step of the Intel Xeon (about 0.13 s): one model
    for budget in (3600, 3 * 3600):
        folds, _ = solve.fit_folds(budget, lambda n: replace(_costs_of(n), step=0.13), "none")
        assert folds == 1


def test_fold_choice_refuses_a_budget_too_small_for_one_fold():
    with pytest.raises(BudgetError, match="iterations"):
        solve.fit_folds(160, _costs_of, search="none")


def _choice(budget, step, **options):
    def costs_of(folds):
        return Costs(step=step, validation=3.0, fine_score=4.0, prediction=60.0 * folds, data=30.0)

    return solve.choose_search(budget, costs_of, **options)


def test_a_budget_that_buys_two_clusters_of_useful_candidates_searches_both_stages():
    choice = _choice(8 * 3600, step=0.12)
    search = choice.schedule.search
    assert choice.mode == "coarse"
    assert search.clusters >= schedule.MIN_SEARCH_CLUSTERS
    assert search.coarse_networks >= schedule.MIN_SEARCH_CLUSTERS * schedule.NETWORKS_PER_CLUSTER
    assert search.iterations >= schedule.MIN_RANKING_ITERATIONS
    assert f"{search.coarse_networks} networks in {search.clusters} clusters" in choice.reason


def test_a_budget_short_of_clusters_plans_the_fine_stage_alone():
    choice = _choice(8 * 3600, step=0.5)
    search = choice.schedule.search
    assert choice.mode == "fine"
    assert search.coarse_networks == 0 and choice.schedule.seconds["coarse"] == 0
    assert 2 * search.iterations >= solve.MIN_SUPERNET_ITERATIONS
    assert "no coarse stage" in choice.reason and "cluster" in choice.reason
    assert "fine stage alone on C2FNAS-Panc's topology" in choice.reason


def test_a_supernet_as_short_as_the_one_measured_not_to_pay_is_not_planned():
    # 2.5 h at the Hippocampus run's step: forced, the fine stage's supernet would train about
    # 8,800 iterations, near the 8,388 of the 3 h search run that lost to training only
    # (benchmarks/results/hippocampus_run_search_3h.json against hippocampus_run_panc_3h.json)
    forced = _choice(150 * 60, step=0.18, forced="fine")
    assert 8000 < 2 * forced.schedule.search.iterations < solve.MIN_SUPERNET_ITERATIONS
    choice = _choice(150 * 60, step=0.18)
    assert choice.mode == "none" and choice.schedule.search is None
    assert f"from {solve.MIN_SUPERNET_ITERATIONS}" in choice.reason
    assert choice.schedule.training.iterations > forced.schedule.training.iterations


def test_a_budget_too_small_for_a_useful_supernet_plans_no_search():
    choice = _choice(3600, step=0.5)
    assert choice.mode == "none" and choice.schedule.search is None
    assert "no coarse stage" in choice.reason and "no fine stage" in choice.reason
    assert f"from {solve.MIN_SUPERNET_ITERATIONS}" in choice.reason
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


@dataclass(frozen=True)
class _Network:
    """A candidate of ``step`` seconds, ``measured_step`` once measured (default: the same);
    mirroring multiplies prediction by 8, as the eight flips do."""

    step: float
    measured_step: float | None = None

    def costs(self, folds: int, mirrored: bool) -> Costs:
        prediction = (8 if mirrored else 1) * 60.0 * folds
        return Costs(
            step=self.step, validation=3.0, fine_score=4.0, prediction=prediction, data=30.0
        )

    def measured(self) -> "_Network":
        return replace(self, step=self.measured_step or self.step)


@pytest.fixture
def problems(monkeypatch):
    """Every budget problem the solver solves: (budget, costs, search, folds, workers)."""
    solved = []

    def counting(*problem):
        solved.append(problem)
        return fit_budget(*problem)

    monkeypatch.setattr(solve, "fit_budget", counting)
    return solved


def test_one_call_settles_the_plan_and_solves_each_budget_problem_once(problems):
    narrowest = _Network(0.12)
    solve.solve_budget(8 * 3600, [narrowest, _Network(0.24)])  # folds tried 5, 4, 3, 2
    assert len(problems) == len(set(problems))
    problems.clear()
    planned = solve.solve_budget(8 * 3600, [narrowest, _Network(0.24)], folds=5)
    # the narrowest without mirroring: the schedule found while choosing the search is the plan's
    assert planned.network is narrowest and not planned.mirrored
    assert len(problems) == 2  # the coarse search at five folds, then the wider network's try
    choice = solve.choose_search(8 * 3600, lambda folds: narrowest.costs(folds, False), folds=5)
    assert (planned.mode, planned.folds, planned.why) == (choice.mode, choice.folds, choice.why)
    assert planned.schedule == choice.schedule


def test_a_wider_network_is_measured_once_chosen_and_the_schedule_fits_its_measured_step():
    budget = 3 * 86400
    planned = solve.solve_budget(budget, [_Network(0.12), _Network(0.24, measured_step=0.6)])
    assert planned.network.step == 0.6  # chosen by its estimate, planned by its measurement
    assert planned.schedule.training.iterations >= solve.ITERATIONS_BEFORE_WIDTH // 2
    expected = fit_budget(budget, planned.network.costs(planned.folds, True), planned.mode,
                          planned.folds)  # fmt: skip
    assert planned.mirrored and planned.schedule == expected


def test_a_wider_network_measured_too_slow_for_the_budget_falls_back_to_the_narrowest():
    narrowest = _Network(0.12)
    planned = solve.solve_budget(3 * 86400, [narrowest, _Network(0.24, measured_step=1000.0)])
    assert planned.network is narrowest


def test_a_wider_network_that_trains_too_few_iterations_is_not_planned():
    narrowest = _Network(0.12)
    planned = solve.solve_budget(8 * 3600, [narrowest, _Network(0.24)], folds=5)
    assert planned.network is narrowest  # 8 h: five folds of about 20000 iterations at 0.12 s
    # the same 8 h plans two folds, and the wider network trains them past 20,000
    assert solve.solve_budget(8 * 3600, [narrowest, _Network(0.24)]).network.step == 0.24


def test_a_given_network_is_trained_without_a_search_on_the_folds_that_fit():
    planned = solve.solve_budget(3600, [_Network(0.5)], network_given=True)
    folds, schedule_of_folds = solve.fit_folds(
        3600, lambda n: _Network(0.5).costs(n, False), "none"
    )
    assert (planned.mode, planned.why, planned.folds) == ("none", None, folds)
    assert planned.schedule == schedule_of_folds
    with pytest.raises(BudgetError, match="iterations"):
        solve.solve_budget(120, [_Network(0.5)], network_given=True)
