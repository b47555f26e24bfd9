import random

import pytest
import torch

from c2fnas.nn import C2FNet, Supernet
from c2fnas.nn.cells import Cell
from c2fnas.nn.ops import OP_FACTORIES, make_op
from c2fnas.space import OPS, Architecture, u_shaped_topologies

PANC_LEVELS = (0, 0, 1, 1, 2, 3, 2, 2, 1, 0, 0, 0)


def _check_backward(module, output):
    output.float().square().mean().backward()
    assert torch.isfinite(output).all()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), name


@pytest.mark.parametrize("op", OPS)
def test_every_op_keeps_shape_and_trains(op):
    module = make_op(op, 4)
    x = torch.randn(2, 4, 6, 6, 6)
    y = module(x)
    assert y.shape == x.shape
    _check_backward(module, y)


def test_parameter_names_stay_those_of_relu_conv_norm_with_the_relus_fused():
    # checkpoints written before the ReLUs moved into the norms must still load
    network = C2FNet(Architecture.coarse(list(PANC_LEVELS), 0.25), 1, 3)
    names = set(network.state_dict())
    for name in ("stem.0.weight", "stem.1.weight", "stem.3.weight", "stem.4.bias",
                 "head.0.weight", "head.4.weight", "head.5.bias", "head.7.weight",
                 "cells.0.paths.0.3d.1.weight", "cells.0.paths.0.3d.2.weight",
                 "cells.0.pre.0.1.weight", "cells.0.post.2.bias"):  # fmt: skip
        assert name in names, name
    for op in OPS:
        assert [name for name, _ in make_op(op, 2).named_parameters()][0].startswith("1.")


def test_op_kernels_are_what_the_paper_says():
    kernels = {
        op: [m.kernel_size for m in OP_FACTORIES[op](2).modules() if isinstance(m, torch.nn.Conv3d)]
        for op in OPS
    }
    assert kernels == {"3d": [(3, 3, 3)], "2d": [(3, 3, 1)], "p3d": [(3, 3, 1), (1, 1, 3)]}
    with pytest.raises(ValueError, match="unknown op"):
        make_op("4d", 2)


@pytest.mark.parametrize(
    ("kind", "input_channels", "level_changes", "input_sides", "output_side"),
    [
        ("same, one input", [8], [0], [8], 8),
        ("same, two inputs", [8, 8], [0, 0], [8, 8], 8),
        ("down, one input", [4], [1], [8], 4),
        ("down, two inputs", [4, 8], [1, 0], [8, 4], 4),
        ("up, one input", [16], [-1], [4], 8),
        ("up, two inputs (encoder skip)", [16, 8], [-1, 0], [4, 8], 8),
    ],
)
@pytest.mark.parametrize("op", OPS)
def test_every_kind_of_cell(kind, input_channels, level_changes, input_sides, output_side, op):
    cell = Cell(input_channels, level_changes, channels=8, op_choices=[op])
    inputs = [torch.randn(1, c, s, s, s) for c, s in zip(input_channels, input_sides, strict=True)]
    y = cell(inputs, op)
    assert y.shape == (1, 8, output_side, output_side, output_side), kind
    _check_backward(cell, y)


_SAMPLE = random.Random(0).sample(u_shaped_topologies(), 6)


@pytest.mark.parametrize("levels", [PANC_LEVELS, *_SAMPLE], ids=str)
def test_sampled_topologies_forward_and_backward(levels):
    ops = random.Random(hash(levels)).choices(OPS, k=12)
    network = C2FNet(Architecture(levels, tuple(ops), width=0.125), in_channels=2, num_classes=3)
    y = network(torch.randn(1, 2, 16, 16, 32))
    assert y.shape == (1, 3, 16, 16, 32)
    _check_backward(network, y)


def test_input_sides_must_be_divisible_by_16():
    network = C2FNet(Architecture.coarse(PANC_LEVELS, 0.125), 1, 2)
    with pytest.raises(ValueError, match="divisible by 16"):
        network(torch.zeros(1, 1, 16, 16, 24))


def test_supernet_path_equals_the_extracted_network():
    torch.manual_seed(0)
    supernet = Supernet(Architecture.coarse(PANC_LEVELS, 0.125), 1, 3)
    # randomise the norms' affine parameters so that copying them is really tested
    with torch.no_grad():
        for parameter in supernet.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    x = torch.randn(1, 1, 16, 16, 32)
    outputs = []
    for seed in range(3):
        ops = tuple(random.Random(seed).choices(OPS, k=12))
        network = supernet.extract(ops)
        assert network.architecture.ops == ops
        with torch.no_grad():
            expected = supernet(x, ops)
            torch.testing.assert_close(network(x), expected, rtol=0, atol=0)
        outputs.append(expected)
    assert not torch.allclose(outputs[0], outputs[1])
    fresh = C2FNet(Architecture(PANC_LEVELS, ops, 0.125), 1, 3)
    assert sum(p.numel() for p in fresh.parameters()) < sum(
        p.numel() for p in supernet.parameters()
    )


def test_supernet_trains_only_the_sampled_path():
    supernet = Supernet(Architecture.coarse(PANC_LEVELS, 0.125), 1, 2)
    ops = ("2d",) * 12
    supernet(torch.randn(1, 1, 16, 16, 32), ops).square().mean().backward()
    for name, parameter in supernet.named_parameters():
        on_path = ".paths." not in name or ".2d." in name
        assert (parameter.grad is not None) == on_path, name
