"""``torch.compile`` for the training step on a GPU (prediction runs eagerly).

A training step of C2FNAS-Panc at 96^3 runs a few thousand small kernels: instance norms, ReLUs
and 1 x 1 x 1 convolutions that read and write whole activations, and launch overhead between
them. TorchInductor fuses the memory-bound ones, and CUDA graphs (mode ``reduce-overhead``)
replay the step's kernels without a launch from Python each. The network itself stays in its
readable form: compiling is a wrapper, like ``accelerate``. The training loop compiles its step
where ``wanted`` says so (``training.compile``) and falls back to eager steps if compiling fails.
"""

from __future__ import annotations

import logging
from typing import Literal, cast

import torch
from torch import nn

log = logging.getLogger(__name__)

MIN_ITERATIONS = 2000
"""``auto`` compiles schedules of at least this many iterations: compiling C2FNAS-Panc's step took
about 30 s on 2 CPU cores (not yet timed on a GPU), which a step a few milliseconds faster pays
back only over thousands of steps."""


def compiled(network: nn.Module, device: torch.device) -> nn.Module:
    """``network`` compiled for ``device``: with CUDA graphs on a GPU, Inductor's default mode on
    a CPU. Shapes must stay fixed (training patches and sliding windows are): ``dynamic=False``.
    Call ``step_begins()`` before each training step, so CUDA graphs reuse their buffers."""
    mode = "reduce-overhead" if device.type == "cuda" else None
    return cast(nn.Module, torch.compile(network, mode=mode, dynamic=False))


def step_begins() -> None:
    """Mark a new training step for CUDA graphs (their outputs of the last step may be reused)."""
    torch.compiler.cudagraph_mark_step_begin()


def wanted(
    setting: bool | Literal["auto"], device: torch.device, supernet: bool, iterations: int
) -> bool:
    """Whether a training step on ``device`` is compiled under ``training.compile``.

    ``auto``: on a GPU, for ``MIN_ITERATIONS`` or more. On a CPU compiling made C2FNAS-Panc's
    step no faster or slower (``benchmarks/throughput.py --patches 48 --precisions P
    [--compile]``, batch 2): in fp32 on 2 AMD EPYC cores 2.34 s compiled against 2.30 s eagerly,
    after a first step of 33 s; in bf16 on 2 cores of a Xeon with AMX 0.95 s against 0.69 s,
    after 57 s, although the step compiles into one graph (the C++ norm kernels and the
    upsampling are PyTorch operators, ``c2fnas.accel.layers``): Inductor's CPU code writes the
    boolean masks it keeps for the ReLUs' backward 7.5x slower than eager PyTorch computes them
    (``benchmarks/compiled_pointwise.py``).
    A supernet is never compiled: its path is an argument that changes every step, and each
    new path would compile again.
    """
    if supernet:
        if setting is True:
            log.info("training.compile: a supernet trains eagerly (its path changes every step)")
        return False
    if setting == "auto":
        return device.type == "cuda" and iterations >= MIN_ITERATIONS
    return bool(setting)
