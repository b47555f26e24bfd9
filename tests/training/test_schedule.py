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


def poly_rate(iteration, iterations=1000, warmup=100):
    return learning_rate(
        iteration, 0.02, 0.0025, warmup, (400, 800), 0.5, decay="poly", iterations=iterations
    )


def test_poly_decay_starts_after_the_warm_up_and_reaches_zero_at_the_end():
    assert poly_rate(0) == pytest.approx(0.0025)  # the warm-up is unchanged
    assert poly_rate(100) == pytest.approx(0.02)
    assert poly_rate(550) == pytest.approx(0.02 * 0.5**0.9)  # half of the 900 left
    assert poly_rate(1000) == 0.0
    rates = [poly_rate(i) for i in range(100, 1000)]
    # Falling at every iteration: no steps, the milestones are unused.
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    assert 0 < rates[-1] < 0.0002


def test_poly_exponent_bends_the_curve():
    linear = learning_rate(
        550, 0.02, 0.0, 100, (), 0.5, decay="poly", iterations=1000, poly_exponent=1.0
    )
    assert linear == pytest.approx(0.01)


def test_an_unknown_decay_is_refused():
    with pytest.raises(ValueError, match="'cosine'"):
        learning_rate(5, 0.02, 0.0, 0, (), 0.5, decay="cosine", iterations=10)
