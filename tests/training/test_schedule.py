import pytest

from c2fnas.training.config import load_config
from c2fnas.training.schedule import decay_factor, learning_rate, warmup_rate


def paper_rate(iteration, milestones=(8000, 16000)):
    return learning_rate(iteration, 0.02, 0.0025, 1000, milestones, 0.5)


@pytest.mark.parametrize(
    ("iteration", "expected"),
    [(0, 0.0025), (500, 0.01125), (1000, 0.02), (7999, 0.02), (8000, 0.01), (16000, 0.005),
     (19999, 0.005)],
)  # fmt: skip
def test_search_schedule_matches_the_paper(iteration, expected):
    assert paper_rate(iteration) == pytest.approx(expected)


def test_deployment_schedule():
    rates = [paper_rate(i, (16000, 32000)) for i in (15999, 16000, 31999, 32000, 39999)]
    assert rates == pytest.approx([0.02, 0.01, 0.01, 0.005, 0.005])


def test_presets_hold_the_paper_schedules():
    config = load_config("paper")
    assert (config.training.iterations, config.training.milestones) == (40000, (16000, 32000))
    search = config.for_search()
    assert (search.training.iterations, search.training.milestones) == (20000, (8000, 16000))
    assert config.for_search(2).training.milestones == (16000, 32000)


def test_pieces():
    assert warmup_rate(5, 1.0, 2.0, 0) == 2.0
    assert warmup_rate(1, 0.0, 1.0, 4) == 0.25
    assert decay_factor(10, (10, 20), 0.1) == pytest.approx(0.1)
    assert decay_factor(9, (10, 20), 0.1) == 1.0
