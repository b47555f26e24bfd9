"""Cell operations and the small conv blocks of the network (SPEC section 1).

Every op and every pre-/post-processing step is ReLU -> conv -> instance norm, as in the paper.
Tensors are ``(batch, channels, D1, D2, D3)``; the in-plane kernels (``2d``, the first half of
``p3d``) span the first two spatial axes and the 1x1x3 kernel of ``p3d`` spans the third, as the
usual (H, W, slices) layout of MONAI volumes.

These modules are plain PyTorch. ``c2fnas.accel.accelerate`` swaps in faster equivalents (fused
norm + ReLU kernels, channels-last norms, 1x1x1 convolutions as matrix products) at the entry
points that train or predict.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from c2fnas.space import OPS, Op


def conv(
    in_channels: int, out_channels: int, kernel: tuple[int, int, int], stride: int = 1
) -> nn.Conv3d:
    """A bias-free 3D convolution padded to keep the size (divided by ``stride``)."""
    padding = tuple(k // 2 for k in kernel)
    return nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=False)


def norm(channels: int) -> nn.InstanceNorm3d:
    """Instance norm with a learned scale and shift per channel."""
    return nn.InstanceNorm3d(channels, affine=True)


def relu_conv_norm(
    in_channels: int,
    out_channels: int,
    kernel: tuple[int, int, int] = (1, 1, 1),
    stride: int = 1,
    *,
    inplace: bool = False,
) -> nn.Sequential:
    """ReLU -> conv -> InstanceNorm, the pattern of every op and pre-/post-processing step.

    ``inplace`` only where the input feeds nothing else (node outputs feed several cells).
    """
    return nn.Sequential(
        nn.ReLU(inplace=inplace),
        conv(in_channels, out_channels, kernel, stride),
        norm(out_channels),
    )


# An op's input is its own preprocessing step's output, read by nothing else (in a supernet, by
# the one path that runs), and instance norm's backward reads its input, not its output: the
# op's ReLU may work in place.
def op_3d(channels: int) -> nn.Sequential:
    return relu_conv_norm(channels, channels, (3, 3, 3), inplace=True)


def op_2d(channels: int) -> nn.Sequential:
    return relu_conv_norm(channels, channels, (3, 3, 1), inplace=True)


def op_p3d(channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ReLU(inplace=True),
        conv(channels, channels, (3, 3, 1)),
        conv(channels, channels, (1, 1, 3)),
        norm(channels),
    )


OP_FACTORIES: dict[Op, Callable[[int], nn.Module]] = {"3d": op_3d, "2d": op_2d, "p3d": op_p3d}
assert set(OP_FACTORIES) == set(OPS)


def make_op(name: Op, channels: int) -> nn.Module:
    """Build the op called ``name`` (from the registry) at ``channels`` in and out."""
    try:
        return OP_FACTORIES[name](channels)
    except KeyError:
        raise ValueError(f"unknown op {name!r}; choose from {list(OP_FACTORIES)}") from None
