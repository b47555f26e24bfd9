"""``accelerate``: the one call that swaps faster layers into a network built by ``c2fnas.nn``."""

from __future__ import annotations

from torch import nn

from c2fnas.accel.layers import FastInstanceNorm, FastUpsample, PointwiseConv, SmallInputSafeConv
from c2fnas.nn.cells import Cell, Upsample


def accelerate(network: nn.Module) -> nn.Module:
    """Swap faster equivalents into ``network`` in place and return it.

    - every affine ``nn.InstanceNorm3d`` becomes a ``FastInstanceNorm`` (channels-last and fused
      kernels on the CPU, group-norm form for float32 on GPUs);
    - every 1x1x1 convolution becomes a ``PointwiseConv`` (a matrix product when channels-last),
      every other one a ``SmallInputSafeConv`` (float32 where bf16 CPU gradients fail);
    - every ``Upsample`` becomes a ``FastUpsample`` (PyTorch's kernels in compiled CPU steps);
    - a ReLU that reads only a norm's output moves into that norm (one fused pass): a ReLU right
      after a norm in an ``nn.Sequential``, and in each ``Cell`` the ReLU every op of an input
      begins with, which reads only that input's preprocessing step.

    The parameters stay the same objects, so an optimizer built before still holds them; build
    the optimizer after, or not, as convenient. Applying it twice changes nothing more.
    """
    _replace_layers(network)
    for module in network.modules():
        if isinstance(module, nn.Sequential):
            _fuse_sequential_relus(module)
        if isinstance(module, Cell):
            _fuse_op_relus(module)
    return network


def _replace_layers(network: nn.Module) -> None:
    for parent in list(network.modules()):
        for name, child in parent.named_children():
            replacement: nn.Module | None = None
            if type(child) is nn.InstanceNorm3d and child.affine:
                replacement = FastInstanceNorm.sharing(child)
            elif type(child) is nn.Conv3d and _is_pointwise(child):
                replacement = PointwiseConv.sharing(child)
            elif type(child) is nn.Conv3d:
                replacement = SmallInputSafeConv.sharing(child)
            elif type(child) is Upsample:
                replacement = FastUpsample()
            if replacement is not None:
                setattr(parent, name, replacement)


def _is_pointwise(layer: nn.Conv3d) -> bool:
    return (
        layer.kernel_size == (1, 1, 1)
        and layer.stride == (1, 1, 1)
        and layer.padding == (0, 0, 0)
        and layer.dilation == (1, 1, 1)
        and layer.groups == 1
    )


def _fuse_sequential_relus(sequence: nn.Sequential) -> None:
    layers = list(sequence)
    for index in range(1, len(layers)):
        before, layer = layers[index - 1], layers[index]
        if isinstance(before, FastInstanceNorm) and type(layer) is nn.ReLU:
            before.relu = True
            sequence[index] = nn.Identity()


def _last_layer(module: nn.Module) -> nn.Module:
    children = list(module.children())
    return _last_layer(children[-1]) if children else module


def _fuse_op_relus(cell: Cell) -> None:
    for preprocess, path in zip(cell.pre, cell.paths, strict=True):
        last = _last_layer(preprocess)
        ops = list(path.values())
        if not isinstance(last, FastInstanceNorm):
            continue
        if not all(isinstance(op, nn.Sequential) and type(op[0]) is nn.ReLU for op in ops):
            continue
        last.relu = True
        for op in ops:
            op[0] = nn.Identity()
