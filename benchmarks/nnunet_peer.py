"""nnU-Net v2 (``3d_fullres``) as a peer of ``c2fnas run``: same cases, folds, threads and budget.

nnU-Net lives in its own environment and is never a dependency of c2fnas::

    python3 -m venv /work/nnunet-env
    /work/nnunet-env/bin/pip install torch==2.13.0
    /work/nnunet-env/bin/pip install nnunetv2==2.8.1 torch==2.13.0

torch is pinned in both commands: the first installs the CPU build from local disk, and without
the pin in the second, pip upgrades torch for nnU-Net's dependencies (timm -> torchvision) and
downloads a CUDA build of several GB. The torchvision pip then finds (0.28.0) is a CUDA build that
fails to import beside the CPU torch; nnU-Net's ``3d_fullres`` path never imports it, only its
Primus trainers do (through timm).

This script runs with c2fnas's python (``.venv/bin/python``), so that the held-out predictions
are scored by c2fnas's own evaluation (``c2fnas.evaluation.metrics``, Dice in the source images'
geometry), and calls nnU-Net's commands from ``--nnunet-env``'s ``bin/``. Its phases, each timed
and recorded in ``WORK/state.json`` (convert, plan) or ``WORK/TAG/state.json`` (the rest; TAG
names the budget), so that a re-run skips the finished ones:

1. convert: c2fnas's converter (``c2fnas data convert --to nnunet``) copies the MSD folder into
   nnU-Net's raw ``Dataset004_Hippocampus`` (nnU-Net's own MSD converter requires ``imagesTs/``,
   which this folder lacks); a case keeps its id (``hippocampus_001`` ->
   ``imagesTr/hippocampus_001_0000.nii.gz``), so nnU-Net's case identifiers are c2fnas's.
2. plan: ``nnUNetv2_plan_and_preprocess -c 3d_fullres`` (fingerprint, plans, preprocessing).
3. splits: ``splits_final.json`` gets c2fnas's 5 folds: the cases in dataset order cut into 5
   chunks (``c2fnas.data.splits.make_folds``, what ``c2fnas run`` writes into a new run folder),
   or the ``splits.json`` of the run folder given as ``--c2fnas-run``.
4. calibrate: a separate ``nnUNetv2_train`` of 3 short epochs, ``--calibration-iterations``
   training iterations each (and a fifth as many validation ones: nnU-Net's 250:50), gives the
   seconds of a full epoch (means over epochs 2 and 3, as the first warms up: the iterations'
   time scaled to 250 training iterations, plus the epoch's end: log, plot, checkpoints) and the
   command's start-up and tear-down time (its wall time less its epochs).
   A separate run because nnU-Net lays its poly learning-rate schedule over ``num_epochs`` when
   training starts: the count must be known before.
5. train: ``nnUNetv2_train -device cpu`` for ``floor((budget - start-up) / epoch seconds)``
   epochs, so the whole training command fits the budget (its start-up is a little shorter than
   the calibration's, which unpacked the dataset). Where fewer than 10 of nnU-Net's epochs fit (on
   a small CPU one can take most of an hour), 10 shorter epochs fill the budget instead
   (``schedule_for``). An interrupted training resumes with ``--c`` when the same command is run
   again (a budget longer than a session spans sessions); its time is summed over the starts from
   nnU-Net's own training logs (``logged_spans``). Every fold gets the budget.
6. predict: ``nnUNetv2_predict`` on the fold's held-out source images (mirroring on, step 0.5:
   nnU-Net's defaults), with ``checkpoint_final.pth``; ``--continue_prediction`` on a re-run.
7. score: c2fnas's ``evaluate_folders`` against the source labels; per-case Dice, its mean and
   a 95% bootstrap interval over the cases.

The trainer is a subclass, ``nnUNetTrainerC2fnasPeer`` (and ``...Calibration``, the same in its
own results folder), written by this script as ``c2fnas_peer_trainer.py`` into the nnU-Net
environment's ``site-packages/nnunetv2/training/nnUNetTrainer/``: nnU-Net finds a trainer by
importing the modules of that package by name (``recursive_find_trainer_class_by_name``) and its
``nnUNet_extTrainer`` folders are searched only after all of its own subpackages, whose Primus
trainers fail to import without a working torchvision. The subclass changes only what the
benchmark sets: the epoch count (and, with ``--smoke``, the iterations per epoch) from the
environment, torch's threads (``nnUNetv2_train -device cpu`` takes every core), a checkpoint
after every epoch (for ``--c``) and no final validation (``nnUNetv2_predict`` does it, timed).

The budget here covers the training command of a fold; ``c2fnas run --time-budget`` covers its
whole run, preprocessing and prediction included (``hippocampus.py --run-budget 60m`` trained
fold 0 in it). Every phase's wall time is recorded, so both totals can be compared.

Threads: ``--threads`` torch threads for training and prediction (default: every usable core),
``--processes`` for nnU-Net's preprocessing and export pools; nnU-Net's augmentation processes
stay its default unless ``--augmentation-processes`` is given (0: in the main process). For a
fair comparison both tools run alone on the machine.

Usage::

    .venv/bin/python benchmarks/nnunet_peer.py --budget 60m --fold 0
    .venv/bin/python benchmarks/nnunet_peer.py --budget 60m --fold 0 1 2 3 4
    .venv/bin/python benchmarks/nnunet_peer.py --budget 3m --smoke   # every phase, 1 tiny epoch,
                                                                    # 4 held-out cases
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from c2fnas.costs.schedule import parse_duration
from c2fnas.data import splits
from c2fnas.data.convert import convert_dataset
from c2fnas.data.msd import Dataset, read_dataset
from c2fnas.data.nnunet import channel_file
from c2fnas.evaluation.metrics import evaluate_folders
from c2fnas.files.atomic import write_json_atomic, write_text_atomic

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import machine  # noqa: E402
from search_study import interval_of_cases  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "Task04_Hippocampus"
RESULTS = REPO / "benchmarks" / "results"
DATASET_ID = 4
CONFIGURATION = "3d_fullres"
PLANS = "nnUNetPlans"
TRAINER = "nnUNetTrainerC2fnasPeer"
CALIBRATION_TRAINER = f"{TRAINER}Calibration"
EPOCH_ITERATIONS = 250  # nnU-Net's training iterations per epoch (and 50 validation ones)
CALIBRATION_EPOCHS = 3  # the first warms up; the other two are timed
SMOKE_ITERATIONS = 2
MIN_EPOCHS = 10  # below it, shorter epochs fill the budget (``schedule_for``)
SMOKE_CASES = 4
log = logging.getLogger("nnunet_peer")

TRAINER_SOURCE = '''\
"""Written by c2fnas's benchmarks/nnunet_peer.py (and rewritten by it): nnU-Net's default
trainer with the benchmark's epochs, threads and checkpoints, timing its epochs."""

import json
import os
import time
from os.path import join

import torch

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerC2fnasPeer(nnUNetTrainer):
    """Epochs from C2FNAS_PEER_EPOCHS, iterations per epoch from C2FNAS_PEER_ITERATIONS (when
    set; validation a fifth of them), torch threads from C2FNAS_PEER_THREADS. Saves a checkpoint
    every epoch (for --c); leaves the final validation to nnUNetv2_predict."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        torch.set_num_threads(int(os.environ["C2FNAS_PEER_THREADS"]))
        self.num_epochs = int(os.environ["C2FNAS_PEER_EPOCHS"])
        iterations = os.environ.get("C2FNAS_PEER_ITERATIONS")
        if iterations:
            self.num_iterations_per_epoch = int(iterations)
            self.num_val_iterations_per_epoch = max(1, int(iterations) // 5)
        self.save_every = 1
        self.c2fnas_timing = {"epoch_starts": [], "iterations_ends": []}

    def on_epoch_start(self):
        self.c2fnas_timing["epoch_starts"].append(time.time())
        super().on_epoch_start()

    def on_epoch_end(self):  # after the epoch's iterations; before its log, plot and checkpoints
        self.c2fnas_timing["iterations_ends"].append(time.time())
        super().on_epoch_end()

    def on_train_end(self):
        timing = dict(self.c2fnas_timing, loop_end=time.time())
        with open(join(self.output_folder, "c2fnas_timing.json"), "w") as file:
            json.dump(timing, file)
        super().on_train_end()

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("final validation left to nnUNetv2_predict (c2fnas benchmark)")


class nnUNetTrainerC2fnasPeerCalibration(nnUNetTrainerC2fnasPeer):
    """The same in its own results folder: the calibration's epochs."""
'''


@dataclass(frozen=True)
class Peer:
    """Where nnU-Net runs and with how many threads and processes."""

    env: Path
    work: Path
    tag: str
    threads: int
    processes: int
    augmentation_processes: int | None

    @property
    def dataset(self) -> str:
        return f"Dataset{DATASET_ID:03d}_Hippocampus"

    @property
    def raw(self) -> Path:
        return self.work / "nnUNet_raw" / self.dataset

    @property
    def preprocessed(self) -> Path:
        return self.work / "nnUNet_preprocessed" / self.dataset

    @property
    def results(self) -> Path:
        return self.work / self.tag / "nnUNet_results"

    def output(self, trainer: str, fold: int) -> Path:
        return self.results / self.dataset / f"{trainer}__{PLANS}__{CONFIGURATION}" / f"fold_{fold}"

    def run(self, command: list[str], log_name: str, **variables: str) -> None:
        """Run nnU-Net's ``command`` from its environment, output into ``WORK/logs/``."""
        environment = dict(os.environ, **variables)
        environment.update(
            nnUNet_raw=str(self.work / "nnUNet_raw"),
            nnUNet_preprocessed=str(self.work / "nnUNet_preprocessed"),
            nnUNet_results=str(self.results),
            # nnUNet_def_n_proc caps the predictor's torch threads (its pools get -np options)
            nnUNet_def_n_proc=str(self.threads),
            C2FNAS_PEER_THREADS=str(self.threads),
        )
        logs = self.work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        path = logs / f"{log_name}.log"
        log.info("%s (output: %s)", " ".join(command), path)
        with open(path, "a") as output:
            finished = subprocess.run(
                [str(self.env / "bin" / command[0]), *command[1:]],
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if finished.returncode:
            raise SystemExit(f"{command[0]} failed (exit {finished.returncode}); see {path}")

    def training_variables(self, epochs: int, iterations: int | None) -> dict[str, str]:
        """The trainer's settings, and nnU-Net's augmentation processes (for training only: the
        planner sets torch's threads to that number, and 0 is no thread count)."""
        variables = {"C2FNAS_PEER_EPOCHS": str(epochs)}
        if iterations is not None:
            variables["C2FNAS_PEER_ITERATIONS"] = str(iterations)
        if self.augmentation_processes is not None:
            variables["nnUNet_n_proc_DA"] = str(self.augmentation_processes)
        return variables

    def probe(self) -> dict[str, str]:
        """nnU-Net's and its torch's versions and its trainer package folder."""
        code = (
            "import json, torch, nnunetv2.training.nnUNetTrainer as trainers;"
            "from importlib.metadata import version;"
            "print(json.dumps({'nnunetv2': version('nnunetv2'), 'torch': torch.__version__,"
            "'trainers': trainers.__path__[0]}))"
        )
        python = self.env / "bin" / "python"
        if not python.is_file():
            raise SystemExit(f"{python}: missing; install nnU-Net as this script's docstring says")
        output = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
        if output.returncode:
            raise SystemExit(f"{python} cannot import nnunetv2:\n{output.stderr[-2000:]}")
        probed: dict[str, str] = json.loads(output.stdout.strip().splitlines()[-1])
        return probed


class State:
    """A JSON file of finished phases (name -> record with its seconds); found ones are skipped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.phases: dict[str, dict[str, Any]] = (
            json.loads(path.read_text()) if path.is_file() else {}
        )

    def phase(self, name: str, action: Any) -> dict[str, Any]:
        """``action()``'s record, timed and saved, or the saved one."""
        if name in self.phases:
            log.info("%s: done before (%.0f s), skipped", name, self.phases[name]["seconds"])
            return self.phases[name]
        log.info("%s ...", name)
        started = time.perf_counter()
        record = dict(action() or {})
        record["seconds"] = round(time.perf_counter() - started, 1)
        self.phases[name] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self.phases)
        log.info("%s: %.0f s", name, record["seconds"])
        return record


def convert(dataset: Dataset, peer: Peer) -> dict[str, Any]:
    shutil.rmtree(peer.raw, ignore_errors=True)  # an interrupted conversion starts again
    peer.raw.parent.mkdir(parents=True, exist_ok=True)
    convert_dataset(dataset.root, peer.raw, "nnunet")
    return {"cases": len(dataset.training), "folder": str(peer.raw)}


def plan(peer: Peer) -> dict[str, Any]:
    processes = str(peer.processes)
    options = f"-d {DATASET_ID} -c {CONFIGURATION} -np {processes} -npfp {processes}"
    command = ["nnUNetv2_plan_and_preprocess", *options.split(), "--verify_dataset_integrity"]
    peer.run(command, "plan")
    plans = json.loads((peer.preprocessed / f"{PLANS}.json").read_text())
    configuration = plans["configurations"][CONFIGURATION]
    return {
        "patch": configuration["patch_size"],
        "batch": configuration["batch_size"],
        "spacing": configuration["spacing"],
    }


def write_splits(dataset: Dataset, peer: Peer, c2fnas_run: Path | None) -> list[splits.Fold]:
    """c2fnas's folds as nnU-Net's ``splits_final.json``.

    nnU-Net names a case by its label file (``labelsTr/CASE.nii.gz``); the conversion kept
    c2fnas's case ids as those names, which is checked here.
    """
    identifiers = {path.name.removesuffix(".nii.gz") for path in (peer.raw / "labelsTr").iterdir()}
    if identifiers != set(dataset.case_ids):
        raise SystemExit(f"{peer.raw}: its cases are not {dataset.root}'s; delete {peer.work}")
    if c2fnas_run is None:
        folds = splits.make_folds(dataset.case_ids)
    else:
        if not (c2fnas_run / "splits.json").is_file():
            raise SystemExit(f"{c2fnas_run / 'splits.json'}: missing; is it a c2fnas run folder?")
        folds = splits.load_or_create(c2fnas_run, dataset.case_ids)
    content = [{"train": fold.train, "val": fold.val} for fold in folds]
    write_json_atomic(peer.preprocessed / "splits_final.json", content)
    return folds


def train_command(trainer: str, fold: int) -> list[str]:
    """``nnUNetv2_train`` of ``trainer`` on ``fold``, on the CPU."""
    options = f"{DATASET_ID} {CONFIGURATION} {fold} -tr {trainer} -p {PLANS} -device cpu"
    return ["nnUNetv2_train", *options.split()]


def timing(output: Path) -> dict[str, Any]:
    """When the trainer's epochs started, when their iterations ended (before the epoch's log,
    plot and checkpoints) and when the last epoch ended, in seconds since 1970."""
    return dict(json.loads((output / "c2fnas_timing.json").read_text()))


def calibrate(peer: Peer, fold: int, iterations: int) -> dict[str, Any]:
    output = peer.output(CALIBRATION_TRAINER, fold)
    shutil.rmtree(output, ignore_errors=True)
    started = time.time()
    peer.run(
        train_command(CALIBRATION_TRAINER, fold),
        "calibrate",
        **peer.training_variables(CALIBRATION_EPOCHS, iterations),
    )
    wall = time.time() - started
    recorded = timing(output)
    starts, ends = recorded["epoch_starts"], recorded["iterations_ends"]
    following = [*starts[1:], recorded["loop_end"]]
    # The first epoch warms up; the iterations scale with their count, the epoch's end does not.
    iterations_seconds = float(np.mean([e - s for s, e in zip(starts, ends, strict=True)][1:]))
    end_seconds = float(np.mean([f - e for e, f in zip(ends, following, strict=True)][1:]))
    full = iterations_seconds * EPOCH_ITERATIONS / iterations + end_seconds
    return {
        "iterations_per_epoch": iterations,
        "iterations_seconds": round(iterations_seconds, 2),
        "epoch_end_seconds": round(end_seconds, 2),
        "epoch_seconds": round(full, 1),
        "startup_seconds": round(wall - (recorded["loop_end"] - starts[0]), 1),
    }


def epochs_for(budget: float, calibration: dict[str, Any]) -> int:
    """Full epochs that fit the budget after the training command's start-up and tear-down."""
    room = budget - float(calibration["startup_seconds"])
    return max(1, math.floor(room / float(calibration["epoch_seconds"])))


def schedule_for(budget: float, calibration: dict[str, Any]) -> tuple[int, int | None]:
    """The epochs and, where nnU-Net's 250-iteration epochs are too long, the iterations per
    epoch (None: nnU-Net's) that fill the budget.

    With fewer than ``MIN_EPOCHS`` full epochs in the budget, whole epochs would waste up to one
    epoch of it (or, when not even one fits, overrun it by most of one), and nnU-Net's poly
    learning rate, set per epoch, would fall in a few coarse steps: the epochs then get fewer
    iterations each (validation stays a fifth of them, nnU-Net's 250:50) so that ``MIN_EPOCHS``
    of them fill the budget. Only the epoch's length changes, not what an iteration does.
    """
    epochs = epochs_for(budget, calibration)
    if epochs >= MIN_EPOCHS:
        return epochs, None
    room = budget - float(calibration["startup_seconds"])
    per_iteration = float(calibration["iterations_seconds"]) / calibration["iterations_per_epoch"]
    epoch = room / MIN_EPOCHS - float(calibration["epoch_end_seconds"])
    return MIN_EPOCHS, max(1, math.floor(epoch / per_iteration))


def train(peer: Peer, fold: int, epochs: int, iterations: int | None) -> dict[str, Any]:
    output = peer.output(TRAINER, fold)
    resume = any(
        (output / name).is_file() for name in ("checkpoint_latest.pth", "checkpoint_best.pth")
    )
    command = train_command(TRAINER, fold) + (["--c"] if resume else [])
    peer.run(command, f"train_fold{fold}", **peer.training_variables(epochs, iterations))
    recorded = timing(output)
    starts = recorded["epoch_starts"]
    spent = recorded["loop_end"] - starts[0] if starts else 0.0
    spans = logged_spans(output)
    return {
        "epochs": epochs,
        "iterations_per_epoch": iterations or EPOCH_ITERATIONS,
        "resumed": resume,
        "epochs_this_call": len(starts),
        "epochs_seconds_this_call": round(spent, 1),
        "epoch_seconds_measured": round(spent / len(starts), 1) if starts else None,
        "starts": len(spans),
        "seconds_over_starts": round(sum(spans), 1),
    }


def logged_spans(output: Path) -> list[float]:
    """Seconds from the first to the last line of each of nnU-Net's training logs in ``output``
    (one per start of ``nnUNetv2_train``): a training stopped (the session ended) and resumed with
    ``--c`` is timed over all its starts, the stopped ones included, which left no other record.
    The few seconds before a start's first line (imports) are left out."""
    spans = []
    for path in sorted(output.glob("training_log_*.txt")):
        stamps = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                stamps.append(datetime.strptime(line[:26], "%Y-%m-%d %H:%M:%S.%f"))
            except ValueError:
                continue  # nnU-Net's banner and configuration lines carry no time
        if stamps:
            spans.append((stamps[-1] - stamps[0]).total_seconds())
    return spans


def held_out_folder(dataset: Dataset, case_ids: list[str], folder: Path) -> None:
    """``images/CASE_0000.nii.gz`` and ``labels/CASE.nii.gz``: links to the source files."""
    cases = {case.case_id: case for case in dataset.training}
    shutil.rmtree(folder, ignore_errors=True)
    for kind in ("images", "labels"):
        (folder / kind).mkdir(parents=True)
    for case_id in case_ids:
        case = cases[case_id]
        assert case.label is not None
        for channel, image in enumerate(case.images):
            (folder / "images" / channel_file(case_id, channel, ".nii.gz")).symlink_to(image)
        (folder / "labels" / f"{case_id}.nii.gz").symlink_to(case.label)


def predict(peer: Peer, fold: int, folder: Path) -> dict[str, Any]:
    options = (
        f"-d {DATASET_ID} -c {CONFIGURATION} -tr {TRAINER} -p {PLANS} -f {fold} "
        f"-chk checkpoint_final.pth -device cpu -npp {peer.processes} -nps {peer.processes}"
    )
    folders = ["-i", str(folder / "images"), "-o", str(folder / "predictions")]
    peer.run(
        [
            "nnUNetv2_predict",
            *folders,
            *options.split(),
            "--continue_prediction",
            "--disable_progress_bar",
        ],
        f"predict_fold{fold}",
    )
    return {"cases": len(list((folder / "labels").iterdir()))}


def score(dataset: Dataset, folder: Path) -> dict[str, Any]:
    """Dice per case and class (by class name) from c2fnas's evaluation."""
    names = {value: name.lower() for value, name in dataset.labels.items() if value}
    scores = evaluate_folders(folder / "predictions", folder / "labels", labels=sorted(names))
    cases: dict[str, dict[str, float]] = {}
    for row in scores:
        cases.setdefault(row.case, {})[names[row.label]] = row.dice
    return {"dice": cases}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default="60m", help="training time, e.g. 60m or 1h30m")
    parser.add_argument("--fold", type=int, nargs="+", default=[0], choices=range(5))
    parser.add_argument("--data", type=Path, default=DATA, help="Task04_Hippocampus (MSD) folder")
    parser.add_argument(
        "--work",
        type=Path,
        default=REPO.parent / "nnunet-peer",
        help="nnU-Net's folders, logs and phase records (outside the repository)",
    )
    parser.add_argument("--out", type=Path, help="JSON (default results/nnunet_peer_BUDGET.json)")
    parser.add_argument("--nnunet-env", type=Path, default=REPO.parent / "nnunet-env")
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="torch threads (default: every usable core)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="nnU-Net's preprocessing and export processes (default: --threads)",
    )
    parser.add_argument(
        "--augmentation-processes",
        type=int,
        default=None,
        help="nnUNet_n_proc_DA (default: nnU-Net's; 0: in the main process)",
    )
    parser.add_argument("--calibration-iterations", type=int, default=25)
    parser.add_argument(
        "--test-cases", type=int, help="predict and score only the fold's first N held-out cases"
    )
    parser.add_argument("--c2fnas-run", type=Path, help="use this c2fnas run folder's splits.json")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"check every phase: calibrate and train {SMOKE_ITERATIONS}-iteration "
        f"epochs, train one; --test-cases {SMOKE_CASES} unless given",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    budget = parse_duration(args.budget)
    tag = f"budget-{args.budget}" + ("-smoke" if args.smoke else "")
    peer = Peer(
        args.nnunet_env.resolve(),
        args.work.resolve(),
        tag,
        args.threads,
        args.processes or args.threads,
        args.augmentation_processes,
    )
    versions = peer.probe()
    trainer_file = Path(versions.pop("trainers")) / "c2fnas_peer_trainer.py"
    if not trainer_file.is_file() or trainer_file.read_text() != TRAINER_SOURCE:
        write_text_atomic(trainer_file, TRAINER_SOURCE)
    dataset = read_dataset(args.data)
    started = time.perf_counter()
    shared, state = State(peer.work / "state.json"), State(peer.work / tag / "state.json")
    shared.phase("convert", lambda: convert(dataset, peer))
    shared.phase("plan", lambda: plan(peer))
    folds = write_splits(dataset, peer, args.c2fnas_run)
    iterations = SMOKE_ITERATIONS if args.smoke else args.calibration_iterations
    calibration = state.phase("calibrate", lambda: calibrate(peer, args.fold[0], iterations))
    epochs, epoch_iterations = (
        (1, SMOKE_ITERATIONS) if args.smoke else schedule_for(budget, calibration)
    )
    log.info(
        "%.0f s per epoch of %d iterations -> %d epochs of %d iterations in %s",
        calibration["epoch_seconds"], EPOCH_ITERATIONS, epochs,
        epoch_iterations or EPOCH_ITERATIONS, args.budget,
    )  # fmt: skip
    test_cases = args.test_cases or (SMOKE_CASES if args.smoke else None)
    held_out = f"_{test_cases}cases" if test_cases else ""  # a phase of its own
    rows = []
    for fold in args.fold:
        folder = peer.work / tag / f"fold_{fold}{held_out}"
        case_ids = folds[fold].val[:test_cases]
        trained = state.phase(
            f"train_fold{fold}",
            lambda fold=fold: train(peer, fold, epochs, epoch_iterations),
        )

        def predicted(fold: int = fold, folder: Path = folder, ids: list[str] = case_ids) -> Any:
            if not (folder / "images").is_dir():  # a re-run keeps the predictions made
                held_out_folder(dataset, ids, folder)
            return predict(peer, fold, folder)

        prediction = state.phase(f"predict_fold{fold}{held_out}", predicted)
        scored = state.phase(
            f"score_fold{fold}{held_out}", lambda folder=folder: score(dataset, folder)
        )
        rows.append(
            {
                "fold": fold,
                "held_out": case_ids,
                "train": trained,
                "predict": prediction,
                "dice": scored["dice"],
                "score_seconds": scored["seconds"],
            }
        )
    report = summary(
        args, peer, versions, budget, calibration, epochs, epoch_iterations, rows, shared, state
    )
    report["seconds_this_call"] = round(time.perf_counter() - started, 1)
    out = args.out or RESULTS / f"nnunet_peer_{args.budget}{'_smoke' if args.smoke else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    show(report)
    log.info("wrote %s", out)


def summary(
    args: argparse.Namespace,
    peer: Peer,
    versions: dict[str, str],
    budget: float,
    calibration: dict[str, Any],
    epochs: int,
    epoch_iterations: int | None,
    rows: list[dict[str, Any]],
    shared: State,
    state: State,
) -> dict[str, Any]:
    per_case = [np.mean(list(dice.values())) for row in rows for dice in row["dice"].values()]
    classes = sorted({name for row in rows for dice in row["dice"].values() for name in dice})
    return {
        "dataset": str(args.data),
        "split": "c2fnas's 5 folds: "
        + (f"{args.c2fnas_run}/splits.json" if args.c2fnas_run else "dataset order, 5 chunks"),
        "folds": args.fold,
        "configuration": f"{CONFIGURATION} ({PLANS}), trainer {TRAINER}",
        "plans": shared.phases["plan"],
        "budget": args.budget,
        "budget_seconds": budget,
        "budget_covers": "the nnUNetv2_train command (start-up, epochs, tear-down) per fold",
        "smoke": args.smoke,
        "threads": peer.threads,
        "processes": peer.processes,
        "augmentation_processes": peer.augmentation_processes,
        "versions": {
            "c2fnas": version("c2fnas"),
            "nnunetv2": versions["nnunetv2"],
            "torch_nnunet": versions["torch"],
        },
        "machine": machine.describe(),
        "calibration": calibration,
        "epochs": epochs,
        "iterations_per_epoch": epoch_iterations or EPOCH_ITERATIONS,
        "full_epochs_for_budget": epochs_for(budget, calibration),
        "seconds_per_phase": {  # a training resumed: over all its starts, from nnU-Net's logs
            name: max(record["seconds"], record.get("seconds_over_starts", 0.0))
            for states in (shared, state)
            for name, record in states.phases.items()
        },
        "results": rows,
        "dice_per_class": {
            name: float(np.mean([dice[name] for row in rows for dice in row["dice"].values()]))
            for name in classes
        },
        "mean_dice": interval_of_cases(np.array(per_case)),
        "held_out_cases": len(per_case),
    }


def show(report: dict[str, Any]) -> None:
    table = Table(
        title=f"nnU-Net v2 {report['versions']['nnunetv2']} {CONFIGURATION}",
        caption=f"{report['budget']} training per fold; {report['threads']} threads on "
        f"{report['machine']['cpu']}",
    )
    for column in ("phase", "wall (min)"):
        table.add_column(column, justify="right")
    for name, seconds in report["seconds_per_phase"].items():
        table.add_row(name, f"{seconds / 60:.1f}")
    Console().print(table)
    scores = Table(
        title="held-out Dice (c2fnas's evaluation)",
        caption=f"{report['epochs']} epochs of {report['iterations_per_epoch']} iterations "
        f"(a full one of {EPOCH_ITERATIONS}: ~{report['calibration']['epoch_seconds']:.0f} s, "
        f"{report['full_epochs_for_budget']} in the budget); all: mean [95% bootstrap]",
    )
    classes = list(report["dice_per_class"])
    for column in ("fold", "cases", *classes, "mean Dice"):
        scores.add_column(column, justify="right")
    for row in report["results"]:
        cases = list(row["dice"].values())
        means = [np.mean([dice[name] for dice in cases]) for name in classes]
        scores.add_row(
            str(row["fold"]), str(len(cases)), *(f"{m:.4f}" for m in means), f"{np.mean(means):.4f}"
        )
    mean = report["mean_dice"]
    scores.add_row(
        "all",
        str(report["held_out_cases"]),
        *(f"{report['dice_per_class'][name]:.4f}" for name in classes),
        f"{mean['mean']:.4f} [{mean['low']:.4f}, {mean['high']:.4f}]",
    )
    Console().print(scores)


if __name__ == "__main__":
    main()
