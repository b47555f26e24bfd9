"""Faster stand-ins for the network's layers: same parameters, same results up to rounding.

``FastInstanceNorm`` keeps a channels_last_3d input in that layout (PyTorch's instance norm makes
it contiguous), runs the fused C++ norm (+ ReLU) kernels of ``c2fnas.accel.kernels`` on the CPU,
and takes the group-norm form on GPUs in float32. ``PointwiseConv`` runs a 1x1x1 convolution of a
channels_last_3d input as the matrix product it is; ``SmallInputSafeConv`` keeps the other
convolutions' bf16 CPU gradients finite on tiny inputs. ``FastUpsample`` keeps PyTorch's own
trilinear kernels on the CPU when the step is compiled. ``c2fnas.accel.accelerate`` puts them in.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from c2fnas.accel.kernels import cpu_kernels
from c2fnas.nn.cells import upsample2x


def _is_channels_last(x: torch.Tensor) -> bool:
    """True for a 5D tensor laid out channels_last_3d and not also plain contiguous (one
    channel or one voxel makes both layouts the same)."""
    return (
        x.dim() == 5
        and x.is_contiguous(memory_format=torch.channels_last_3d)
        and not x.is_contiguous()
    )


class PointwiseConv(nn.Conv3d):
    """A 1x1x1 convolution (same parameters as ``nn.Conv3d``) that, on a channels_last_3d input,
    runs as the matrix product it is over the contiguous channel axis. Forward + backward on the
    2-core development CPU, against oneDNN's convolution: 0.6-0.9x its time at the network's
    deep levels (6^3 and 3^3 voxels), 0.9-1.4x at 12^3-24^3; whole C2FNAS-Panc training steps
    with either were within 3% of each other."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)

    @classmethod
    def sharing(cls, layer: nn.Conv3d) -> PointwiseConv:
        """A ``PointwiseConv`` holding ``layer``'s own parameters (not copies)."""
        replacement = cls(layer.in_channels, layer.out_channels, bias=layer.bias is not None)
        replacement.weight = layer.weight
        replacement.bias = layer.bias
        return replacement

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _is_channels_last(x):
            return super().forward(x)
        weight = self.weight.view(self.out_channels, self.in_channels)
        y = nn.functional.linear(x.permute(0, 2, 3, 4, 1), weight, self.bias)
        return y.permute(0, 4, 1, 2, 3)


SMALL_SIDE = 2
"""A convolution whose input has a spatial side of at most this many voxels runs in float32 under
CPU bf16 autocast (``SmallInputSafeConv``)."""


class SmallInputSafeConv(nn.Conv3d):
    """A convolution (same parameters as ``nn.Conv3d``) that computes in float32 where oneDNN's
    bf16 weight gradient is unreliable: on the CPU, under bf16 autocast, for an input with a
    spatial side of ``SMALL_SIDE`` voxels or fewer (a 32^3 patch at level 3 is 2^3).

    Seen on a 2-core AMD EPYC with avx512_bf16 (PyTorch 2.13.0): the weight gradient of a 3x3x3 or
    3x3x1 convolution over a 2-voxel side came out non-finite in some calls and not in others (up
    to 38 of 40 calls for 3x3x1 on 2^3, contiguous; a few per 40 elsewhere), so a coarse-search
    candidate visiting level 3 "diverged" at a random early iteration. Such inputs hold a few
    hundred voxels: float32 costs nothing measurable, and the output is cast back to bf16."""

    @classmethod
    def sharing(cls, layer: nn.Conv3d) -> SmallInputSafeConv:
        """A ``SmallInputSafeConv`` holding ``layer``'s own parameters (not copies)."""
        replacement = cls(
            layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
            padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
            bias=layer.bias is not None, padding_mode=layer.padding_mode,
        )  # fmt: skip
        replacement.weight = layer.weight
        replacement.bias = layer.bias
        return replacement

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _small_input_under_cpu_bf16(x):
            return super().forward(x)
        with torch.autocast("cpu", enabled=False):
            y = super().forward(x.float())
        return y.to(torch.bfloat16)


def _small_input_under_cpu_bf16(x: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
        and min(x.shape[2:]) <= SMALL_SIDE
    )


class _ChannelsLastInstanceNorm(torch.autograd.Function):
    """Instance norm of a channels_last_3d batch, one sample at a time through batch norm.

    For one sample, batch norm in training mode normalises each channel over its voxels with the
    biased variance: exactly instance norm. Batch norm has channels-last kernels; instance norm
    has none (it makes its input contiguous), so this keeps the layout and skips two copies.
    Each sample's result is written straight into its slice of the batch's output.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
    ) -> torch.Tensor:
        out = torch.empty_like(x)
        stats_dtype = torch.promote_types(x.dtype, torch.float32)
        means = x.new_empty(x.shape[:2], dtype=stats_dtype)
        invstds = torch.empty_like(means)
        for index, sample in enumerate(x.split(1)):
            torch.ops.aten.native_batch_norm.out(
                sample, weight, bias, None, None, True, 0.0, eps,
                out=out[index : index + 1], save_mean=means[index], save_invstd=invstds[index],
            )  # fmt: skip
        ctx.eps = eps
        ctx.save_for_backward(x, weight, means, invstds)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        x, weight, means, invstds = ctx.saved_tensors
        grad = grad.contiguous(memory_format=torch.channels_last_3d)
        grad_x = torch.empty_like(x)
        grad_weights = torch.empty((len(x), *weight.shape), dtype=weight.dtype, device=x.device)
        grad_biases = torch.empty_like(grad_weights)
        for index in range(len(x)):
            sample = slice(index, index + 1)
            torch.ops.aten.native_batch_norm_backward.out(
                grad[sample], x[sample], weight, None, None, means[index], invstds[index],
                True, ctx.eps, [True, True, True],
                out0=grad_x[sample], out1=grad_weights[index], out2=grad_biases[index],
            )  # fmt: skip
        return grad_x, grad_weights.sum(0), grad_biases.sum(0), None


# Instance norm, and the ReLU after it if asked, of a channels_last_3d CPU batch in float32 or
# bfloat16, by the C++ kernels of ``c2fnas.accel.kernels``: two passes over the data forward and
# two backward. PyTorch's ops took 2.2-3.0x as long for norm + ReLU at C2FNAS-Panc's sizes
# (``benchmarks/norm_kernels.py``). They are registered as PyTorch operators, with the shapes
# and layouts of their results, so that ``torch.compile`` traces a step through them in one
# graph instead of breaking it at every norm.


@torch.library.custom_op("c2fnas::instance_norm", mutates_args=())
def fused_instance_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, relu: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The normalised ``x`` (channels_last_3d, ``x``'s dtype), and each sample's and channel's
    float32 mean and inverse standard deviation."""
    y, means, invstds = _kernels().forward(x, weight, bias, eps, relu)
    return y, means, invstds


@fused_instance_norm.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, relu: bool) -> Any:
    means = x.new_empty(x.shape[:2], dtype=torch.float32)
    return torch.empty_like(x, memory_format=torch.channels_last_3d), means, torch.empty_like(means)


@torch.library.custom_op("c2fnas::instance_norm_backward", mutates_args=())
def fused_instance_norm_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    means: torch.Tensor,
    invstds: torch.Tensor,
    relu: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of ``x``, ``weight`` and ``bias`` from that of the norm's output."""
    grad_x, grad_weight, grad_bias = _kernels().backward(
        grad, x, weight, bias, means, invstds, relu
    )
    return grad_x, grad_weight, grad_bias


@fused_instance_norm_backward.register_fake
def _(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, *_: Any
) -> Any:
    grad_x = torch.empty_like(x, memory_format=torch.channels_last_3d)
    return grad_x, torch.empty_like(weight), torch.empty_like(bias)


def _save_for_backward(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
    x, weight, bias, _, relu = inputs
    _, means, invstds = output
    ctx.relu = relu
    ctx.save_for_backward(x, weight, bias, means, invstds)


def _backward(ctx: Any, grad: torch.Tensor, *statistics_grads: Any) -> tuple[Any, ...]:
    x, weight, bias, means, invstds = ctx.saved_tensors
    grad = grad.to(dtype=x.dtype, memory_format=torch.channels_last_3d)
    grads = fused_instance_norm_backward(grad, x, weight, bias, means, invstds, ctx.relu)
    return (*grads, None, None)


fused_instance_norm.register_autograd(_backward, setup_context=_save_for_backward)


@torch.compiler.assume_constant_result  # torch.compile: a constant, not code to trace
def _kernels_built() -> bool:
    return cpu_kernels() is not None


def _kernels() -> ModuleType:
    kernels = cpu_kernels()
    assert kernels is not None
    return kernels


class FastInstanceNorm(nn.InstanceNorm3d):
    """``nn.InstanceNorm3d(channels, affine=True)`` (same parameters and names), followed by a
    ReLU if ``relu``, that keeps a channels_last_3d input in that layout.

    On the CPU it runs the fused C++ kernels where they could be built, else PyTorch's batch norm
    one sample at a time (PyTorch's instance norm would make the input contiguous).
    """

    def __init__(self, channels: int, relu: bool = False) -> None:
        super().__init__(channels, affine=True)
        self.relu = relu

    @classmethod
    def sharing(cls, layer: nn.InstanceNorm3d) -> FastInstanceNorm:
        """A ``FastInstanceNorm`` holding ``layer``'s own parameters (not copies)."""
        replacement = cls(layer.num_features)
        replacement.eps = layer.eps
        replacement.weight = layer.weight
        replacement.bias = layer.bias
        return replacement

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, relu={self.relu}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _is_channels_last(x) and _fusable(x, self.weight) and _kernels_built():
            return fused_instance_norm(x, self.weight, self.bias, self.eps, self.relu)[0]
        return self.forward_unfused(x)

    def forward_unfused(self, x: torch.Tensor) -> torch.Tensor:
        """The same in PyTorch's ops, where the C++ kernels do not apply or are not built."""
        if _is_channels_last(x):
            y = _ChannelsLastInstanceNorm.apply(x, self.weight, self.bias, self.eps)
        elif x.is_cuda and x.dtype == torch.float32:
            y = instance_norm_as_group_norm(x, self.weight, self.bias, self.eps)
        else:
            y = super().forward(x)
        # the backward passes of both norms read their input, not their output
        return torch.relu_(y) if self.relu else y


def instance_norm_as_group_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """Instance norm computed as group norm with one channel per group (the same statistics and
    affine transform), for float32 on GPUs. PyTorch's CUDA group norm launches fewer kernels than
    its instance norm (which repeats the weights and runs batch norm): C2FNAS-Panc's fp32 training
    step at 96^3, batch 2, on an H200 took 47 ms instead of 54 ms (both in one process, in
    turns), and its peak memory went from 5.1 to 4.7 GiB. Not for bf16: autocast runs group norm
    in float32, which keeps float32 copies of the activations; the bf16 step's peak memory went
    from 2.9 to 5.4 GiB."""
    return nn.functional.group_norm(x, x.shape[1], weight, bias, eps)


def _fusable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and weight.dtype == torch.float32
    )


# Trilinear x2 upsampling on the CPU as an operator of its own, so that ``torch.compile`` calls
# PyTorch's upsampling kernels instead of tracing into them. Inductor otherwise decomposes the
# upsampling into gathers and its backward into a scatter-add (``index_put``) that its CPU code
# runs slowly: in a compiled bf16 training step of C2FNAS-Panc at 48^3, batch 2, on 2 Xeon cores
# the scatter-adds took 0.47 s of the step's 1.31 s of CPU time (``benchmarks/throughput.py
# --profile c2fnas-panc --patches 48 --compile``); as operators, the compiled step went from
# 1.25 s to 0.95 s and its first step (the compiling) from 106 s to 57 s.


@torch.library.custom_op("c2fnas::upsample_trilinear2x", mutates_args=())
def upsample_trilinear2x(x: torch.Tensor) -> torch.Tensor:
    """``x`` upsampled x2 by trilinear interpolation (``align_corners=False``), in its layout."""
    return upsample2x(x)


@upsample_trilinear2x.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return upsample2x(x)  # PyTorch's meta version gives the shape and layout


@torch.library.custom_op("c2fnas::upsample_trilinear2x_backward", mutates_args=())
def upsample_trilinear2x_backward(grad: torch.Tensor) -> torch.Tensor:
    """The gradient of ``upsample_trilinear2x``'s input from that of its output (which has
    twice the input's size along each spatial axis), in ``grad``'s layout."""
    return _upsample_backward(grad)


@upsample_trilinear2x_backward.register_fake
def _(grad: torch.Tensor) -> torch.Tensor:
    # PyTorch's meta version of the backward takes no symbolic sizes, so this builds the result
    size, layout = _upsample_input_size(grad), _layout(grad)
    return torch.empty(size, dtype=grad.dtype, device=grad.device, memory_format=layout)


def _upsample_backward(grad: torch.Tensor) -> torch.Tensor:
    grad_x = torch.ops.aten.upsample_trilinear3d_backward(
        grad, list(grad.shape[2:]), _upsample_input_size(grad), False, 2.0, 2.0, 2.0
    )
    return grad_x.contiguous(memory_format=_layout(grad))


def _upsample_input_size(grad: torch.Tensor) -> list[int]:
    return [*grad.shape[:2], *(size // 2 for size in grad.shape[2:])]


def _layout(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last_3d if _is_channels_last(x) else torch.contiguous_format


upsample_trilinear2x.register_autograd(lambda _, grad: upsample_trilinear2x_backward(grad))


class FastUpsample(nn.Module):
    """Trilinear x2, as ``c2fnas.nn.cells.Upsample``; on the CPU as the operator above, so that
    a compiled step runs PyTorch's upsampling kernels. GPUs keep Inductor's fused version."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            return upsample_trilinear2x(x)
        return upsample2x(x)
