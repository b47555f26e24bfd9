"""``plan_run``: a complete run configuration from the dataset, the device and a time budget.

The plan starts from the ``paper`` preset and replaces what the data, the device and the budget
decide: the patch, the batch, the width, the sliding-window strides and the schedules, and sets
the training recipe lever by lever from measurements at equal time (``recipe``). Every choice
carries its reason, for the table ``c2fnas plan`` prints and the comments of ``plan.yaml``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from c2fnas.accel import compile as compiling
from c2fnas.accel.precision import resolve_precision
from c2fnas.accel.process import default_threads
from c2fnas.costs import memory, schedule, solve
from c2fnas.costs.measure import CHEAP_STEP_MACS, Measurement, measure_step
from c2fnas.costs.profile import estimate_cost
from c2fnas.data.fingerprint import summarize
from c2fnas.data.msd import Dataset, read_dataset
from c2fnas.data.parallel import Progress
from c2fnas.data.pipeline import fingerprint_dataset
from c2fnas.data.splits import NUM_FOLDS
from c2fnas.files.atomic import write_json_atomic, write_text_atomic
from c2fnas.files.run_folder import RunFolder
from c2fnas.inference.sliding_window import window_count
from c2fnas.nn import C2FNet
from c2fnas.planning import geometry, recipe
from c2fnas.space import C2FNAS_PANC, Architecture
from c2fnas.training.config import RunConfig, SearchMode, load_config

log = logging.getLogger(__name__)

REFERENCE_LEVELS = C2FNAS_PANC.levels
"""C2FNAS-Panc's topology (paper Fig. 5): the typical U-shaped candidate a search's costs are
measured on."""
WIDTHS = (0.25, 0.5, 0.75, 1.0)
"""Widths the planner chooses from (the paper's scaling grid up to its searched width, 1.0)."""
SECONDS_PER_MEGAVOXEL = 1.0
"""Checking and preprocessing, per million source voxels and channel (Hippocampus on one core:
0.37 s; resampling oblique or larger volumes costs more)."""
MIRROR_PASSES = 8  # test-time mirroring: every flip of the three axes
PREDICTION_SECONDS_PER_CASE = 0.3
"""What predicting one case costs beyond its windows and its preprocessing: reading it, restoring
the probabilities to its geometry, writing, and (out of fold) scoring the post-processing choice.
Measured 0.03 to 0.27 s a case beyond the network's windows on Hippocampus, whose 40 held-out
test cases of ``benchmarks/folds_rule.py`` (Intel Xeon with AMX, 2 cores, 15 ms a window) took
6 s to predict with 4 models, 7.7 s with one model mirrored (8 passes) and 31 s with 4 models
mirrored (32 passes: the most, about 8 ms a pass beyond its window); that hour's 4-fold run
predicted its 128 out-of-fold cases in 4.2 s. On the AVX-512 AMD EPYC, 80 mirrored
out-of-fold cases took 29.0 s where the plan, at 1.3 s a case, reserved 130 s
(``hippocampus_run_panc_60m.json``). The 1.3 s came from one run on the AVX2 EPYC (40 mirrored
cases, 65.3 s) whose time likely held a first compile of the C++ kernels (about 30 s); 0.3 s
keeps a margin above every other measurement. Too high, it turns mirroring off where it is
cheap (``solve.TTA_SHARE``): the 4-fold hour above planned 233 s for prediction, spent 11 s, and
did not mirror, which on the held-out cases cost it 0.002 Dice."""


class PlanError(ValueError):
    """The dataset cannot be planned (no usable case, a patch that fits no memory, a budget too
    small); the message says what is wrong."""


@dataclass(frozen=True)
class Choice:
    """One row of the plan's table: a setting, its value and why."""

    setting: str
    value: str
    reason: str


@dataclass(frozen=True)
class RunPlan:
    """Attributes:
    config: the complete configuration (``plan.yaml``).
    spacing: target spacing in mm (X, Y, Z), also ``config.data.spacing``.
    stride: sliding-window step per axis (X, Y, Z), also ``config.training.stride``.
    budget: the time budget in seconds, or None for the paper's schedule.
    seconds: estimated seconds per part: data, coarse, fine, training, prediction.
    folds: the folds the run trains, also ``config.training.folds``.
    choices: every setting with its reason, in the order of the table.
    """

    config: RunConfig
    spacing: geometry.Spacing
    stride: geometry.Shape
    budget: float | None
    seconds: dict[str, float]
    folds: tuple[int, ...]
    choices: tuple[Choice, ...]

    def to_yaml(self) -> str:
        """``plan.yaml``: the configuration, with the reasons and the budget as comments."""
        lines = ["# Planned by `c2fnas plan`; edit freely (`--config` reads it, strictly).", "#"]
        lines += [f"# {c.setting}: {c.value}  -- {c.reason}" for c in self.choices]
        lines += ["#", "# Estimated time (seconds):"]
        lines += [f"#   {part}: {seconds:.0f}" for part, seconds in self.seconds.items()]
        return "\n".join(lines) + "\n" + self.config.to_yaml()

    def split(self) -> list[tuple[str, float, float]]:
        """How the time divides: (part, estimated seconds, share of the budget, or of the
        estimated total without one)."""
        whole = self.budget or sum(self.seconds.values()) or 1.0
        return [(part, seconds, seconds / whole) for part, seconds in self.seconds.items()]

    def write(self, run_dir: str | Path) -> Path:
        path = RunFolder(run_dir).plan_config
        write_text_atomic(path, self.to_yaml())
        return path


@dataclass(frozen=True)
class _Network:
    """What the planner knows of one width: memory, MACs per sample, batch, measured costs."""

    width: float
    memory: memory.NetworkMemory
    macs: int
    batch: int
    measurement: Measurement | None = None
    extrapolated_from: float | None = None


def read_fingerprint(
    dataset: Dataset, run_dir: Path, progress: Progress | None = None
) -> dict[str, Any]:
    """``fingerprint.json`` of ``run_dir``, brought up to date (as ``c2fnas preprocess`` does:
    unchanged cases are reused) and written back.

    Raises:
        PlanError: no training case passed the checks.
    """
    entries, failures = fingerprint_dataset(dataset, run_dir, 1, progress)
    if not entries:
        raise PlanError(
            f"none of the {len(dataset.training)} training case(s) passed the checks: "
            + "; ".join(failures)
        )
    for failure in failures:
        log.warning("left out of the plan: %s", failure)
    fingerprint = summarize(entries, len(dataset.modalities))
    fingerprint["cases"] = entries
    write_json_atomic(RunFolder(run_dir).fingerprint, fingerprint)
    return fingerprint


def plan_run(
    dataset_dir: str | Path,
    run_dir: str | Path,
    budget: float | None = None,
    architecture: Architecture | None = None,
    device: torch.device | None = None,
    gpus: int = 0,
    folds: Sequence[int] | None = None,
    memory_bytes: int | None = None,
    progress: Progress | None = None,
    search: SearchMode | None = None,
) -> RunPlan:
    """Plan a run of ``c2fnas run`` for the dataset in ``dataset_dir``.

    Args:
        run_dir: receives ``fingerprint.json`` (``plan.yaml`` is written by ``RunPlan.write``).
        budget: wall-clock seconds for every stage; None for the paper's schedule.
        architecture: a network to train without a search (its width is the widest planned).
        device: where the run will train (default: CUDA when available).
        gpus: search workers run in parallel, one per GPU (0 or 1: one worker).
        folds: the folds the run trains (``c2fnas run --folds``); default all five, or under a
            budget the most that each train ``solve.MIN_FOLD_ITERATIONS`` iterations (one where
            two would train fewer).
        memory_bytes: the memory of one device (default: measured, see ``device_memory``).
        search: what to search whatever the budget buys (``c2fnas plan --search``); default:
            without ``architecture``, what ``solve.choose_search`` finds can pay under a
            budget, the paper's full search without one.

    Raises:
        DatasetError: ``dataset.json`` is unusable.
        PlanError: nothing fits the memory, or the budget is too small (says what it needs).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dataset = read_dataset(dataset_dir)
    fingerprint = read_fingerprint(dataset, run_dir, progress)
    spacing, spacing_reason = geometry.target_spacing(fingerprint["spacing"]["median"])
    shape = geometry.median_resampled_shape(fingerprint["cases"], spacing)
    memory_bytes = memory_bytes or memory.device_memory(device)
    base = architecture or Architecture.coarse(REFERENCE_LEVELS)
    widths = [w for w in WIDTHS if w <= base.width] or [base.width]
    in_channels, classes = len(dataset.modalities), len(dataset.labels)
    patch, patch_reason = _fit_patch(base.with_width(min(widths)), in_channels, classes, shape,
                                     spacing, memory_bytes)  # fmt: skip
    context = _Context(
        dataset, fingerprint["cases"], base, patch, geometry.plan_stride(patch), shape,
        device, resolve_precision("auto", device), memory_bytes,
        tuple(range(NUM_FOLDS)) if folds is None else tuple(folds),
    )  # fmt: skip
    fitting = [n for n in map(context.network, widths) if n.batch >= memory.MIN_BATCH]
    narrowest = context.measured(fitting[0])
    workers = max(1, gpus)
    if architecture is not None and search not in (None, "none"):
        raise PlanError(f"--search {search} with an architecture to train: nothing is searched")
    candidates = [_Candidate(context, narrowest)]
    candidates += [_Candidate(context, _extrapolate(narrowest, other)) for other in fitting[1:]]
    mode: SearchMode = "none" if architecture is not None else search or "coarse"
    search_reason = None
    if budget is None:  # the widest network that fits the memory, and the paper's schedule
        chosen = candidates[-1].measured() if len(candidates) > 1 else candidates[0]
        tta = device.type == "cuda"
        count = len(context.folds)
        planned = schedule.paper_schedule(chosen.costs(count, tta), mode, count, workers)
    else:
        try:
            solved = solve.solve_budget(
                budget, candidates, workers, None if folds is None else len(context.folds),
                search, network_given=architecture is not None,
            )  # fmt: skip
        except schedule.BudgetError as error:
            raise PlanError(str(error)) from None
        mode, search_reason, chosen = solved.mode, solved.why, solved.network
        planned, tta = solved.schedule, solved.mirrored
        context = replace(context, folds=tuple(range(solved.folds))) if folds is None else context
    choices = [
        Choice("spacing", _values(spacing, "mm"), spacing_reason),
        Choice("patch", _values(patch), patch_reason),
        Choice("stride", _values(context.stride), _stride_reason(context.stride)),
        _folds_choice(context.folds, folds is not None, budget),
        *_network_choices(chosen.network, narrowest, context),
        *_schedule_choices(planned, budget, architecture, workers, tta, mode, search_reason),
        *(Choice(lever.setting, lever.shown, lever.reason) for lever in recipe.LEVERS),
    ]
    config = recipe.apply(_configure(chosen.network, context, planned, tta, mode))
    config = config.with_fields("data", spacing=list(spacing))
    return RunPlan(
        config, spacing, context.stride, budget, planned.seconds, context.folds, tuple(choices)
    )


@dataclass(frozen=True)
class _Candidate:
    """A network of the plan as ``solve.solve_budget`` sees it: its run's costs for any
    number of folds."""

    context: _Context
    network: _Network

    def costs(self, folds: int, mirrored: bool) -> schedule.Costs:
        return replace(self.context, folds=tuple(range(folds))).costs(self.network, mirrored)

    def measured(self) -> _Candidate:
        """Measured where that is cheap: always on a GPU, on a CPU below ``CHEAP_STEP_MACS``."""
        network = self.network
        cheap = self.context.device.type != "cpu" or network.macs * network.batch < CHEAP_STEP_MACS
        return replace(self, network=self.context.measured(network)) if cheap else self


@dataclass(frozen=True)
class _Context:
    """What the choices of width, batch and schedule depend on."""

    dataset: Dataset
    cases: dict[str, Any]
    base: Architecture
    patch: geometry.Shape
    stride: geometry.Shape
    shape: Sequence[float]
    device: torch.device
    precision: str
    memory_bytes: int
    folds: tuple[int, ...]

    @property
    def in_channels(self) -> int:
        return len(self.dataset.modalities)

    @property
    def classes(self) -> int:
        return len(self.dataset.labels)

    def network(self, width: float) -> _Network:
        """Memory, MACs and batch of the network at ``width`` (traced, not run)."""
        arch = self.base.with_width(width)
        needed = memory.network_memory(arch, self.in_channels, self.classes, self.patch)
        batch = memory.fit_batch(needed, self.memory_bytes)
        if self.device.type == "cpu":  # a larger batch only slows each step; GPUs gain throughput
            batch = min(batch, memory.MIN_BATCH)
        with torch.device("meta"):
            network = C2FNet(arch, self.in_channels, self.classes)
        macs = estimate_cost(network, (1, self.in_channels, *self.patch)).macs
        return _Network(width, needed, macs, batch)

    def measured(self, network: _Network) -> _Network:
        window_batch = load_config("paper").training.window_batch
        measurement = measure_step(
            self.base.with_width(network.width), self.in_channels, self.classes, self.patch,
            network.batch, window_batch, self.precision, self.device,
        )  # fmt: skip
        return replace(network, measurement=measurement)

    def costs(self, network: _Network, tta: bool = False) -> schedule.Costs:
        """The ``Costs`` of the whole run with ``network`` on this dataset."""
        assert network.measurement is not None
        passes = MIRROR_PASSES if tta else 1
        window = network.measurement.window_seconds
        volume = tuple(math.ceil(size) for size in self.shape)
        windows = window_count(volume, self.patch, self.stride)
        validation_cases = math.ceil(len(self.cases) / NUM_FOLDS)
        fine_stride = max(1, max(self.patch) // 2)
        voxels = sum(math.prod(entry["shape"]) for entry in self.cases.values()) / len(self.cases)
        per_case = SECONDS_PER_MEGAVOXEL * voxels * self.in_channels / 1e6
        test_cases = _test_images(self.dataset)
        folds = len(self.folds)
        out_of_fold = validation_cases * folds  # the postprocess stage's cross-validation
        overhead = PREDICTION_SECONDS_PER_CASE
        return schedule.Costs(
            step=network.measurement.step_seconds * schedule.STEP_OVERHEAD,
            validation=validation_cases * windows * window,
            fine_score=validation_cases * window_count(volume, self.patch, fine_stride) * window,
            prediction=out_of_fold * (windows * window * passes + per_case + overhead)
            + test_cases * (folds * windows * window * passes + per_case + overhead),
            data=per_case * len(self.dataset.training),
        )


def _folds_choice(folds: tuple[int, ...], given: bool, budget: float | None) -> Choice:
    value = f"{', '.join(map(str, folds))} ({len(folds)} of {NUM_FOLDS})"
    if given:
        reason = "as given (--folds)"
    elif budget is None or len(folds) == NUM_FOLDS:
        reason = "the paper's 5-fold cross-validation; prediction ensembles them"
    elif len(folds) == 1:
        reason = (
            f"one model: two folds would each train fewer than the paper's "
            f"{solve.MIN_FOLD_ITERATIONS} iterations in the budget, and at equal time one longer "
            "model beat more, shorter folds (benchmarks/folds_rule.py); `--folds 0 1 2 3 4` "
            "trains all five"
        )
    else:
        reason = (
            f"the most that each still train the paper's {solve.MIN_FOLD_ITERATIONS} iterations "
            "in the budget (a shorter fold is a weaker model, benchmarks/folds_rule.py); "
            "prediction ensembles them"
        )
    return Choice("folds", value, reason)


def _fit_patch(
    narrowest: Architecture,
    in_channels: int,
    classes: int,
    shape: Sequence[float],
    spacing: Sequence[float],
    memory_bytes: int,
) -> tuple[geometry.Shape, str]:
    """The data's patch, shrunk until the narrowest network trains it at ``MIN_BATCH``."""
    median = _values(tuple(round(size) for size in shape))
    patch = geometry.plan_patch(shape, spacing)
    needed = tuple(geometry.round_up(size) for size in shape)
    if patch == needed:
        reason = f"median volume {median} at that spacing, in multiples of 16: the whole volume"
    else:
        reason = f"median volume {median}, cut to the paper's 96^3 voxels along its longest sides"
    limit = math.prod(patch)
    while True:
        fits = memory.fit_batch(
            memory.network_memory(narrowest, in_channels, classes, patch), memory_bytes
        )
        if fits >= memory.MIN_BATCH:
            return patch, reason
        smaller = geometry.plan_patch(shape, spacing, int(limit * 0.75))
        if smaller == patch:
            raise PlanError(
                f"a patch of {_values(patch)} at width {narrowest.width:g} needs more than the "
                f"{memory_bytes / 2**30:.1f} GiB of the device at batch {memory.MIN_BATCH}"
            )
        patch, limit = smaller, math.prod(smaller)
        reason = f"median volume {median}, cut until batch {memory.MIN_BATCH} fits the memory"


def _extrapolate(measured: _Network, other: _Network) -> _Network:
    """``other``'s costs from ``measured``'s, in proportion to MACs x batch."""
    assert measured.measurement is not None
    factor = other.macs * other.batch / (measured.macs * measured.batch)
    window = other.macs / measured.macs
    m = measured.measurement
    guess = Measurement(m.step_seconds * factor, m.window_seconds * window, None)
    return replace(other, measurement=guess, extrapolated_from=measured.width)


def _test_images(dataset: Dataset) -> int:
    """The test cases whose image files are there (an nnU-Net case is one file per channel)."""
    return sum(all(path.is_file() for path in case.images) for case in dataset.test)


def _configure(
    network: _Network, context: _Context, planned: schedule.Schedule, tta: bool, mode: SearchMode
) -> RunConfig:
    training = planned.training
    config = load_config("paper")
    cpu = context.device.type == "cpu"
    config = config.with_fields(
        "data", patch=list(context.patch), batch_size=network.batch,
        workers=0 if cpu else config.data.workers,  # on a CPU the cores are the network's
    )  # fmt: skip
    config = config.with_fields(
        "training", **training.config_fields(), stride=list(context.stride), tta=tta,
        tensorboard=not cpu, folds=list(context.folds),
    )  # fmt: skip
    search: dict[str, Any] = {
        "width": network.width, "fine_stride": max(context.patch) // 2, "mode": mode,
    }  # fmt: skip
    if planned.search is not None:
        search.update(
            iterations=planned.search.iterations, milestones=list(planned.search.milestones),
            fine_candidates=planned.search.fine_candidates,
        )  # fmt: skip
        if planned.search.coarse_networks:
            search.update(
                coarse_networks=planned.search.coarse_networks, clusters=planned.search.clusters
            )
    return config.with_fields("search", **search)


def _network_choices(chosen: _Network, narrowest: _Network, context: _Context) -> list[Choice]:
    gib = 2**30
    needed = chosen.memory.training_bytes(chosen.batch) / gib
    usable = memory.USABLE_MEMORY * context.memory_bytes / gib
    if context.device.type == "cpu":
        batch_reason = (
            f"the smallest the loader draws (2 patches per volume): on a CPU a larger batch only "
            f"slows each step (batch 4 at equal time: -0.0017 Dice, benchmarks/levers.py); "
            f"needs {needed:.2f} of {usable:.1f} GiB"
        )
    else:
        batch_reason = (
            f"the largest even batch up to the paper's 8 that fits: {needed:.1f} of "
            f"{usable:.1f} GiB usable (activation estimate x {memory.ACTIVATION_OVERHEAD:g})"
        )
    if chosen.width == narrowest.width:
        width_reason = (
            "the narrowest planned width: more iterations help more than more width (width 0.5 "
            "at equal time: -0.0035 Dice, benchmarks/levers.py)"
        )
    else:
        width_reason = (
            f"the widest that fits the memory at batch {memory.MIN_BATCH} and, under a budget, "
            f"still trains {solve.ITERATIONS_BEFORE_WIDTH} iterations"
        )
    measurement = chosen.measurement
    assert measurement is not None
    if chosen.extrapolated_from is None:
        how = (
            f"measured: batch {chosen.batch} of {_values(context.patch)}, {context.precision}, "
            f"on {context.device}"
        )
        if measurement.peak_bytes is not None:
            how += f", peak {measurement.peak_bytes / gib:.1f} GiB"
    else:
        how = (
            f"extrapolated by MACs from the step measured at width {chosen.extrapolated_from:g} "
            "(measuring this one would take long on a CPU)"
        )
    return [
        Choice("width", f"{chosen.width:g}", width_reason),
        Choice("batch", str(chosen.batch), batch_reason),
        Choice("precision", context.precision, f"what `auto` resolves to on {context.device}"),
        *_threads_choice(context.device),
        _compile_choice(context.device),
        Choice("training step", f"{measurement.step_seconds:.3f} s", how),
        Choice("window", f"{measurement.window_seconds * 1000:.1f} ms", "per sliding window"),
    ]


def _compile_choice(device: torch.device) -> Choice:
    if device.type == "cuda":
        return Choice(
            "compile",
            f"auto: on from {compiling.MIN_ITERATIONS} iterations",
            "torch.compile fuses the memory-bound layers and replays the step as CUDA graphs; "
            "compiling costs each trained network its first step's time, and the step time "
            "below is measured eagerly (the supernet always trains eagerly)",
        )
    return Choice(
        "compile",
        "off",
        f"on {device.type} the project's kernels already fuse the norms; compiling took about "
        "30 s and did not make the step faster (`training.compile: true` forces it)",
    )


def _threads_choice(device: torch.device) -> list[Choice]:
    if device.type != "cpu":
        return []
    if "OMP_NUM_THREADS" in os.environ:
        reason = "fixed by OMP_NUM_THREADS or `c2fnas --threads`"
    else:
        reason = (
            "the cores this process may use; training leaves cores to other jobs that load "
            "them and takes them back after (`c2fnas --threads N` fixes the number)"
        )
    return [Choice("threads", str(default_threads()), reason)]


def _schedule_choices(
    planned: schedule.Schedule,
    budget: float | None,
    architecture: Architecture | None,
    workers: int,
    tta: bool,
    mode: SearchMode,
    search_reason: str | None,
) -> list[Choice]:
    training = planned.training
    if budget is None:
        why = "the paper's schedule (no --time-budget)"
    else:
        fits = (
            "the paper's most: the budget fits more, so the run ends early"
            if training.iterations >= schedule.PAPER_ITERATIONS
            else f"fits {schedule.SAFETY:.0%} of the budget with the estimates below"
        )
        why = (
            f"{fits}; `c2fnas run` re-fits it to the time measured at "
            f"{schedule.REFIT_AFTER:.0%} of the first fold and again before each later fold"
        )
    rows = [
        Choice("iterations", str(training.iterations), why),
        Choice("milestones", ", ".join(map(str, training.milestones)), "x0.5 at 40% and 80%"),
        Choice("warm-up", str(training.warmup_iterations), "the paper's 1000 of 40000 iterations"),
        Choice(
            "validate every",
            str(training.validate_every),
            f"at most {schedule.PAPER_VALIDATIONS} validations, at most "
            f"{schedule.VALIDATION_SHARE:.0%} of the time",
        ),
        Choice(
            "checkpoint every",
            str(training.checkpoint_every),
            f"each validation, or about every {schedule.CHECKPOINT_SECONDS / 60:.0f} min",
        ),
        Choice(
            "mirroring (tta)",
            "on" if tta else "off",
            "the paper preset's choice on GPUs"
            if budget is None
            else f"on when it costs at most {solve.TTA_SHARE:.0%} of the budget",
        ),
    ]
    if architecture is not None:
        rows.append(
            Choice("search", "none", "--arch given: the coarse and fine stages are skipped")
        )
        return rows
    search = planned.search
    if mode == "none" or search is None:
        rows.append(Choice("search", "none: C2FNAS-Panc", search_reason or "--search none"))
        return rows
    supernet = f"supernet {2 * search.iterations} it, {search.fine_candidates} colourings"
    if mode == "fine":
        value = f"fine stage on C2FNAS-Panc's topology: {supernet}"
        share = schedule.FINE_ONLY_SHARE
    else:
        value = (
            f"{search.coarse_networks} networks in {search.clusters} clusters x "
            f"{search.iterations} it; {supernet}"
        )
        share = schedule.SEARCH_SHARE
    if budget is None:
        reason = "the paper's search" if mode == "coarse" else f"--search {mode}"
    else:
        reason = f"{search_reason}; {share:.0%} of the networks' time, {workers} worker(s)"
    rows.append(Choice("search", value, reason))
    return rows


def _stride_reason(stride: geometry.Shape) -> str:
    kind = "per axis: the patch is anisotropic" if len(set(stride)) > 1 else "on every axis"
    return f"the paper's 16 voxels on the patch's longest side, the same overlap {kind}"


def _values(values: Sequence[float], unit: str = "") -> str:
    text = " x ".join(f"{value:g}" for value in values)
    return f"{text} {unit}".rstrip()
