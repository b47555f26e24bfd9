"""What a benchmark ran on: the CPU model and the instruction sets that decide its fast path.

The CPU kind changes between machines (an AVX-512/AMX Xeon one time, an AVX2-only EPYC the
next), and bf16 is fast only on the first: every recorded number names the CPU it came from.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
"""The /proc/cpuinfo flags that change which kernels and precisions are fast."""


def cpu_model() -> str:
    """``model name`` of /proc/cpuinfo (Linux), else what ``platform`` knows."""
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """Which of ``FLAGS`` the CPU has."""
    for line in _cpuinfo():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in FLAGS if flag in present]
    return []


def describe() -> dict[str, Any]:
    """The machine block every benchmark's JSON carries."""
    machine: dict[str, Any] = {
        "cpu": cpu_model(),
        "flags": cpu_flags(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name()
    return machine


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []
