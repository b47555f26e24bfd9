"""``Surrogate``: a landscape interpolated from trained topologies, and strategies run on it.

The planted landscapes check that it can tell strategies apart where similarity pays (smooth:
Algorithm 1 must beat random search) and does not invent a gain where it cannot (the same scores
shuffled over the trained topologies)."""

import random

import pytest

from c2fnas.search.simulate import Surrogate
from c2fnas.search.strategies import CoarseToFine, RandomSearch
from c2fnas.space import distance, u_shaped_topologies

CODES = u_shaped_topologies()


def test_a_topology_scores_as_its_nearest_trained_one_and_ties_average():
    first, second = CODES[0], CODES[-1]
    surrogate = Surrogate({first: 0.2, second: 0.8}, noise=0.0)
    assert surrogate.values[first] == 0.2 and surrogate.values[second] == 0.8
    for code in CODES:
        near_first, near_second = distance(code, first), distance(code, second)
        expected = 0.2 if near_first < near_second else 0.8 if near_second < near_first else 0.5
        assert surrogate.values[code] == pytest.approx(expected)
    assert surrogate.best == 0.8
    assert surrogate.upper_quartile == pytest.approx(0.65)  # within the trained scores


def test_noise_is_added_per_evaluation_with_the_given_deviation():
    surrogate = Surrogate({CODES[0]: 0.5, CODES[1]: 0.6}, noise=0.05)
    objective = surrogate.objective(seed=3)
    draws = [objective(CODES[0]) - 0.5 for _ in range(4000)]
    mean = sum(draws) / len(draws)
    deviation = (sum((d - mean) ** 2 for d in draws) / len(draws)) ** 0.5
    assert abs(mean) < 0.005 and deviation == pytest.approx(0.05, rel=0.1)
    assert surrogate.objective(seed=3)(CODES[0]) == surrogate.objective(seed=3)(CODES[0])


def test_an_exhaustive_noise_free_search_always_finds_the_best():
    rng = random.Random(1)
    surrogate = Surrogate({code: rng.random() for code in rng.sample(CODES, 20)}, noise=0.0)
    outcomes = surrogate.outcomes(lambda seed: RandomSearch(), len(CODES), seeds=3)
    assert outcomes.chance_best == 1.0 and outcomes.chance_top_quarter == 1.0
    assert outcomes.mean_regret == 0.0


def _planted(shuffle: bool) -> Surrogate:
    rng = random.Random(0)
    trained = rng.sample(CODES, 60)
    scores = [-distance(code, trained[0]) for code in trained]
    if shuffle:
        rng.shuffle(scores)
    return Surrogate(dict(zip(trained, scores, strict=True)), noise=0.1)


def _regrets(surrogate: Surrogate) -> tuple[float, float]:
    c2f = surrogate.outcomes(lambda seed: CoarseToFine(seed=seed, clusters=4), 30, seeds=100)
    rand = surrogate.outcomes(lambda seed: RandomSearch(), 30, seeds=100)
    return c2f.mean_regret, rand.mean_regret


def test_algorithm_1_beats_random_search_on_a_smooth_landscape():
    c2f, rand = _regrets(_planted(shuffle=False))
    assert c2f < 0.8 * rand


def test_algorithm_1_does_not_beat_random_search_on_a_shuffled_landscape():
    c2f, rand = _regrets(_planted(shuffle=True))
    assert c2f > 0.9 * rand
