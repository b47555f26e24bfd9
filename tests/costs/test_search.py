import json
import logging

import pytest
import torch

from c2fnas.accel.precision import resolve_precision
from c2fnas.costs import search as estimate_module
from c2fnas.costs.profile import estimate_cost
from c2fnas.costs.search import estimate_search_compute, search_fold_windows
from c2fnas.data.cache import case_paths
from c2fnas.data.splits import SEARCH_FOLD
from c2fnas.nn.network import C2FNet
from c2fnas.search.stages import typical_candidates
from c2fnas.space import Architecture, u_shaped_topologies
from tests.search.toy_worker import FIVE_CASES, toy_run_folder

PATCH = (32, 32, 16)


def _candidates(width=0.125):
    """The topologies that stand for a search of two clusters, as ``coarse_estimate`` picks."""
    return typical_candidates(seed=0, clusters=2, width=width)


@pytest.fixture
def run_dir(tmp_path):
    return toy_run_folder(tmp_path / "run")


def test_estimate_counts_training_macs_of_the_whole_search_and_times_a_cheap_step():
    estimate = estimate_search_compute(_candidates(), PATCH, 1, 2, batch=2, iterations=10, budget=4)
    network = C2FNet(Architecture.coarse(u_shaped_topologies()[0], 0.125), 1, 2)
    one = estimate_cost(network, (1, 1, *PATCH)).macs
    assert 0.5 * one < estimate.macs_min <= estimate.macs_mean <= estimate.macs_max < 2 * one
    assert estimate.total_macs == estimate.macs_mean * 2 * 10 * 3 * 4
    assert estimate.step_seconds is not None and estimate.step_seconds > 0  # cheap: measured
    assert estimate.window_seconds is not None and estimate.window_seconds > 0
    assert estimate.precision == resolve_precision("auto", torch.device("cpu"))  # as training
    assert estimate.device_hours == estimate.step_seconds * 10 * 4 / 3600  # no validation
    line = estimate.describe(workers=2)
    assert "4 networks x 10 iterations x batch 2" in line and "2 worker(s)" in line


def test_an_expensive_step_is_not_measured_on_a_cpu():
    estimate = estimate_search_compute(
        _candidates(width=1.0), (96, 96, 96), 1, 3, batch=8, iterations=20000, budget=50
    )
    assert estimate.step_seconds is None and estimate.device_hours is None
    assert 100e9 < estimate.macs_mean < 200e9  # C2FNAS-Panc-sized networks: ~150 GMACs
    assert "PMACs" in estimate.describe()


def test_validations_are_costed_as_forward_passes_over_their_windows():
    estimate = estimate_search_compute(
        _candidates(), PATCH, 1, 2, batch=2, iterations=10, budget=4,
        validate_every=4, validation_windows=5,
    )  # fmt: skip
    assert estimate.validations == 3  # after iterations 4, 8 and the last, 10
    assert estimate.training_macs == estimate.macs_mean * 2 * 10 * 3 * 4
    assert estimate.validation_macs == estimate.macs_mean * 5 * 3 * 4
    assert estimate.total_macs == estimate.training_macs + estimate.validation_macs
    step, window = estimate.step_seconds, estimate.window_seconds
    assert estimate.device_hours == pytest.approx((step * 10 + window * 5 * 3) * 4 / 3600)
    line = estimate.describe()
    assert "3 validations x 5 sliding windows (forward only)" in line and "with validation" in line


def test_search_fold_windows_counts_the_windows_of_the_validation_cases(run_dir):
    """Case ``case_00i`` is ``(32 i, 48, 16)``: ``2 i - 1`` windows along x, 2 along y at
    patch (32, 32, 16) and stride 16."""
    for index, case_id in enumerate(FIVE_CASES, start=1):
        _, properties = case_paths(run_dir, case_id)
        properties.parent.mkdir(parents=True, exist_ok=True)
        properties.write_text(json.dumps({"shape": [32 * index, 48, 16]}))
    windows = search_fold_windows(run_dir, PATCH, 16)
    validation = json.loads((run_dir / "splits.json").read_text())[SEARCH_FOLD]["val"]
    assert validation and windows == sum(
        (2 * FIVE_CASES.index(case_id) + 1) * 2 for case_id in validation
    )


def test_a_step_that_does_not_fit_is_not_timed_and_the_search_goes_on(monkeypatch, caplog):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(estimate_module, "measure_step", out_of_memory)
    with caplog.at_level(logging.WARNING):
        estimate = estimate_search_compute(
            _candidates(), PATCH, 1, 2, batch=8, iterations=10, budget=4, measure=True
        )
    assert estimate.step_seconds is None and estimate.device_hours is None
    assert estimate.total_macs > 0 and "PMACs" in estimate.describe()
    assert "batch 8 does not fit" in caplog.text and "micro-batches" in caplog.text
