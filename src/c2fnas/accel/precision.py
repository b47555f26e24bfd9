"""Numeric precision (fp32, bf16 autocast, or fp16 autocast + GradScaler) and memory layout."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)


@cache
def cpu_supports_bf16() -> bool:
    """True when the CPU runs bf16 natively (AVX512-BF16 or AMX), where autocast is a speed-up."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return ("avx512_bf16" in flags or "amx_bf16" in flags) and bool(
        torch.backends.mkldnn.is_available()
    )


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn ``auto`` into the fastest safe choice for ``device``; reject impossible choices.

    ``auto``: bf16 on GPUs that support it (fp16 otherwise) and on bf16-capable CPUs, else fp32.
    """
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if device.type == "cpu" and cpu_supports_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("precision fp16 needs a CUDA device; use bf16 or fp32 on this device")
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"unknown precision {precision!r}; choose auto, fp32, bf16 or fp16")
    return precision


def memory_format(device: torch.device) -> torch.memory_format:
    """The layout C2FNAS networks run fastest in: channels_last_3d on the CPU, else contiguous.

    On the CPU, oneDNN's kernels want channels_last_3d, and the networks' instance norm and
    1x1x1 convolutions keep it (``c2fnas.nn.ops``): C2FNAS-Panc's training step at 48^3 took
    0.54 s in bf16 against 0.88 s contiguous, and 1.29 s against 1.48 s in fp32
    (``benchmarks/throughput.py --ablate --patches 48``). On CUDA (an H200, bf16, batch 2, one
    ad-hoc run; ``--ablate --device cuda`` repeats it) channels_last made the step 1.9x slower
    at 96^3, so GPUs keep the default layout.
    """
    return torch.channels_last_3d if device.type == "cpu" else torch.contiguous_format


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """Autocast for bf16/fp16; a no-op for fp32."""
    if precision == "fp32":
        yield
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield
