from c2fnas.nn.network import C2FNet
from c2fnas.nn.profile import estimate_cost
from c2fnas.search.estimate import estimate_search_compute
from c2fnas.space import Architecture, u_shaped_topologies


def test_estimate_counts_training_macs_of_the_whole_search():
    estimate = estimate_search_compute(
        (32, 32, 16), 1, 2, batch=2, iterations=10, budget=4, width=0.125, clusters=2, measure=False
    )
    one = estimate_cost(
        C2FNet(Architecture.coarse(u_shaped_topologies()[0], 0.125), 1, 2), (1, 1, 32, 32, 16)
    ).macs
    assert 0.5 * one < estimate.macs_min <= estimate.macs_mean <= estimate.macs_max < 2 * one
    assert estimate.total_macs == estimate.macs_mean * 2 * 10 * 3 * 4
    assert estimate.step_seconds is None and estimate.device_hours is None
    assert "4 networks x 10 iterations x batch 2" in estimate.describe()


def test_a_cheap_step_is_measured():
    estimate = estimate_search_compute(
        (32, 32, 16), 1, 2, batch=1, iterations=100, budget=3, width=0.125, clusters=2
    )
    assert estimate.step_seconds is not None and estimate.step_seconds > 0
    assert estimate.device_hours == estimate.step_seconds * 100 * 3 / 3600
    assert "device-hours" in estimate.describe(workers=2)
