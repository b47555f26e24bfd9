import random
import subprocess
import sys
from collections import Counter

import pytest

from c2fnas.search.simulate import proposal_rng, simulate
from c2fnas.search.strategies import (
    STRATEGIES,
    CoarseToFine,
    RandomSearch,
    make_strategy,
    neighbours,
    topology_clusters,
)
from c2fnas.space import distance, u_shaped_topologies, validate_levels

CODES = u_shaped_topologies()


def _toy_objective(seed):
    """A smooth objective over codes whose single optimum is a random topology."""
    target = random.Random(seed).choice(CODES)
    return target, lambda code: -distance(code, target)


def test_strategies_do_not_import_torch():
    code = (
        "import sys, c2fnas.search.strategies, c2fnas.search.simulate;print('torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_clusters_partition_the_space_reproducibly():
    clusters = topology_clusters(0)
    assert set(clusters) == set(CODES)
    sizes = Counter(clusters.values())
    assert sorted(sizes) == list(range(8))
    assert min(sizes.values()) > 50  # K-means on codes gives balanced groups, not singletons
    assert clusters == topology_clusters.__wrapped__(0)
    assert clusters[CODES[0]] == 0  # ids renumbered by first member


@pytest.mark.parametrize("name", STRATEGIES)
def test_never_proposes_a_topology_twice_and_stops_when_exhausted(name):
    finished = simulate(make_strategy(name), lambda code: float(sum(code)), 1000, workers=5)
    codes = [code for code, _ in finished]
    assert len(codes) == len(set(codes)) == 924
    assert make_strategy(name).propose(finished, set(), random.Random(0)) is None


@pytest.mark.parametrize("name", STRATEGIES)
def test_never_proposes_a_pending_topology(name):
    strategy = make_strategy(name)
    finished = [(code, float(index)) for index, code in enumerate(CODES[:40])]
    pending = set(CODES[40:900])
    for attempt in range(30):
        code = strategy.propose(finished, pending, proposal_rng(1, attempt))
        assert code in CODES[900:]


@pytest.mark.parametrize(("name", "budget"), [("c2f", 300), ("evolution", 100), ("random", 924)])
@pytest.mark.parametrize("seed", range(4))
def test_finds_the_known_optimum_within_budget(name, budget, seed):
    target, objective = _toy_objective(seed)
    finished = simulate(make_strategy(name), objective, budget, workers=4, seed=seed)
    assert target in [code for code, _ in finished]


def test_c2f_starts_with_two_topologies_per_cluster():
    clusters = topology_clusters(0)
    finished = simulate(CoarseToFine(), lambda code: 0.0, 16, workers=3)
    assert Counter(clusters[code] for code, _ in finished) == dict.fromkeys(range(8), 2)


def test_c2f_samples_concentrate_in_the_best_cluster():
    """Paper Fig. 4: after the initial round, most candidates come from the winning cluster."""
    clusters = topology_clusters(0)
    shares = {"c2f": [], "random": []}
    for seed in range(6):
        target, objective = _toy_objective(seed)
        for name in shares:
            finished = simulate(make_strategy(name), objective, 50, workers=4, seed=seed)
            later = [code for code, _ in finished[16:]]
            shares[name].append(sum(clusters[c] == clusters[target] for c in later) / len(later))
    c2f, uniform = (sum(values) / len(values) for values in shares.values())
    assert c2f > 0.4
    assert c2f > 2.5 * uniform


def test_c2f_without_exploration_picks_the_best_cluster():
    clusters = topology_clusters(0)
    first_of = {clusters[code]: code for code in reversed(CODES)}
    finished = [(first_of[k], 1.0 if k == 5 else 0.0) for k in range(8)]
    finished += [(code, 0.0) for code in CODES if clusters[code] != 5][8:16]
    strategy = CoarseToFine(initial_per_cluster=1, explore=0.0)
    for attempt in range(20):
        assert clusters[strategy.propose(finished, set(), proposal_rng(0, attempt))] == 5


@pytest.mark.parametrize("explore", [0.2, 0.5])
def test_c2f_explores_a_random_cluster_at_the_configured_rate(explore):
    """Algorithm 1's two branches, reached by real proposals of asynchronous searches: after
    the initial round, a proposal comes from the best-ranked cluster with probability
    ``1 - explore`` plus ``explore / K`` (a random cluster may be the best), and otherwise from
    any other cluster alike."""
    clusters = topology_clusters(0)
    sizes = Counter(clusters.values())
    best = max(sizes, key=sizes.__getitem__)  # the largest: it is not exhausted by the budget

    def objective(code):
        return 1.0 if clusters[code] == best else 0.0

    later = []
    for seed in range(5):
        finished = simulate(CoarseToFine(explore=explore), objective, 116, workers=4, seed=seed)
        later += [clusters[code] for code, _ in finished[16:]]
    share = sum(k == best for k in later) / len(later)
    expected = 1 - explore + explore / len(sizes)
    assert len(later) == 500
    assert abs(share - expected) < 0.06, (share, expected)
    others = Counter(k for k in later if k != best)
    each = explore / len(sizes) * len(later)
    assert set(others) == set(sizes) - {best}
    assert all(each / 3 < count < each * 2.5 for count in others.values()), (others, each)


def test_c2f_falls_through_when_the_best_cluster_is_exhausted():
    clusters = topology_clusters(0)
    best = [code for code in CODES if clusters[code] == 3]
    finished = [(code, 1.0) for code in best]
    finished += [(code, 0.0) for code in CODES if clusters[code] != 3][:16]
    code = CoarseToFine(explore=0.0).propose(finished, set(), random.Random(0))
    assert code is not None and clusters[code] != 3


@pytest.mark.parametrize("name", STRATEGIES)
def test_proposals_are_a_function_of_history_and_seed(name):
    finished = [(code, float(index % 7)) for index, code in enumerate(CODES[::37])]
    pending = set(CODES[1:5])
    first = [make_strategy(name).propose(finished, pending, proposal_rng(3, n)) for n in range(5)]
    again = [make_strategy(name).propose(finished, pending, proposal_rng(3, n)) for n in range(5)]
    assert first == again
    assert len(set(first)) > 1


def test_neighbours_move_one_cell_by_one_level():
    for code in CODES[::50]:
        found = neighbours(code)
        assert found
        for neighbour in found:
            validate_levels(neighbour, u_shape=True)
            changed = [a - b for a, b in zip(code, neighbour, strict=True) if a != b]
            assert changed in ([1], [-1])
    assert code in neighbours(neighbours(code)[0])


def test_unknown_strategy_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown strategy 'annealing'"):
        make_strategy("annealing")
    assert RandomSearch().name == "random"
