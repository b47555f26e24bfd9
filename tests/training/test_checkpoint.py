import random

import numpy as np
import torch

from c2fnas.training.checkpoint import (
    load_optimizer_state,
    optimizer_state,
    rng_state,
    set_rng_state,
)


def test_rng_states_round_trip_without_pickle():
    torch.manual_seed(3)
    np.random.seed(4)
    random.seed(5)
    tensors, info = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    set_rng_state(tensors, info)
    again = (torch.rand(3), np.random.rand(3), random.random())
    torch.testing.assert_close(again[0], expected[0])
    np.testing.assert_array_equal(again[1], expected[1])
    assert again[2] == expected[2]


def test_optimizer_momentum_round_trips():
    weight = torch.nn.Parameter(torch.ones(4))
    optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.9, weight_decay=1e-3)
    weight.grad = torch.arange(4.0)
    optimizer.step()
    tensors, groups = optimizer_state(optimizer)
    assert list(tensors) == ["state.0.momentum_buffer"]
    fresh = torch.optim.SGD([torch.nn.Parameter(torch.ones(4))], lr=0.5, momentum=0.0)
    load_optimizer_state(fresh, tensors, groups)
    assert fresh.param_groups[0]["momentum"] == 0.9 and fresh.param_groups[0]["lr"] == 0.1
    torch.testing.assert_close(
        fresh.state[fresh.param_groups[0]["params"][0]]["momentum_buffer"],
        optimizer.state[weight]["momentum_buffer"],
    )
