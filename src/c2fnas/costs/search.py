"""The compute a coarse search will take, printed before it starts.

Training cost per candidate ~ MACs per sample x batch x iterations x 3 (the backward pass costs
about twice the forward). MACs differ between topologies, so they are counted (on the meta device,
free) for the topologies that stand for the search (the search picks one per cluster,
``search.stages.typical_candidates``). Validation costs a forward pass per sliding window: the
windows of the search fold's cached cases (``search_fold_windows``), at every validation of the
training loop (``validates_after``). Times come from a training step and a batch of windows of the
median topology, measured as training runs them (``costs.measure``: the accelerated network in
the device's layout and precision).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from c2fnas.accel.precision import resolve_precision
from c2fnas.costs.measure import CHEAP_STEP_MACS, measure_step
from c2fnas.costs.profile import estimate_cost
from c2fnas.data import splits
from c2fnas.data.cache import read_properties
from c2fnas.data.pipeline import cached_case_ids
from c2fnas.data.splits import SEARCH_FOLD
from c2fnas.inference.sliding_window import window_count
from c2fnas.nn.network import C2FNet
from c2fnas.space import Architecture
from c2fnas.training.loop import validates_after

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ComputeEstimate:
    """Attributes:
    macs_min, macs_mean, macs_max: forward MACs per sample over the sampled topologies.
    total_macs: training_macs + validation_macs.
    training_macs: macs_mean x batch x iterations x 3 x budget.
    validation_macs: macs_mean x validation_windows x validations x budget (forward only).
    validations: validations per candidate; validation_windows: windows of one validation.
    step_seconds: measured training step of a typical candidate on ``device``, if measured.
    window_seconds: measured sliding window (forward, no gradients) of that candidate.
    precision: the precision both were measured in (what ``auto`` resolves to on ``device``).
    """

    macs_min: int
    macs_mean: float
    macs_max: int
    total_macs: float
    training_macs: float
    validation_macs: float
    budget: int
    iterations: int
    batch: int
    validations: int = 0
    validation_windows: int = 0
    step_seconds: float | None = None
    window_seconds: float | None = None
    device: str = ""
    precision: str = ""

    @property
    def device_hours(self) -> float | None:
        """Hours of training and validation on one such device for the whole search."""
        if self.step_seconds is None or self.window_seconds is None:
            return None
        windows = self.validation_windows * self.validations
        candidate = self.step_seconds * self.iterations + self.window_seconds * windows
        return candidate * self.budget / 3600

    def describe(self, workers: int = 1) -> str:
        """One line for the command line, before the search starts."""
        line = (
            f"compute estimate: {self.budget} networks x {self.iterations} iterations x "
            f"batch {self.batch} x {self.macs_mean / 1e9:.1f} GMACs per sample "
            f"({self.macs_min / 1e9:.1f}-{self.macs_max / 1e9:.1f}) x 3 (forward + backward) = "
            f"{self.training_macs / 1e15:.3g} PMACs of training, + {self.validations} "
            f"validations x {self.validation_windows} sliding windows (forward only) = "
            f"{self.validation_macs / 1e15:.3g} PMACs of validation; "
            f"{self.total_macs / 1e15:.3g} PMACs in all"
        )
        hours = self.device_hours
        if hours is not None:
            line += (
                f"; measured on {self.device} in {self.precision}: a training step "
                f"{self.step_seconds:.3g} s, a validation window {self.window_seconds:.3g} s: "
                f"{hours:.3g} device-hours with validation, {hours / workers:.3g} h with "
                f"{workers} worker(s)"
            )
        return line


def estimate_search_compute(
    architectures: Sequence[Architecture],
    patch: tuple[int, int, int],
    in_channels: int,
    classes: int,
    batch: int,
    iterations: int,
    budget: int,
    measure: bool | None = None,
    *,
    validate_every: int | None = None,
    validation_windows: int = 0,
    precision: str = "auto",
    window_batch: int = 4,
) -> ComputeEstimate:
    """Count MACs for each of ``architectures``; measure a step of the median one when cheap
    (``measure=None``: always on a GPU, on a CPU below ``CHEAP_STEP_MACS``) or when ``measure``
    is true.

    Args:
        architectures: the candidates that stand for the search (at least one).
        validate_every: the training loop's ``training.validate_every`` (None: it validates
            only after the last iteration).
        validation_windows: sliding windows of one validation pass (``search_fold_windows``).
        precision, window_batch: ``training.precision`` and ``training.window_batch``.

    A step that does not fit in the GPU's memory is not timed (a warning says so).
    """
    with torch.device("meta"):  # shapes only: no weights are allocated or initialised
        networks = [C2FNet(architecture, in_channels, classes) for architecture in architectures]
    macs = [estimate_cost(net, (1, in_channels, *patch)).macs for net in networks]
    mean = sum(macs) / len(macs)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if measure is None:
        measure = device.type == "cuda" or mean * batch < CHEAP_STEP_MACS
    resolved = resolve_precision(precision, device)
    step_seconds = window_seconds = None
    if measure:
        median = sorted(range(len(macs)), key=macs.__getitem__)[len(macs) // 2]
        try:
            measurement = measure_step(
                architectures[median], in_channels, classes, patch, batch, window_batch,
                resolved, device, repeats=1,
            )  # fmt: skip
            step_seconds, window_seconds = measurement.step_seconds, measurement.window_seconds
        except torch.OutOfMemoryError:
            logger.warning(
                "a training step of batch %d does not fit on %s, so it is not timed; the "
                "candidates will split their batches into micro-batches", batch, device,
            )  # fmt: skip
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the workers' memory, not this measurement's cache
    every = validate_every or iterations
    validations = sum(validates_after(done, iterations, every) for done in range(1, iterations + 1))
    training_macs = mean * batch * iterations * 3 * budget
    validation_macs = mean * validation_windows * validations * budget
    return ComputeEstimate(
        macs_min=min(macs),
        macs_mean=mean,
        macs_max=max(macs),
        total_macs=training_macs + validation_macs,
        training_macs=training_macs,
        validation_macs=validation_macs,
        budget=budget,
        iterations=iterations,
        batch=batch,
        validations=validations,
        validation_windows=validation_windows,
        step_seconds=step_seconds,
        window_seconds=window_seconds,
        device=str(device),
        precision=resolved,
    )


def search_fold_windows(
    run_dir: Path, patch: Sequence[int], stride: int | Sequence[int], fold: int = SEARCH_FOLD
) -> int:
    """Sliding windows of one validation of a search candidate: over the cached cases of the
    validation fold (their shapes from ``preprocessed/<case>.json``, no voxels read).

    Raises:
        CacheError: a case's properties are missing or damaged (names the file).
    """
    folds = splits.load_or_create(run_dir, cached_case_ids(run_dir))
    return sum(
        window_count(read_properties(run_dir, case_id)["shape"], patch, stride)
        for case_id in folds[fold].val
    )
