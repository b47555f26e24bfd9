"""One measured training step and one measured batch of sliding windows, as training and
prediction run them: the accelerated network, the device's layout and precision.

``c2fnas profile``, ``c2fnas plan`` and ``search coarse --estimate`` all call ``measure_step``,
so the step they report is the same one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from monai.losses import DiceCELoss

from c2fnas.accel.precision import autocast, memory_format, resolve_precision
from c2fnas.accel.swap import accelerate
from c2fnas.inference.estimate import seconds_per_window
from c2fnas.nn import C2FNet
from c2fnas.space import Architecture
from c2fnas.training.config import load_config

CHEAP_STEP_MACS = 20e9
"""Measure a training step on the CPU only below this many MACs per step (seconds, not minutes)."""

WARMUP_STEPS = 2
"""Untimed steps before the timed ones. The first pays for allocations and kernel selection and
on a CPU the second is still slow: C2FNAS-Panc's batch of two 48 x 64 x 48 patches in bf16 on a
2-core Intel Xeon with AMX took 0.53, 0.21, then 0.11-0.15 s a step (0.19 s in spikes), and its
training ran at 0.119 s; timing the second step had planned 0.197 s (``c2fnas plan``, 3 h)."""


@dataclass(frozen=True)
class Measurement:
    step_seconds: float
    """Median of the timed training steps (forward, Dice + cross-entropy, backward, SGD)."""
    window_seconds: float
    """One sliding window, in batches of ``window_batch``, without gradients."""
    peak_bytes: int | None
    """CUDA: the most memory the step allocated; None on the CPU."""


def training_step(
    architecture: Architecture,
    in_channels: int,
    classes: int,
    patch: Sequence[int],
    batch: int,
    precision: str,
    device: torch.device,
) -> tuple[torch.nn.Module, Callable[[], float]]:
    """The accelerated network and a function that takes one SGD step of it on fixed random
    data (Dice + cross-entropy, as training) and returns its seconds."""
    return network_step(
        C2FNet(architecture, in_channels, classes), in_channels, classes, patch, batch,
        precision, device,
    )  # fmt: skip


def network_step(
    network: torch.nn.Module,
    in_channels: int,
    classes: int,
    patch: Sequence[int],
    batch: int,
    precision: str,
    device: torch.device,
) -> tuple[torch.nn.Module, Callable[[], float]]:
    """``training_step`` for any network (e.g. a benchmark's peer), ``accelerate``d first."""
    generator = torch.Generator().manual_seed(0)
    network = accelerate(network).to(device, memory_format=memory_format(device))
    optimizer = torch.optim.SGD(network.parameters(), lr=1e-3, momentum=0.9)
    loss_of = DiceCELoss(to_onehot_y=True, softmax=True)
    image = torch.randn(batch, in_channels, *patch, generator=generator)
    image = image.to(device, memory_format=memory_format(device))
    label = torch.randint(0, classes, (batch, 1, *patch), generator=generator).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> float:
        start = time.perf_counter()
        with autocast(precision, device):
            logits = network(image)
        loss = loss_of(logits.float(), label)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    return network, step


def measure_step(
    architecture: Architecture,
    in_channels: int,
    classes: int,
    patch: Sequence[int],
    batch: int,
    window_batch: int,
    precision: str,
    device: torch.device,
    repeats: int = 3,
) -> Measurement:
    """The median of ``repeats`` timed training steps of ``architecture`` on random data, after
    ``WARMUP_STEPS`` untimed ones.

    Raises:
        torch.OutOfMemoryError: the step does not fit on ``device`` (CUDA).
    """
    network, step = training_step(
        architecture, in_channels, classes, patch, batch, precision, device
    )
    network.train()
    for _ in range(WARMUP_STEPS):
        step()
    times = sorted(step() for _ in range(repeats))
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    network.eval()
    window = seconds_per_window(network, in_channels, patch, window_batch, precision, device)
    return Measurement(times[len(times) // 2], window, peak)


def measured_speed(
    architecture: Architecture, patch: tuple[int, int, int], in_channels: int, classes: int,
    batch: int,
) -> dict[str, object]:  # fmt: skip
    """``measure_step`` on the device and in the precision a run would use here, with the
    paper configuration's window batch (what ``c2fnas profile`` shows)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_precision("auto", device)
    window_batch = load_config("paper").training.window_batch
    measured = measure_step(
        architecture, in_channels, classes, patch, batch, window_batch, precision, device
    )
    return {
        "device": str(device),
        "precision": precision,
        "step_seconds": measured.step_seconds,
        "window_seconds": measured.window_seconds,
    }
