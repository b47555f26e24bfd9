"""A planned batch fits the memory figure given, by the project's activation estimate."""

import pytest

from c2fnas.costs import memory
from c2fnas.costs.memory import NetworkMemory, fit_batch
from c2fnas.space import Architecture

PANC_LEVELS = (0, 0, 1, 1, 2, 3, 2, 2, 1, 0, 0, 0)


@pytest.mark.parametrize("gib", [0.25, 0.5, 1, 2, 4, 16, 80, 141])
def test_planned_batch_fits_the_memory_given(gib):
    needed = memory.network_memory(Architecture.coarse(PANC_LEVELS, 0.5), 1, 3, (96, 96, 96))
    batch = fit_batch(needed, int(gib * 2**30))
    if batch:
        assert batch % 2 == 0 and 2 <= batch <= memory.MAX_BATCH
        assert needed.training_bytes(batch) <= memory.USABLE_MEMORY * gib * 2**30
        if batch < memory.MAX_BATCH:  # the next even batch would not have fitted
            assert needed.training_bytes(batch + 2) > memory.USABLE_MEMORY * gib * 2**30
    else:
        assert needed.training_bytes(2) > memory.USABLE_MEMORY * gib * 2**30


def test_batch_follows_the_activation_estimate():
    needed = NetworkMemory(activation_bytes_per_sample=10**9, params=0)
    one_sample = memory.ACTIVATION_OVERHEAD * 10**9 / memory.USABLE_MEMORY
    assert fit_batch(needed, int(4 * one_sample) + 1) == 4
    assert fit_batch(needed, int(5 * one_sample) + 1) == 4  # even batches: 2 per volume
    assert fit_batch(needed, int(1.9 * one_sample)) == 0


def test_activation_estimate_grows_with_width_and_patch():
    arch = Architecture.coarse(PANC_LEVELS, 0.25)
    small = memory.network_memory(arch, 1, 3, (32, 32, 32))
    assert memory.network_memory(arch, 1, 3, (64, 32, 32)).activation_bytes_per_sample == (
        2 * small.activation_bytes_per_sample
    )
    wider = memory.network_memory(arch.with_width(0.5), 1, 3, (32, 32, 32))
    assert wider.activation_bytes_per_sample > 1.9 * small.activation_bytes_per_sample
    assert wider.params > 3.5 * small.params
