"""``accelerate``: the faster layers compute what the paper-form network computes, and weights
move between the two forms (and from checkpoints written before the split) unchanged."""

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from c2fnas.accel.layers import (
    FastInstanceNorm,
    FastUpsample,
    PointwiseConv,
    SmallInputSafeConv,
    upsample_trilinear2x,
    upsample_trilinear2x_backward,
)
from c2fnas.accel.swap import accelerate
from c2fnas.files.model_folder import read_model
from c2fnas.nn import C2FNet, Supernet
from c2fnas.nn.cells import Upsample

CL = torch.channels_last_3d
OLD = Path(__file__).parent / "data" / "checkpoint_2f79ebf"


def _forward_backward(network, x, *ops):
    network.zero_grad()
    y = network(x, *ops)
    (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
    return y, {name: p.grad.clone() for name, p in network.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", ["network", "supernet"])
def test_accelerated_network_equals_the_paper_form_in_float64(kind, mixed_architecture):
    # float64: no C++ kernel (float32/bf16 only), so this checks the channels-last norms, the
    # pointwise convolutions and every ReLU moved into a norm, to rounding
    torch.manual_seed(0)
    build = C2FNet if kind == "network" else Supernet
    paper = build(mixed_architecture, 2, 3).double()
    with torch.no_grad():
        for parameter in paper.parameters():
            if parameter.dim() == 1:  # norm scales and shifts away from 1 and 0
                parameter.add_(0.3 * torch.randn_like(parameter))
    fast = accelerate(copy.deepcopy(paper)).to(memory_format=CL)
    ops = () if kind == "network" else (mixed_architecture.ops,)
    x = torch.randn(2, 2, 32, 32, 16, dtype=torch.float64)
    y_paper, grads_paper = _forward_backward(paper, x, *ops)
    y_fast, grads_fast = _forward_backward(fast, x.to(memory_format=CL), *ops)
    torch.testing.assert_close(y_fast, y_paper, rtol=0, atol=1e-10)
    assert grads_fast.keys() == grads_paper.keys()
    for name, grad in grads_paper.items():
        torch.testing.assert_close(grads_fast[name], grad, rtol=1e-8, atol=1e-10, msg=name)


def test_accelerate_swaps_layers_keeps_parameters_and_is_idempotent(mixed_architecture):
    network = Supernet(mixed_architecture, 1, 3)
    parameters = dict(network.named_parameters())
    accelerate(network)
    assert dict(network.named_parameters()).keys() == parameters.keys()
    assert all(p is parameters[name] for name, p in network.named_parameters())
    layers = list(network.modules())
    assert not any(type(layer) is nn.InstanceNorm3d for layer in layers)
    assert any(isinstance(layer, PointwiseConv) for layer in layers)
    assert any(isinstance(layer, SmallInputSafeConv) for layer in layers)
    assert not any(type(layer) is nn.Conv3d for layer in layers)
    assert not any(type(layer) is Upsample for layer in layers)
    assert any(isinstance(layer, FastUpsample) for layer in layers)
    # stem 1 + head 2 + one per cell input (its ops' ReLU), and nowhere else
    inputs = sum(len(cell.pre) for cell in network.cells)
    assert sum(isinstance(m, FastInstanceNorm) and m.relu for m in layers) == 3 + inputs
    # every op begins without its own ReLU now, and no ReLU directly follows a fused norm
    for cell in network.cells:
        for path in cell.paths:
            assert all(type(op[0]) is nn.Identity for op in path.values())
    before = repr(network)
    accelerate(network)
    assert repr(network) == before


def _upstream(y):
    # small integers: the same gradient in bf16 and float32
    return torch.arange(y.numel()).remainder(5).sub(2).float().view_as(y)


def _conv_weight_gradient(conv, x):
    conv.weight.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    (y.float() * _upstream(y)).sum().backward()
    return y, conv.weight.grad.clone()


@pytest.mark.parametrize("kernel", [(3, 3, 3), (3, 3, 1)])
def test_small_input_conv_takes_float32_gradients_under_cpu_bf16(kernel):
    # oneDNN's bf16 weight gradient over a 2-voxel side was sometimes non-finite (AVX-512 EPYC);
    # in float32 it matches a float32 convolution to rounding, which bf16 never does
    torch.manual_seed(0)
    plain = nn.Conv3d(16, 16, kernel, padding=tuple(k // 2 for k in kernel), bias=False)
    safe = SmallInputSafeConv.sharing(copy.deepcopy(plain))
    reference = copy.deepcopy(plain)
    x = torch.randn(2, 16, 2, 2, 4)
    y, gradient = _conv_weight_gradient(safe, x)
    assert y.dtype == torch.bfloat16
    expected = reference(x)
    (expected * _upstream(expected)).sum().backward()
    torch.testing.assert_close(gradient, reference.weight.grad, rtol=1e-5, atol=1e-6)
    _, bf16_gradient = _conv_weight_gradient(plain, x)
    assert not torch.allclose(bf16_gradient, reference.weight.grad, rtol=1e-5, atol=1e-6)
    # larger inputs keep the bf16 path: the same computation as the plain convolution
    x = torch.randn(2, 16, 4, 4, 4)
    torch.testing.assert_close(_conv_weight_gradient(safe, x), _conv_weight_gradient(plain, x))


def test_checkpoint_written_before_the_paper_form_loads_with_the_same_outputs():
    # written by commit 2f79ebf, whose network had the ReLUs fused into its modules
    architecture, weights, _ = read_model(OLD / "model")
    saved = load_file(str(OLD / "logits.safetensors"))
    network = C2FNet(architecture, 1, 2).double().eval()
    network.load_state_dict(weights)  # strict: the same names and shapes
    with torch.no_grad():
        paper = network(saved["input"].double())
        fast = accelerate(network)(saved["input"].double().to(memory_format=CL))
    torch.testing.assert_close(paper.float(), saved["logits"], rtol=0, atol=1e-5)
    torch.testing.assert_close(fast.float(), saved["logits"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, CL])
def test_upsample_operators_declare_their_shapes_layouts_and_gradients(dtype, layout):
    """PyTorch's ``opcheck`` of the upsampling operator and its backward: schema, the fake
    versions' shapes and strides against the real results, and the registered autograd."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, 6).to(dtype=dtype, memory_format=layout).requires_grad_()
    torch.library.opcheck(upsample_trilinear2x, (x,))
    grad = torch.randn(2, 3, 8, 10, 12).to(dtype=dtype, memory_format=layout)
    torch.library.opcheck(upsample_trilinear2x_backward, (grad,))


def _traced_for_inductor(module: nn.Module, x: torch.Tensor) -> set[str]:
    """The operators of the forward and backward graphs that ``torch.compile``'s Inductor would
    generate code for: AOT autograd with Inductor's decompositions, without compiling them."""
    from torch._functorch.aot_autograd import aot_module
    from torch._inductor.decomposition import select_decomp_table

    graphs = []

    def keep(graph, _):
        graphs.append(graph)
        return graph

    traced = aot_module(module, keep, keep, decompositions=select_decomp_table())
    traced(x).sum().backward()
    assert len(graphs) == 2
    return {
        str(node.target) for graph in graphs for node in graph.graph.nodes
        if node.op == "call_function"
    }  # fmt: skip


def test_compiled_upsampling_keeps_pytorchs_kernels_instead_of_a_scatter():
    # Inductor turns the plain upsampling's backward into a scatter-add (index_put) whose CPU
    # code made compiled steps slow; the operator reaches it whole, forward and backward
    x = torch.randn(1, 2, 3, 4, 5).to(memory_format=CL).requires_grad_()
    plain = _traced_for_inductor(Upsample(), x)
    assert any("index_put" in target for target in plain)
    fast = _traced_for_inductor(FastUpsample(), x)
    assert {"c2fnas.upsample_trilinear2x.default",
            "c2fnas.upsample_trilinear2x_backward.default"} <= fast  # fmt: skip
    assert not any("index" in target or "upsample_trilinear3d" in target for target in fast)
