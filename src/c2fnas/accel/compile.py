"""``torch.compile`` for the training and prediction steps on a GPU.

A training step of C2FNAS-Panc at 96^3 runs a few thousand small kernels: instance norms, ReLUs
and 1 x 1 x 1 convolutions that read and write whole activations, and launch overhead between
them. TorchInductor fuses the memory-bound ones, and CUDA graphs (mode ``reduce-overhead``)
replay the step's kernels without a launch from Python each. The network itself stays in its
readable form: compiling is a wrapper, like ``accelerate``.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn


def compiled(network: nn.Module, device: torch.device) -> nn.Module:
    """``network`` compiled for ``device``: with CUDA graphs on a GPU, Inductor's default mode on
    a CPU. Shapes must stay fixed (training patches and sliding windows are): ``dynamic=False``.
    Call ``step_begins()`` before each training step, so CUDA graphs reuse their buffers."""
    mode = "reduce-overhead" if device.type == "cuda" else None
    return cast(nn.Module, torch.compile(network, mode=mode, dynamic=False))


def step_begins() -> None:
    """Mark a new training step for CUDA graphs (their outputs of the last step may be reused)."""
    torch.compiler.cudagraph_mark_step_begin()
