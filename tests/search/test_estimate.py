from c2fnas.nn.network import C2FNet
from c2fnas.nn.profile import estimate_cost
from c2fnas.search.estimate import estimate_search_compute
from c2fnas.space import Architecture, u_shaped_topologies

PATCH = (32, 32, 16)


def test_estimate_counts_training_macs_of_the_whole_search_and_times_a_cheap_step():
    estimate = estimate_search_compute(
        PATCH, 1, 2, batch=2, iterations=10, budget=4, width=0.125, clusters=2
    )
    network = C2FNet(Architecture.coarse(u_shaped_topologies()[0], 0.125), 1, 2)
    one = estimate_cost(network, (1, 1, *PATCH)).macs
    assert 0.5 * one < estimate.macs_min <= estimate.macs_mean <= estimate.macs_max < 2 * one
    assert estimate.total_macs == estimate.macs_mean * 2 * 10 * 3 * 4
    assert estimate.step_seconds is not None and estimate.step_seconds > 0  # cheap: measured
    assert estimate.device_hours == estimate.step_seconds * 10 * 4 / 3600
    line = estimate.describe(workers=2)
    assert "4 networks x 10 iterations x batch 2" in line and "2 worker(s)" in line


def test_an_expensive_step_is_not_measured_on_a_cpu():
    estimate = estimate_search_compute(
        (96, 96, 96), 1, 3, batch=8, iterations=20000, budget=50, clusters=2
    )
    assert estimate.step_seconds is None and estimate.device_hours is None
    assert 100e9 < estimate.macs_mean < 200e9  # C2FNAS-Panc-sized networks: ~150 GMACs
    assert "PMACs" in estimate.describe()
