"""One training step's memory by the project's own activation estimate, and the batch that
fits a device.

``training_bytes`` is the model of one training step's memory; ``fit_batch`` is a pure function
of it, so a test can give any memory figure.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from c2fnas.costs.profile import estimate_cost
from c2fnas.nn import C2FNet
from c2fnas.space import Architecture

ACTIVATION_OVERHEAD = 1.5
"""Peak over ``estimate_cost``'s activation bytes. On the CPU (fp32, C2FNAS-Panc at width
0.25-0.5, batch 2-4, 48^3-96^3) the measured peak was 1.18-1.39 x; the rest is headroom for
the allocator's fragmentation and the backward pass's transient gradients."""
PARAMETER_COPIES = 4  # weights, gradients, SGD momentum, autocast's half-precision copy
USABLE_MEMORY = 0.8
"""Of the device's memory, what one training step may take: the data loader, the validation
volume and (on CUDA) the context and kernels' workspaces need the rest."""
MIN_BATCH = 2  # the loader draws 2 patches per volume; instance norm works at any batch
MAX_BATCH = 8  # the paper's batch


@dataclass(frozen=True)
class NetworkMemory:
    """What one sample and the fixed state of a network take in a training step, in bytes."""

    activation_bytes_per_sample: int
    params: int

    def training_bytes(self, batch: int) -> int:
        """Peak bytes of a training step with ``batch`` samples."""
        return int(
            ACTIVATION_OVERHEAD * self.activation_bytes_per_sample * batch
            + PARAMETER_COPIES * 4 * self.params
        )


def network_memory(
    architecture: Architecture, in_channels: int, classes: int, patch: Sequence[int]
) -> NetworkMemory:
    """Activation bytes of one sample (float32, the conservative case: under autocast the
    norms still write float32) and the parameter count, traced on the meta device (free)."""
    with torch.device("meta"):
        network = C2FNet(architecture, in_channels, classes)
    cost = estimate_cost(network, (1, in_channels, *patch), bytes_per_element=4)
    return NetworkMemory(cost.activation_bytes, cost.params)


def fit_batch(memory: NetworkMemory, memory_bytes: int, max_batch: int = MAX_BATCH) -> int:
    """The largest even batch (at most ``max_batch``) whose training step fits in
    ``USABLE_MEMORY`` of ``memory_bytes``; 0 when not even ``MIN_BATCH`` fits."""
    usable = USABLE_MEMORY * memory_bytes
    batch = max_batch - max_batch % MIN_BATCH
    while batch >= MIN_BATCH:
        if memory.training_bytes(batch) <= usable:
            return batch
        batch -= MIN_BATCH
    return 0


def device_memory(device: torch.device) -> int:
    """Bytes a run may use on ``device``: a GPU's total memory, or the CPU's available memory."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
