"""Which accuracy levers make C2FNAS more accurate at equal wall time? MSD Task04 Hippocampus.

Every variant of ``VARIANTS`` trains C2FNAS-Panc the way ``c2fnas run`` trains a fold (the run's
preprocessing and 5 folds; ``c2fnas.training.run.train`` on fold 0: 160 training cases,
validated on the 40 of fold 0) with the setting the planner chose for a 3 h budget on a 2-core
CPU (width 0.25, patch 48 x 64 x 48, batch 2, precision auto, stride ``plan_stride``), changed
only by the variant's overrides. The 40 cases of fold 0 are then scored case by case (mean Dice
over the foreground classes, the validation's sliding window on the preprocessed grid), with the
``best/`` and the ``last/`` model folder of each variant: "final instead of best" is a lever too.
``best/`` is chosen on these same 40 cases (as ``c2fnas run`` chooses it on a fold's own
validation cases), so its score is optimistic; ``last/``'s is not.

Equal wall time: each variant gets the iterations that ``--minutes`` of training buy at its own
cost per iteration, laid out by the planner's ``costs.schedule.fit_training`` (iterations, up to
40 validations in at most 10% of the time, warm-up and milestones, as ``c2fnas plan`` would for
a fold of that length). The cost is measured once, for ``baseline`` (the reference): in its own
process, pinned to a core with one torch thread, ``--calibration-steps`` real iterations of the
run's training (batch loading and augmentation included, after ``WARMUP_STEPS``) and one
validation. Other variants do not calibrate on their own: the same work per iteration calibrated
at 0.291 s (baseline) and 0.267 s (poly) in two sittings, 8%, as large as a lever's effect. A
variant whose overrides change no iteration's work (``SAME_STEP``: the seed, the learning-rate
curve) trains exactly the baseline's schedule; any other (deep supervision's heads,
augmentation, width, batch) measures its cost *relative to the baseline*, the two recipes timed
alternately in one process (``RATIO_ROUNDS`` rounds, A B then B A, after an untimed one), and
scales the reference by the median round's ratio (its validation's too where the width differs;
otherwise the same network validates the same windows, and timing it gave ratios of 0.73-1.00:
noise). Every calibration runs alone, the other cores idle, as the reference's did: timed beside
another variant's calibration, each recipe's turn met different work on the neighbouring core (deep
supervision then timed 3% cheaper than the baseline, whose work it contains). A wider network or a
larger batch thus trains fewer iterations, by what it costs on this CPU. Recorded per variant:
the seconds per iteration used and how they were obtained, the iterations, the training's actual
wall seconds, the core, the variant that ran beside it and the per-case Dice.
``--rerun NAME`` moves a recorded variant to ``superseded/`` in the records (kept, not read by
the analysis), deletes its checkpoints and trains nothing: the next invocation trains it again
(and a repeated invocation resumes it instead of starting over).

Two variants train at once (``--cores 0 1``), one per core, in the order of ``VARIANTS``: first
``baseline`` and ``baseline-seed1`` (the noise ceiling: the same recipe, another seed for the
weights and the patches, on the other core), so that the noise is known before any lever is
read, even from a run stopped early. Verdict: a lever is ``kept``
when its paired per-case difference to ``baseline``'s ``best/`` has a 95% bootstrap interval
above 0 and exceeds the larger seed-to-seed gap of the two baselines (over ``best/`` and
``last/``).

The folds experiment (``folds``) tests the planner's rule "the most folds that each still get
5,000 iterations" at equal total time: an ensemble of 3 models (softmax averaged), each trained
a third of ``--minutes`` on another 4/5 of the same 160 cases (folds 0-2 of a run folder of
them, whose own validation cases choose ``best/``), against ``baseline``, one model trained
``--minutes`` on all 160; scored on the same 40 cases.

Each finished variant is recorded in ``--records`` (commit it: a run that spans sessions resumes
from a fresh clone); its checkpoints stay in ``--work`` (a rerun resumes a variant mid-training
with the iterations of its first calibration). Rerunning the command skips what is recorded.
Results depend on the CPU (``machine.describe()`` is recorded): a lever that costs time per
iteration (augmentation, deep supervision, width) wins or loses by how fast this CPU runs it.

Usage::

    .venv/bin/python benchmarks/levers.py     # 8 variants x 20 min + folds: ~1.9 h on 2 cores
    .venv/bin/python benchmarks/levers.py --only poly width-0.5     # a subset
    .venv/bin/python benchmarks/levers.py --analyse    # the report from --records
    .venv/bin/python benchmarks/levers.py --rerun poly    # forget poly's record; then
    .venv/bin/python benchmarks/levers.py --only poly     # train it again (resumes if stopped)
    .venv/bin/python -m c2fnas data synth /tmp/levers/data --cases 10 --shape 40 48 32
    .venv/bin/python benchmarks/levers.py --data /tmp/levers/data --work /tmp/levers/work \\
        --records /tmp/levers/records.json --out /tmp/levers/levers.json --minutes 0.2 \\
        --cores 0 --calibration-steps 3                        # a quick check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from c2fnas.accel.precision import resolve_precision
from c2fnas.accel.process import keep_freed_memory
from c2fnas.accel.swap import accelerate
from c2fnas.costs.schedule import BudgetError, Costs, TrainingSchedule, fit_training, training_run
from c2fnas.data import loader, splits
from c2fnas.data.pipeline import cached_case_ids, preprocess_dataset
from c2fnas.data.preprocess import Plan
from c2fnas.files.atomic import write_json_atomic
from c2fnas.files.run_folder import RunFolder, TrainingFolder
from c2fnas.inference.models import load_model
from c2fnas.inference.sliding_window import predict_probabilities
from c2fnas.nn import C2FNet
from c2fnas.planning.geometry import plan_stride
from c2fnas.space import Architecture
from c2fnas.training.config import RunConfig, load_config
from c2fnas.training.run import train
from c2fnas.training.validation import dice_per_class, validate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import machine  # noqa: E402
from peers import PANC  # noqa: E402
from search_landscape import Records  # noqa: E402
from search_study import interval_of_cases, paired_bootstrap  # noqa: E402

VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "baseline": {},
    "baseline-seed1": {"training": {"seed": 1}},
    "poly": {"training": {"lr_decay": "poly"}},
    "deep-supervision": {"training": {"deep_supervision": True}},
    "nnunet-aug": {"data": {"augmentation": "nnunet"}},
    "all-three": {
        "training": {"lr_decay": "poly", "deep_supervision": True},
        "data": {"augmentation": "nnunet"},
    },
    "width-0.5": {"search": {"width": 0.5}},
    "batch-4": {"data": {"batch_size": 4}},
}
"""Variant -> config overrides by section, on top of ``base_config``; run in this order."""
BASELINE, SEED_TWIN = "baseline", "baseline-seed1"
SAME_STEP = frozenset({SEED_TWIN, "poly"})
"""Variants whose overrides change no iteration's work: they train the baseline's schedule."""
RATIO_ROUNDS = 6
"""Rounds of timing the baseline's and a variant's recipe alternately (A B, then B A, ...): the
variant's cost ratio is the median of the rounds' ratios. Blocks of 20 iterations of one recipe
vary by up to 20% on this machine from one block to the next (0.29-0.35 s for the baseline's), so
two rounds gave deep supervision ratios from 0.91 to 1.10 in three sittings."""
SUPERSEDED = "superseded"
REFERENCE = (BASELINE, "best")
"""Today's recipe: ``c2fnas run`` deploys each fold's best model."""
CHECKPOINTS = ("best", "last")
FOLD = 0
WARMUP_STEPS = 3
"""Iterations of the calibration left untimed: the first builds the patch stream and pays for
allocations."""
VALIDATION_SAMPLE = 4
"""Cases the calibration validates to estimate one validation of the fold (scaled up)."""
FOLDS = "folds"
"""The folds experiment (``--only folds``): an ensemble of ``ENSEMBLE_MEMBERS`` models, each
trained ``--minutes`` / ``ENSEMBLE_MEMBERS`` on another 4/5 of the 160 training cases, against
one model trained ``--minutes`` on all of them (``baseline``)."""
ENSEMBLE_MEMBERS = 3
MEMBERS = tuple(f"folds-member-{index}" for index in range(ENSEMBLE_MEMBERS))
ENSEMBLE = f"folds-{ENSEMBLE_MEMBERS}"

DATA = REPO.parent / "shared" / "data" / "Task04_Hippocampus"
RESULTS = REPO / "benchmarks" / "results"
log = logging.getLogger("levers")


class _Calibrated(Exception):
    """Raised by the calibration's progress callback once enough iterations are timed."""


def base_config(args: argparse.Namespace) -> RunConfig:
    """The planner's choices for a fold of a 3 h run on the 2-core CPU, without a search."""
    config = load_config("paper").with_fields(
        "data", patch=list(args.patch), batch_size=args.batch, workers=0
    )
    config = config.with_fields(
        "training", precision=args.precision, stride=list(plan_stride(args.patch)),
        tensorboard=False, seed=0,
    )  # fmt: skip
    return config.with_fields("search", width=args.width, mode="none")


def variant_config(args: argparse.Namespace, name: str) -> RunConfig:
    config = base_config(args)
    for section, values in VARIANTS[name].items():
        config = config.with_fields(section, **values)
    return config


def with_schedule(config: RunConfig, schedule: TrainingSchedule) -> RunConfig:
    return config.with_fields(
        "training", iterations=schedule.iterations, milestones=list(schedule.milestones),
        warmup_iterations=schedule.warmup_iterations, validate_every=schedule.validate_every,
        checkpoint_every=schedule.checkpoint_every,
    )  # fmt: skip


def fold_schedule(seconds: float, step: float, validation: float) -> TrainingSchedule:
    """What ``c2fnas plan`` gives a fold of ``seconds`` at these costs (``fit_training``)."""
    costs = Costs(step=step, validation=validation, fine_score=0.0, prediction=0.0, data=0.0)
    try:
        return fit_training(seconds, costs)
    except BudgetError as error:  # only a quick check's minutes are this short
        iterations = max(2, int((seconds - validation) / step))
        log.warning("%s; training %d iterations anyway", error, iterations)
        return training_run(iterations, costs, validations=1)


def members_run(work: Path) -> Path:
    """A run folder of fold ``FOLD``'s 160 training cases (its own 5 folds of 32: an ensemble
    member trains on 4 of them), sharing the cache of ``WORK/run``; as
    ``search_study.prepare`` makes its search run, for another fold."""
    run, members = RunFolder(work / "run"), RunFolder(work / "members_run")
    if not members.dataset_copy.is_file():
        ids = cached_case_ids(run.root)
        keep = set(splits.load_or_create(run.root, ids)[FOLD].train)
        description = json.loads(run.dataset_copy.read_text())
        description["training"] = [
            entry for entry, case in zip(description["training"], ids, strict=True) if case in keep
        ]
        description["numTraining"] = len(description["training"])
        members.root.mkdir(parents=True, exist_ok=True)
        members.plan.write_bytes(run.plan.read_bytes())
        members.cache.symlink_to(run.cache.resolve())
        write_json_atomic(members.dataset_copy, description)
    return members.root


def unit_names(names: list[str]) -> list[str]:
    """The processes to run for ``--only`` names: ``folds`` is its members."""
    return [unit for name in names for unit in (MEMBERS if name == FOLDS else (name,))]


# ---------------------------------------------------------------- one variant (child process)


def case_dice(
    network: torch.nn.Module, run_dir: Path, case_ids: list[str], config: RunConfig, classes: int
) -> dict[str, float]:
    """Mean foreground Dice of each case, as ``fit`` validates (sliding window, argmax)."""
    device = torch.device("cpu")
    precision = resolve_precision(config.training.precision, device)
    network.eval()
    scores = {}
    with torch.no_grad():
        for case in loader.validation_cases(run_dir, case_ids):
            total, _ = validate(network, [case], classes, config.data.patch,
                                config.training.stride, precision, device,
                                config.training.window_batch)  # fmt: skip
            scores[case[0]] = float(total.mean())
    return scores


def calibrate(
    architecture: Architecture, run_dir: Path, fold: int, config: RunConfig, folder: Path,
    steps: int,
) -> dict[str, float]:  # fmt: skip
    """Seconds per iteration of the variant's own training (``train`` as the run calls it, real
    batches and augmentation), timed between consecutive iterations after ``WARMUP_STEPS``."""
    total = WARMUP_STEPS + steps + 1
    config = config.with_fields(
        "training", iterations=total + 1, validate_every=total + 1, checkpoint_every=total + 1
    )
    marks: list[tuple[float, float]] = []

    def progress(done: int, _: int, __: dict[str, float]) -> None:
        marks.append((time.perf_counter(), time.process_time()))
        if done == total:
            raise _Calibrated  # before the validation and checkpoint of the last iteration

    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(_Calibrated):
        train(architecture, run_dir, fold, config, folder, progress=progress, accelerated=True)
    shutil.rmtree(folder, ignore_errors=True)
    timed = marks[WARMUP_STEPS:]
    wall = np.diff([mark[0] for mark in timed])
    cpu = np.diff([mark[1] for mark in timed])
    return {"seconds_per_iteration": float(wall.mean()), "median": float(np.median(wall)),
            "cpu_seconds_per_iteration": float(cpu.mean()), "steps": len(wall)}  # fmt: skip


def validation_seconds(
    architecture: Architecture, run_dir: Path, case_ids: list[str], config: RunConfig, plan: Plan
) -> float:
    """One validation of ``case_ids``, estimated from ``VALIDATION_SAMPLE`` of them."""
    torch.manual_seed(0)
    network = accelerate(C2FNet(architecture, plan.in_channels, plan.num_classes))
    sample = case_ids[:VALIDATION_SAMPLE]
    started = time.perf_counter()
    case_dice(network, run_dir, sample, config, plan.num_classes)
    return (time.perf_counter() - started) * len(case_ids) / len(sample)


def reference_costs(args: argparse.Namespace) -> dict[str, Any]:
    """The baseline's calibration at ``--minutes`` (``--calibrate-only`` makes it)."""
    return dict(json.loads((variant_folder(args, BASELINE) / "calibration.json").read_text()))


def own_costs(
    architecture: Architecture, run_dir: Path, fold: int, config: RunConfig, folder: Path,
    steps: int, validated: list[str], plan: Plan,
) -> dict[str, Any]:  # fmt: skip
    costs: dict[str, Any] = calibrate(architecture, run_dir, fold, config, folder, steps)
    costs["validation_seconds"] = validation_seconds(architecture, run_dir, validated, config, plan)
    return costs


def relative_costs(
    args: argparse.Namespace, name: str, run_dir: Path, validated: list[str], plan: Plan,
    folder: Path,
) -> dict[str, Any]:  # fmt: skip
    """The reference's costs scaled by the variant's cost relative to the baseline's recipe,
    both timed alternately in this process (the same core, the same neighbour), after an
    untimed first calibration."""
    reference = reference_costs(args)
    recipes = {BASELINE: base_config(args), name: variant_config(args, name)}
    steps: dict[str, list[float]] = {BASELINE: [], name: []}
    validations: dict[str, float] = {}
    # an untimed first calibration pays the process's first allocations; then A B B A ... so
    # that a drift of the machine's speed weighs on both recipes alike
    pairs = [(BASELINE, name) if round_ % 2 == 0 else (name, BASELINE)
             for round_ in range(RATIO_ROUNDS)]  # fmt: skip
    order = [BASELINE] + [recipe for pair in pairs for recipe in pair]
    for index, recipe in enumerate(order):
        config = recipes[recipe]
        architecture = Architecture.load(PANC).with_width(config.search.width)
        timed = calibrate(architecture, run_dir, FOLD, config, folder, args.calibration_steps)
        if index:
            steps[recipe].append(timed["seconds_per_iteration"])
    validation_ratio = 1.0  # the same network validates the same windows: only noise to time
    if recipes[name].search.width != recipes[BASELINE].search.width:
        for recipe, config in recipes.items():
            architecture = Architecture.load(PANC).with_width(config.search.width)
            validations[recipe] = validation_seconds(architecture, run_dir, validated, config, plan)
        validation_ratio = validations[name] / validations[BASELINE]
    rounds = [variant / base for variant, base in zip(steps[name], steps[BASELINE], strict=True)]
    step_ratio = float(np.median(rounds))
    return {
        "seconds_per_iteration": reference["seconds_per_iteration"] * step_ratio,
        "validation_seconds": reference["validation_seconds"] * validation_ratio,
        "from": "the baseline's calibration x this variant's cost ratio, timed alternately",
        "step_ratio": step_ratio, "round_ratios": [round(value, 4) for value in rounds],
        "validation_ratio": validation_ratio,
        "timed_steps": {recipe: [round(value, 4) for value in values]
                        for recipe, values in steps.items()},
    }  # fmt: skip


def variant_costs(
    args: argparse.Namespace, name: str, run_dir: Path, validated: list[str], scored: list[str],
    plan: Plan, folder: Path,
) -> dict[str, Any]:  # fmt: skip
    """Seconds per iteration and per validation that lay out ``name``'s schedule (the reference
    validated the ``scored`` cases; ``name`` validates ``validated``)."""
    if name in SAME_STEP or name in MEMBERS:
        reference = reference_costs(args)
        return {
            "seconds_per_iteration": reference["seconds_per_iteration"],
            # a member validates its own (fewer) cases
            "validation_seconds": reference["validation_seconds"] * len(validated) / len(scored),
            "from": "the baseline's calibration (the same work per iteration)",
        }
    return relative_costs(args, name, run_dir, validated, plan, folder)


def run_variant(args: argparse.Namespace, name: str) -> dict[str, Any] | None:
    """Calibrate (once), train for ``--minutes`` (resuming) and score one variant, or one
    ensemble member for a third of the minutes on its fold of ``members_run``; with
    ``--calibrate-only`` (the baseline) write the reference costs and stop."""
    torch.set_num_threads(1)
    keep_freed_memory()  # as the c2fnas command line does
    run_dir = args.work / "run"
    plan = Plan.load(run_dir)
    scored = splits.load_or_create(run_dir, cached_case_ids(run_dir))[FOLD].val
    if name in MEMBERS:
        train_run, train_fold = members_run(args.work), MEMBERS.index(name)
        config, minutes = base_config(args), args.minutes / ENSEMBLE_MEMBERS
    else:
        train_run, train_fold = run_dir, FOLD
        config, minutes = variant_config(args, name), args.minutes
    validated = splits.load_or_create(train_run, cached_case_ids(train_run))[train_fold].val
    architecture = Architecture.load(PANC).with_width(config.search.width)
    folder = variant_folder(args, name)
    calibration_file = folder / "calibration.json"
    if calibration_file.is_file():  # a resumed variant keeps its first schedule
        calibration = json.loads(calibration_file.read_text())
    elif name == BASELINE:
        calibration = own_costs(
            architecture, train_run, train_fold, config, folder / "calibration",
            args.calibration_steps, validated, plan,
        )  # fmt: skip
    else:
        calibration = variant_costs(
            args, name, train_run, validated, scored, plan, folder / "calibration"
        )
    write_json_atomic(calibration_file, calibration)
    if args.calibrate_only:
        return None
    schedule = fold_schedule(
        minutes * 60, calibration["seconds_per_iteration"], calibration["validation_seconds"]
    )
    config = with_schedule(config, schedule)
    log.info("%s: %.3f s per iteration -> %d iterations, validated every %d", name,
             calibration["seconds_per_iteration"], schedule.iterations,
             schedule.validate_every)  # fmt: skip
    started = time.perf_counter()
    result = train(architecture, train_run, train_fold, config, folder / "train", resume=True,
                   accelerated=True, progress=_progress(name, schedule.iterations))  # fmt: skip
    this_start = time.perf_counter() - started
    per_case, scoring = {}, {}
    for checkpoint in CHECKPOINTS:
        started = time.perf_counter()
        model_folder = getattr(TrainingFolder(folder / "train"), checkpoint)
        network = load_model(model_folder, torch.device("cpu"), accelerated=True).network
        assert isinstance(network, torch.nn.Module)
        per_case[checkpoint] = case_dice(network, run_dir, scored, config, plan.num_classes)
        scoring[checkpoint] = round(time.perf_counter() - started, 1)
    return {
        "variant": name,
        "overrides": VARIANTS.get(name, {}),
        "minutes": minutes,
        "dataset": str(args.data),
        "trained_on": f"{train_run.name} fold {train_fold}",
        "core": sorted(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "calibration": calibration,
        "iterations": schedule.iterations,
        "validate_every": schedule.validate_every,
        "train_seconds": round(result.seconds, 1),
        "train_seconds_this_start": round(this_start, 1),
        "best_iteration": result.best_iteration,
        "scoring_seconds": scoring,
        "per_case": per_case,
        "mean_dice": {kind: float(np.mean(list(d.values()))) for kind, d in per_case.items()},
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "config": config.model_dump(mode="json"),
    }


def score_ensemble(args: argparse.Namespace, records: Records) -> dict[str, Any]:
    """The folds experiment's record: its members' softmax averaged (sliding window, as
    ``case_dice``), per case of fold ``FOLD``, for their ``best/`` and their ``last/``."""
    run_dir = args.work / "run"
    plan = Plan.load(run_dir)
    cases = splits.load_or_create(run_dir, cached_case_ids(run_dir))[FOLD].val
    config = base_config(args)
    device = torch.device("cpu")
    window = (
        config.data.patch,
        config.training.stride,
        resolve_precision(config.training.precision, device),
        config.training.window_batch,
    )
    members = [records[record_key(args.minutes, member)] for member in MEMBERS]
    per_case: dict[str, dict[str, float]] = {}
    for checkpoint in CHECKPOINTS:
        networks = [
            load_model(variant_folder(args, member) / "train" / checkpoint, device, True).network
            for member in MEMBERS
        ]
        per_case[checkpoint] = {}
        with torch.no_grad():
            for case_id, image, label in loader.validation_cases(run_dir, cases):
                summed = sum(predict_probabilities(network, image, *window) for network in networks)
                assert isinstance(summed, torch.Tensor)
                prediction = summed[0].argmax(0)  # the mean's argmax: the sum's
                dice = dice_per_class(prediction, label[0, 0], plan.num_classes)
                per_case[checkpoint][case_id] = float(dice.mean())
    step = float(np.mean([record["calibration"]["seconds_per_iteration"] for record in members]))
    return {
        "variant": ENSEMBLE,
        "members": {member: record["mean_dice"] for member, record in zip(MEMBERS, members,
                                                                          strict=True)},
        "core": sorted({core for record in members for core in record["core"]}),
        "calibration": {"seconds_per_iteration": step},
        "iterations": sum(record["iterations"] for record in members),
        "train_seconds": sum(record["train_seconds"] for record in members),
        "per_case": per_case,
        "mean_dice": {kind: float(np.mean(list(d.values()))) for kind, d in per_case.items()},
    }  # fmt: skip


def _progress(name: str, total: int) -> Any:
    every = max(1, total // 10)

    def report(done: int, _: int, metrics: dict[str, float]) -> None:
        if done % every == 0 or done == total:
            log.info("%s: iteration %d/%d loss %.4f", name, done, total, metrics["loss"])

    return report


def variant_folder(args: argparse.Namespace, name: str) -> Path:
    return args.work / f"{args.minutes:g}min" / name


def record_key(minutes: float, name: str) -> str:
    return f"{minutes:g}min/{name}"


# ---------------------------------------------------------------- the runner (parent process)


def run_all(args: argparse.Namespace, records: Records, names: list[str]) -> None:
    """Train the unrecorded ``names`` in groups of ``len(args.cores)``, one process per core."""
    for name in names:
        if name in VARIANTS:  # a setting the library does not know fails now, not later
            variant_config(args, name)
    units = unit_names(names)
    pending = [unit for unit in units if record_key(args.minutes, unit) not in records]
    summary = preprocess_dataset(args.data, args.work / "run", workers=len(args.cores))
    log.info("preprocessed: %d written, %d cached", len(summary.written), len(summary.skipped))
    # the children would race to write splits.json
    splits.load_or_create(args.work / "run", cached_case_ids(args.work / "run"))
    if FOLDS in names:
        members = members_run(args.work)
        splits.load_or_create(members, cached_case_ids(members))
    if pending:
        calibrate_alone(args, BASELINE)  # the reference cost of an iteration, before any ratio
    width = len(args.cores)
    for start in range(0, len(pending), width):
        group = pending[start : start + width]
        for name in group:
            calibrate_alone(args, name)
        log.info("training %s", " and ".join(group))
        children = []
        for core, name in zip(args.cores, group, strict=False):
            variant_folder(args, name).mkdir(parents=True, exist_ok=True)
            command = child_command(args, core, name)
            children.append((name, subprocess.Popen(command, env=child_environment())))
        try:
            for name, child in children:
                if child.wait():
                    raise SystemExit(f"{name}: training failed (exit {child.returncode})")
        finally:
            for _, child in children:  # on Ctrl-C or SIGTERM: a rerun resumes them
                if child.poll() is None:
                    child.terminate()
                    child.wait()
        for name, _ in children:
            record = json.loads((variant_folder(args, name) / "record.json").read_text())
            record["beside"] = [other for other in group if other != name]
            records.add(record_key(args.minutes, name), record)
    if FOLDS in names and record_key(args.minutes, ENSEMBLE) not in records:
        log.info("scoring the ensemble of %s", ", ".join(MEMBERS))
        records.add(record_key(args.minutes, ENSEMBLE), score_ensemble(args, records))


def calibrate_alone(args: argparse.Namespace, name: str) -> None:
    """``name``'s costs (``calibration.json``) unless it has them, timed in a child process on
    the first core while the others idle, as every calibration is."""
    if (variant_folder(args, name) / "calibration.json").is_file():
        return
    log.info("calibrating %s alone", name)
    variant_folder(args, name).mkdir(parents=True, exist_ok=True)
    subprocess.run(child_command(args, args.cores[0], name, "--calibrate-only"),
                   env=child_environment(), check=True)  # fmt: skip


def child_command(args: argparse.Namespace, core: int, name: str, *extra: str) -> list[str]:
    return ["taskset", "-c", str(core), sys.executable, __file__, *child_arguments(args),
            "--child", name, *extra]  # fmt: skip


def child_environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def rerun(args: argparse.Namespace, records: Records, names: list[str]) -> None:
    """Move ``names``' records to ``superseded/`` (kept for the history, not analysed) and
    delete their checkpoints, so that they train again."""
    for name in unit_names(names):
        key = record_key(args.minutes, name)
        if key in records:
            records.supersede(key, f"{SUPERSEDED}/{key}")
            log.info("%s: record moved to %s/%s", name, SUPERSEDED, key)
        shutil.rmtree(variant_folder(args, name), ignore_errors=True)
    if FOLDS in names:
        records.drop(record_key(args.minutes, ENSEMBLE))


def child_arguments(args: argparse.Namespace) -> list[str]:
    return [
        "--data", str(args.data), "--work", str(args.work), "--minutes", f"{args.minutes:g}",
        "--width", f"{args.width:g}", "--patch", *map(str, args.patch), "--batch",
        str(args.batch), "--precision", args.precision, "--calibration-steps",
        str(args.calibration_steps),
    ]  # fmt: skip


# ---------------------------------------------------------------- analysis


def analyse(args: argparse.Namespace, records: Records) -> dict[str, Any]:
    """Per variant and checkpoint: mean Dice over cases, the paired difference to
    ``REFERENCE`` and the verdict; what ``records`` holds at ``--minutes`` so far."""
    done = {name: records[record_key(args.minutes, name)] for name in [*VARIANTS, ENSEMBLE]
            if record_key(args.minutes, name) in records}  # fmt: skip

    def scores(name: str, checkpoint: str) -> tuple[list[str], np.ndarray]:
        per_case = done[name]["per_case"][checkpoint]
        cases = sorted(per_case)
        return cases, np.array([per_case[case] for case in cases])

    noise = None
    if BASELINE in done and SEED_TWIN in done:
        gaps = {kind: paired_bootstrap(scores(SEED_TWIN, kind)[1], scores(BASELINE, kind)[1])
                for kind in CHECKPOINTS}  # fmt: skip
        noise = {"per_checkpoint": gaps,
                 "gap": max(abs(gap["difference"]) for gap in gaps.values())}  # fmt: skip
    rows = []
    for name, record in done.items():
        for checkpoint in CHECKPOINTS:
            cases, values = scores(name, checkpoint)
            row: dict[str, Any] = {
                "variant": name, "checkpoint": checkpoint, "core": record["core"],
                "beside": record.get("beside", []),
                "seconds_per_iteration": record["calibration"]["seconds_per_iteration"],
                "iterations": record["iterations"], "train_seconds": record["train_seconds"],
                "cases": len(cases), **interval_of_cases(values),
                "verdict": "reference" if (name, checkpoint) == REFERENCE else "no baseline yet",
            }  # fmt: skip
            if "members" in record:
                row["members"] = record["members"]
            if REFERENCE[0] in done and (name, checkpoint) != REFERENCE:
                reference_cases, reference = scores(*REFERENCE)
                assert reference_cases == cases, "the variants scored different cases"
                row["versus_baseline"] = paired_bootstrap(values, reference)
                row["verdict"] = verdict(name, row["versus_baseline"], noise)
            rows.append(row)
    return {
        "question": "which levers make c2fnas more accurate at equal wall time (Hippocampus)",
        "dataset": sorted({record["dataset"] for name, record in done.items() if name in VARIANTS}),
        "split": f"the run's 5 folds; train on fold {FOLD}'s 160 training cases, score its 40",
        "minutes_per_variant": args.minutes,
        "reference": "/".join(REFERENCE),
        "note": "best/ is chosen on the scored cases (optimistic), except the ensemble "
        "members' (on 32 of the 160 training cases); last/ is not",
        "verdict_rule": "kept: paired 95% interval above 0 and difference > seed-to-seed gap",
        "noise": noise,
        "rows": rows,
        "machine": machine.describe(),
        "record_machines": sorted({f"{r['cpu']} {'+'.join(r['flags'])}" for r in done.values()}),
        "invocations": records.data["invocations"],
        "missing": [name for name in [*VARIANTS, ENSEMBLE] if name not in done],
    }


def verdict(name: str, difference: dict[str, float], noise: dict[str, Any] | None) -> str:
    if name == SEED_TWIN:
        return "noise"
    if noise is None:
        return "no noise yet"
    wins = difference["low"] > 0 and difference["difference"] > noise["gap"]
    return "kept" if wins else "not kept"


def show(result: dict[str, Any]) -> None:
    table = Table(title=f"Levers at {result['minutes_per_variant']:g} min each, "
                  f"{result['machine']['cpu']}, torch {result['machine']['torch']}")  # fmt: skip
    for column in ("variant", "model", "core", "s/iter", "iterations", "train min",
                   "mean Dice [95%]", "vs baseline/best [95%]", "verdict"):  # fmt: skip
        table.add_column(column, justify="right")
    for row in result["rows"]:
        versus = row.get("versus_baseline")
        table.add_row(
            row["variant"], row["checkpoint"], ",".join(map(str, row["core"])),
            f"{row['seconds_per_iteration']:.3f}", str(row["iterations"]),
            f"{row['train_seconds'] / 60:.1f}",
            f"{row['mean']:.4f} [{row['low']:.4f}, {row['high']:.4f}]",
            f"{versus['difference']:+.4f} [{versus['low']:+.4f}, {versus['high']:+.4f}]"
            if versus else "-",
            row["verdict"],
        )  # fmt: skip
    console = Console(width=max(140, Console().width))  # not cut to 80 columns in a log
    console.print(table)
    if result["noise"] is not None:
        console.print(f"seed-to-seed gap (noise): {result['noise']['gap']:.4f}")
    if result["missing"]:
        console.print(f"not yet recorded: {', '.join(result['missing'])}")


# ---------------------------------------------------------------- command line


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA, help="Task04_Hippocampus folder")
    parser.add_argument("--work", type=Path, default=REPO.parent / "c2fnas-levers")
    parser.add_argument("--records", type=Path, default=RESULTS / "levers_records.json")
    parser.add_argument("--out", type=Path, default=RESULTS / "levers.json")
    parser.add_argument("--minutes", type=float, default=20.0, help="training time per variant")
    parser.add_argument("--only", nargs="+", choices=[*VARIANTS, FOLDS],
                        help="run these variants (folds: the folds experiment)")  # fmt: skip
    parser.add_argument("--cores", type=int, nargs="+", default=[0, 1],
                        help="one variant per core at a time")  # fmt: skip
    parser.add_argument("--width", type=float, default=0.25, help="the baseline's width")
    parser.add_argument("--patch", type=int, nargs=3, default=[48, 64, 48])
    parser.add_argument("--batch", type=int, default=2, help="the baseline's batch")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--calibration-steps", type=int, default=20)
    parser.add_argument("--analyse", action="store_true",
                        help="train nothing: the report from what --records holds")  # fmt: skip
    parser.add_argument("--rerun", nargs="+", choices=[*VARIANTS, FOLDS], default=[],
                        help="supersede these variants' records (train nothing now)")  # fmt: skip
    parser.add_argument("--child", choices=[*VARIANTS, *MEMBERS], help=argparse.SUPPRESS)
    parser.add_argument("--calibrate-only", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S"
    )
    if args.child:
        record = run_variant(args, args.child)
        if record is not None:
            write_json_atomic(variant_folder(args, args.child) / "record.json", record)
        return
    records = Records(args.records)
    if args.rerun:
        rerun(args, records, args.rerun)
    if not (args.analyse or args.rerun):
        # a SIGTERM (or Ctrl-C) still records this invocation's minutes
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        started, completed = time.perf_counter(), False
        names = args.only or [*VARIANTS, FOLDS]
        try:
            run_all(args, records, names)
            completed = True
        finally:
            records.add_invocation(machine.describe(), time.perf_counter() - started,
                                   tuple(names), completed)  # fmt: skip
    result = analyse(args, records)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, result)
    show(result)


if __name__ == "__main__":
    main()
