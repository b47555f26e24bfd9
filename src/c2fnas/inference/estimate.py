"""What a prediction will cost, told before it starts: windows per case and an estimated time.

Window counts come from the image headers alone (no voxels read): the grid at the plan's
spacing, before the crop to the non-zero box, so they are upper bounds. The time per window is
measured on the machine by running the network on one batch of windows after a warm-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from c2fnas.accel.precision import autocast, memory_format
from c2fnas.data.geometry import CaseGeometry
from c2fnas.data.io import read_grid
from c2fnas.data.preprocess import Plan
from c2fnas.inference.sliding_window import Stride, window_count


@dataclass(frozen=True)
class PredictionEstimate:
    """Windows per case (upper bounds) and the measured seconds per window and pass."""

    windows: dict[str, int]
    """Image file name -> windows of one pass."""
    passes: int
    """Forward passes per window: models x mirrorings."""
    seconds_per_window: float

    @property
    def seconds(self) -> float:
        return sum(self.windows.values()) * self.passes * self.seconds_per_window

    def describe(self) -> str:
        counts = sorted(self.windows.values())
        spread = f"{counts[0]}" if counts[0] == counts[-1] else f"{counts[0]}-{counts[-1]}"
        return (
            f"{len(counts)} case(s), {spread} window(s) per case x {self.passes} pass(es), "
            f"{1000 * self.seconds_per_window:.0f} ms per window measured: "
            f"about {self.seconds / 60:.1f} min for the network"
        )


def preprocessed_shape(image_path: Path, plan: Plan) -> tuple[int, int, int]:
    """The image's grid at the plan's spacing, before cropping, from its header alone."""
    shape, affine = read_grid(image_path)
    return CaseGeometry.uncropped(shape, affine, plan.spacing).resampled_shape


@torch.no_grad()
def seconds_per_window(
    network: Callable[[torch.Tensor], torch.Tensor],
    in_channels: int,
    patch: Sequence[int],
    window_batch: int,
    precision: str,
    device: torch.device,
) -> float:
    """Wall time of one window in a batch of ``window_batch``, after one warm-up batch."""
    windows = torch.randn(window_batch, in_channels, *patch, device=device)
    windows = windows.to(memory_format=memory_format(device))
    elapsed = 0.0
    for _ in range(2):  # the first call pays for allocations and kernel selection
        start = time.perf_counter()
        with autocast(precision, device):
            network(windows)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
    return elapsed / window_batch


def estimate_prediction(
    files: Sequence[Path],
    plan: Plan,
    patch: Sequence[int],
    stride: Stride,
    passes: int,
    window_seconds: float,
) -> PredictionEstimate:
    """Windows per case from the headers of ``files``, and the time at ``window_seconds``.

    A file whose header cannot be read counts 0 windows (its prediction will report why).
    """
    windows = {}
    for path in files:
        try:
            windows[path.name] = window_count(preprocessed_shape(path, plan), patch, stride)
        except ValueError:
            windows[path.name] = 0
    return PredictionEstimate(windows, passes, window_seconds)
