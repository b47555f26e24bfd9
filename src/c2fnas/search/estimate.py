"""The compute a coarse search will take, printed before it starts.

Training cost per candidate ~ MACs per sample x batch x iterations x 3 (the backward pass costs
about twice the forward). MACs differ between topologies, so they are counted (on the meta device,
free) for one random topology per cluster. Validation is not counted.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from c2fnas.nn.network import C2FNet
from c2fnas.nn.profile import estimate_cost, measure_time
from c2fnas.search.strategies import topology_clusters
from c2fnas.space import Architecture

CHEAP_STEP_MACS = 20e9
"""Measure a training step on the CPU only below this many MACs per step (seconds, not minutes)."""


@dataclass(frozen=True)
class ComputeEstimate:
    """Attributes:
    macs_min, macs_mean, macs_max: forward MACs per sample over the sampled topologies.
    total_macs: macs_mean x batch x iterations x 3 x budget.
    step_seconds: measured training step of a typical candidate on ``device``, if measured.
    """

    macs_min: int
    macs_mean: float
    macs_max: int
    total_macs: float
    budget: int
    iterations: int
    batch: int
    step_seconds: float | None = None
    device: str = ""

    @property
    def device_hours(self) -> float | None:
        """Hours of training on one such device for the whole search (no validation)."""
        if self.step_seconds is None:
            return None
        return self.step_seconds * self.iterations * self.budget / 3600

    def describe(self, workers: int = 1) -> str:
        """One line for the command line, before the search starts."""
        line = (
            f"compute estimate: {self.budget} networks x {self.iterations} iterations x "
            f"batch {self.batch} x {self.macs_mean / 1e9:.1f} GMACs per sample "
            f"({self.macs_min / 1e9:.1f}-{self.macs_max / 1e9:.1f}) x 3 (forward + backward) = "
            f"{self.total_macs / 1e15:.3g} PMACs of training"
        )
        hours = self.device_hours
        if hours is not None:
            line += (
                f"; a training step takes {self.step_seconds:.2f} s on {self.device}: "
                f"{hours:.3g} device-hours, {hours / workers:.3g} h with {workers} worker(s)"
            )
        return line


def estimate_search_compute(
    patch: tuple[int, int, int],
    in_channels: int,
    classes: int,
    batch: int,
    iterations: int,
    budget: int,
    width: float = 1.0,
    seed: int = 0,
    clusters: int = 8,
    measure: bool | None = None,
) -> ComputeEstimate:
    """Count MACs for one topology per cluster; measure a step when cheap (``measure=None``)."""
    cluster_of = topology_clusters(seed, clusters)
    rng = random.Random(seed)
    sample = [
        rng.choice(sorted(code for code, k in cluster_of.items() if k == cluster))
        for cluster in range(clusters)
    ]
    architectures = [Architecture.coarse(code, width) for code in sample]
    with torch.device("meta"):  # shapes only: no weights are allocated or initialised
        networks = [C2FNet(architecture, in_channels, classes) for architecture in architectures]
    macs = [estimate_cost(net, (1, in_channels, *patch)).macs for net in networks]
    mean = sum(macs) / len(macs)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if measure is None:
        measure = device.type == "cuda" or mean * batch < CHEAP_STEP_MACS
    step_seconds = None
    if measure:
        median = sorted(range(len(macs)), key=macs.__getitem__)[len(macs) // 2]
        typical = C2FNet(architectures[median], in_channels, classes)
        step_seconds = measure_time(
            typical, (batch, in_channels, *patch), device, repeats=1
        ).train_step_seconds
    return ComputeEstimate(
        macs_min=min(macs),
        macs_mean=mean,
        macs_max=max(macs),
        total_macs=mean * batch * iterations * 3 * budget,
        budget=budget,
        iterations=iterations,
        batch=batch,
        step_seconds=step_seconds,
        device=str(device),
    )
