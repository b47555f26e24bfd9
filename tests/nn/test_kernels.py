"""The C++ CPU kernels (fused instance norm + ReLU) against a float64 reference, and the fallback
to PyTorch's ops where they cannot be built."""

import shutil

import pytest
import torch

from c2fnas.accel import kernels
from c2fnas.accel.layers import FastInstanceNorm as InstanceNorm
from c2fnas.accel.layers import fused_instance_norm, fused_instance_norm_backward
from tests.training.test_compile import aot_eager

CL = torch.channels_last_3d
FUSED = "c2fnas_instance_norm"  # in the name of the fused norm's backward node


@pytest.fixture
def built():
    """Skips where the kernels cannot be built (the first call builds them, ~30 s)."""
    if kernels.cpu_kernels() is None:
        pytest.skip("the C++ CPU kernels could not be built here")


def _reference(x, weight, bias, relu, eps=1e-5):
    """Instance norm (+ ReLU) written out in float64 (PyTorch's own instance norm backward is
    not a reference for channels_last_3d inputs: in torch 2.13 its input gradient for a
    (1, 512, 3, 3, 3) channels_last_3d float64 input is off by more than 2)."""
    x = x.double()
    mean = x.mean((2, 3, 4), keepdim=True)
    var = x.var((2, 3, 4), keepdim=True, correction=0)
    per_channel = (1, -1, 1, 1, 1)
    y = (x - mean) / torch.sqrt(var + eps) * weight.view(per_channel) + bias.view(per_channel)
    return y.relu() if relu else y


def test_kernels_build_where_there_is_a_compiler():
    if shutil.which("c++") is None or shutil.which("ninja") is None:
        pytest.skip("no C++ compiler or ninja")
    assert kernels.cpu_kernels() is not None


@pytest.mark.usefixtures("built")
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize(
    "shape",
    [(2, 24, 12, 10, 8), (3, 5, 3, 4, 5), (1, 512, 3, 3, 3), (1, 16, 20, 20, 20)],
    ids=["batch", "odd-sizes", "deep-level", "many-blocks"],
)
def test_fused_norm_matches_a_float64_reference(shape, relu):
    torch.manual_seed(0)
    norm = InstanceNorm(shape[1], relu=relu)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    # a large mean: the variance must not cancel away (sums of squares minus squared sums would)
    x = (torch.randn(shape) * 3 + 50).to(memory_format=CL)
    upstream = torch.randn(shape)
    x_ours = x.clone().requires_grad_()
    y = norm(x_ours)
    (y * upstream).sum().backward()

    weight = norm.weight.detach().double().requires_grad_()
    bias = norm.bias.detach().double().requires_grad_()
    x_ref = x.double().contiguous().requires_grad_()
    y_ref = _reference(x_ref, weight, bias, relu)
    (y_ref * upstream.double()).sum().backward()

    assert y.is_contiguous(memory_format=CL) and y.dtype == torch.float32
    assert x_ours.grad.is_contiguous(memory_format=CL)
    assert FUSED in y.grad_fn.name()
    torch.testing.assert_close(y.double(), y_ref, rtol=0, atol=2e-5)
    torch.testing.assert_close(x_ours.grad.double(), x_ref.grad, rtol=0, atol=2e-5)
    torch.testing.assert_close(norm.weight.grad.double(), weight.grad, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(norm.bias.grad.double(), bias.grad, rtol=1e-4, atol=1e-3)
    if relu:
        assert (y >= 0).all() and (y == 0).any()


@pytest.mark.usefixtures("built")
def test_fused_norm_in_bf16_rounds_like_pytorch():
    torch.manual_seed(0)
    norm = InstanceNorm(32, relu=True)
    x = torch.randn(2, 32, 12, 12, 12).bfloat16().to(memory_format=CL).requires_grad_()
    upstream = torch.randn(x.shape).bfloat16()
    y = norm(x)
    (y.float() * upstream.float()).sum().backward()
    y_ref = _reference(x.detach(), norm.weight.detach(), norm.bias.detach(), relu=True)
    assert y.dtype == torch.bfloat16 and x.grad.dtype == torch.bfloat16
    # computed in float, rounded once: within half a bfloat16 step (2^-8 relative)
    torch.testing.assert_close(y.double(), y_ref, rtol=2**-8, atol=1e-6)
    x_ref = x.detach().double().requires_grad_()
    y_ref = _reference(x_ref, norm.weight.detach(), norm.bias.detach(), relu=True)
    (y_ref * upstream.double()).sum().backward()
    assert ((x.grad.double() - x_ref.grad).norm() / x_ref.grad.norm()).item() < 0.01


@pytest.mark.usefixtures("built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_norm_operators_declare_their_shapes_layouts_and_gradients(dtype):
    """PyTorch's own checks of a custom operator (``opcheck``): its schema, the shapes, dtypes
    and strides its fake version claims against the real results, and its registered autograd."""
    torch.manual_seed(0)
    norm = InstanceNorm(8, relu=True)
    x = torch.randn(2, 8, 5, 6, 7).to(dtype=dtype, memory_format=CL).requires_grad_()
    arguments = (x, norm.weight, norm.bias, norm.eps, True)
    torch.library.opcheck(fused_instance_norm, arguments)
    with torch.no_grad():
        _, means, invstds = fused_instance_norm(*arguments)
    grad = torch.randn(x.shape).to(dtype=dtype, memory_format=CL)
    backward = (grad, x.detach(), norm.weight.detach(), norm.bias.detach(), means, invstds, True)
    torch.library.opcheck(fused_instance_norm_backward, backward)


@pytest.mark.usefixtures("built")
def test_a_compiled_network_runs_the_fused_norms_in_one_graph_with_eager_gradients():
    """``torch.compile`` traces through the fused norms (no graph break at each one): a small
    conv -> norm + ReLU -> conv -> norm stack compiles into a single graph, and its output and
    gradients equal the eager ones."""
    torch.manual_seed(0)
    layers = [torch.nn.Conv3d(4, 8, 3, padding=1), InstanceNorm(8, relu=True)]
    layers += [torch.nn.Conv3d(8, 8, 1), InstanceNorm(8)]
    network = torch.nn.Sequential(*layers).to(memory_format=CL)
    x = torch.randn(2, 4, 6, 6, 6).to(memory_format=CL)
    eager = network(x)
    eager.square().sum().backward()
    expected = [p.grad.clone() for p in network.parameters()]
    network.zero_grad()
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = aot_eager(network, torch.device("cpu"))
    y = compiled(x)
    y.square().sum().backward()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert not torch._dynamo.utils.counters["graph_break"]
    torch.testing.assert_close(y, eager)
    for parameter, gradient in zip(network.parameters(), expected, strict=True):
        torch.testing.assert_close(parameter.grad, gradient)


def test_switched_off_kernels_fall_back_to_pytorch(monkeypatch):
    monkeypatch.setenv(kernels.SWITCH, "0")
    assert kernels.cpu_kernels.__wrapped__() is None


def test_a_failed_build_warns_and_falls_back(monkeypatch):
    import torch.utils.cpp_extension

    def failing_load(*args, **kwargs):
        raise RuntimeError("Error building extension")

    monkeypatch.setenv(kernels.SWITCH, "1")
    monkeypatch.setattr(torch.utils.cpp_extension, "load", failing_load)
    path = kernels.os.environ["PATH"]
    with pytest.warns(RuntimeWarning, match="could not build its C\\+\\+ CPU kernels"):
        assert kernels.cpu_kernels.__wrapped__() is None
    assert kernels.os.environ["PATH"] == path


@pytest.mark.parametrize("relu", [False, True])
def test_without_kernels_the_norm_runs_pytorch_ops_with_the_same_result(monkeypatch, relu):
    torch.manual_seed(0)
    norm = InstanceNorm(6, relu=relu)
    x = torch.randn(2, 6, 5, 4, 6).to(memory_format=CL)
    expected = norm.forward_unfused(x)
    monkeypatch.setattr("c2fnas.accel.layers.cpu_kernels", lambda: None)
    y = norm(x)
    assert FUSED not in y.grad_fn.name()
    assert y.is_contiguous(memory_format=CL)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    torch.testing.assert_close(y, _reference(x, norm.weight, norm.bias, relu).float())
