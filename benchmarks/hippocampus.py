"""C2FNAS-Panc against MONAI's DynUNet (the nnU-Net network) on MSD Task04 Hippocampus.

Both networks train with the same loop, loss (Dice + CE), optimiser (SGD 0.02, momentum 0.9,
weight decay 4e-5), warm-up and step decay, patches, augmentation and precision, for the same
wall-clock budget each. The split is fixed: the run's 5 folds in dataset order; folds 1-4 train
and fold 5 (40 cases) is held out and scored once at the end (no model selection on it).

The number of iterations that fits the budget is measured first (a few timed steps), then the
schedule is laid out over it: warm-up over the first 5%, x0.5 at 60% and 85%. Steps are timed in
CPU seconds of the process, not wall-clock seconds, so that other jobs on a shared machine change
the wall time (reported) but not the compute each model gets; with ``--threads 1`` a CPU second
is a wall-clock second of an unloaded core. Each model trains in its own process so its peak
memory (max RSS) is its own.

``--run-budget 60m`` measures instead what a user gets from the README's one command, ``c2fnas run
DATA --run RUN --arch architectures/c2fnas-panc.json --time-budget 60m`` (planned from the data,
this machine and the budget): its wall time against the budget, the planned against the spent time
per stage, the mean validation Dice of the folds it trained and the out-of-fold Dice of the
training cases in their own geometry, written to
``benchmarks/results/hippocampus_run_<panc|search>_<budget>.json``. ``--search`` leaves out
``--arch``, so the budget also covers what the plan searches. ``--folds 0`` passes ``--folds 0``
to ``c2fnas run`` (one model gets the whole budget: the per-model match of a peer that trains one
fold in it) and adds ``_folds0`` to the run's and the record's names. A run stopped by the end of
a session resumes when the same command is run again; the wall time adds up the starts.

Usage::

    python benchmarks/hippocampus.py --budget-minutes 30
    python benchmarks/hippocampus.py --run-budget 60m          # the README's one command
    python benchmarks/hippocampus.py --run-budget 3h --search  # with a search
    python benchmarks/hippocampus.py --run-budget 60m --folds 0  # one model in the budget
    python benchmarks/hippocampus.py --budget-minutes 12 --threads 1 --parallel  # shared CPU
    python benchmarks/hippocampus.py --budget-minutes 1 --test-cases 4   # a quick check
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.networks.nets import DynUNet
from rich.console import Console
from rich.table import Table
from torch import nn

from c2fnas.accel.precision import autocast, memory_format, resolve_precision
from c2fnas.accel.process import keep_freed_memory, start_governor
from c2fnas.accel.swap import accelerate
from c2fnas.costs.profile import estimate_cost
from c2fnas.costs.schedule import parse_duration
from c2fnas.data import loader, splits
from c2fnas.data.msd import read_dataset
from c2fnas.data.pipeline import cached_case_ids, preprocess_dataset
from c2fnas.data.preprocess import Plan
from c2fnas.evaluation.metrics import evaluate_folders, summarize
from c2fnas.files.atomic import write_json_atomic
from c2fnas.files.run_folder import RunFolder
from c2fnas.files.run_state import PredictResult, RunState, TrainResult
from c2fnas.inference.postprocess import Postprocessing
from c2fnas.inference.predict import predict_folder
from c2fnas.nn import C2FNet
from c2fnas.space import Architecture
from c2fnas.training.config import DataConfig, RunConfig, TrainingConfig, load_config
from c2fnas.training.loop import fit
from c2fnas.training.run import stream_seed

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import machine  # noqa: E402
from search_study import interval_of_cases  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "Task04_Hippocampus"
RESULTS = REPO / "benchmarks" / "results"
MODELS = ("c2fnas-panc", "dynunet")
CALIBRATION_STEPS = 6
log = logging.getLogger("hippocampus")


def build(model: str, width: float, classes: int) -> tuple[nn.Module, Architecture | None]:
    """The network and, for C2FNAS, its architecture."""
    torch.manual_seed(0)
    if model == "c2fnas-panc":
        architecture = Architecture.load(REPO / "architectures" / "c2fnas-panc.json")
        architecture = architecture.with_width(width)
        return accelerate(C2FNet(architecture, 1, classes)), architecture
    # nnU-Net's 3d_fullres layout for a patch this size: 5 resolutions (4 poolings of 2),
    # 32 base filters doubling up to 320, instance norm, leaky ReLU, transposed-conv upsampling.
    # Deep supervision is left out so both networks see the same loss.
    network = DynUNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=classes,
        kernel_size=[3, 3, 3, 3, 3],
        strides=[1, 2, 2, 2, 2],
        upsample_kernel_size=[2, 2, 2, 2],
        filters=[32, 64, 128, 256, 320],
        norm_name="instance",
        act_name=("leakyrelu", {"negative_slope": 0.01, "inplace": True}),
    )
    return network, None


def make_config(args: argparse.Namespace, iterations: int) -> RunConfig:
    return RunConfig(
        data=DataConfig(patch=tuple(args.patch), batch_size=args.batch, workers=0),
        training=TrainingConfig(
            iterations=iterations,
            milestones=tuple(sorted({max(1, round(iterations * f)) for f in (0.6, 0.85)})),
            warmup_iterations=max(1, iterations // 20),
            precision=args.precision,
            validate_every=iterations,  # only once, at the end, on the held-out fold
            checkpoint_every=iterations,
            stride=args.stride,
            window_batch=2,
            tensorboard=False,
        ),
    )


def seconds_per_step(network: nn.Module, batches: Any, config: RunConfig) -> float:
    """Median CPU time of a training step (forward, loss, backward, SGD) after two warm-ups."""
    from monai.losses import DiceCELoss

    cpu = torch.device("cpu")
    precision = resolve_precision(config.training.precision, cpu)
    network = network.to(memory_format=memory_format(cpu))
    optimizer = torch.optim.SGD(network.parameters(), lr=1e-4, momentum=0.9)
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    times = []
    for _ in range(CALIBRATION_STEPS + 2):
        batch = next(batches)
        started = time.process_time()
        with autocast(precision, cpu):
            logits = network(batch["image"].to(memory_format=memory_format(cpu)))
        loss = loss_function(logits.float(), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.process_time() - started)
    return sorted(times[2:])[len(times[2:]) // 2]


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """Train and score one model in this process; returns its result row."""
    run_dir = args.work / "run"
    plan = Plan.load(run_dir)
    folds = splits.load_or_create(run_dir, cached_case_ids(run_dir))
    train_ids, test_ids = folds[4].train, folds[4].val[: args.test_cases]
    config = make_config(args, 1)

    def batches(start: int) -> Any:
        seed = stream_seed(args.seed, 0, start)
        return loader.train_batches(run_dir, train_ids, args.patch, args.batch, seed)

    network, architecture = build(args.only, args.width, plan.num_classes)
    cost = estimate_cost(network, (1, 1, *args.patch))
    step = seconds_per_step(network, batches(10**6), config)
    # The end-of-run validation is not part of the training budget; it is timed on its own.
    iterations = max(10, int(args.budget_minutes * 60 / step))
    log.info("%s: %.2f CPU s per step -> %d iterations", args.only, step, iterations)
    network, architecture = build(args.only, args.width, plan.num_classes)
    config = make_config(args, iterations)
    shutil.rmtree(args.work / args.only, ignore_errors=True)  # a benchmark always starts afresh
    started, cpu_started = time.perf_counter(), time.process_time()
    result = fit(
        network, architecture, batches,
        lambda: loader.validation_cases(run_dir, test_ids), config,
        args.work / args.only, resume=False, progress=_progress(iterations),
        governor=start_governor(),
        model_info={"benchmark": args.only, "in_channels": 1, "num_classes": plan.num_classes,
                    "plan": plan.model_dump(mode="json")},
    )  # fmt: skip
    total, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    history = result.history["loss"]
    variants = None
    if architecture is not None:  # a c2fnas model folder: score the way `c2fnas predict` does
        variants = score_variants(args, test_ids, args.work / args.only / "best")
    return {
        "model": args.only,
        "width": args.width if args.only == "c2fnas-panc" else None,
        "params_millions": cost.params / 1e6,
        "gmacs_per_patch": cost.macs / 1e9,
        "seconds_per_step_calibrated": step,
        "iterations": iterations,
        "train_plus_eval_seconds": total,
        "train_plus_eval_cpu_seconds": cpu,
        "final_loss": sum(item[1] for item in history[-20:]) / len(history[-20:]),
        "held_out_cases": len(test_ids),
        "dice_per_class": dict(zip(("anterior", "posterior"), result.best_dice, strict=False)),
        "mean_dice": result.best_mean,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "held_out_prediction": variants,
    }


VARIANTS = {"plain": (False, False), "tta": (True, False), "largest component": (False, True),
            "tta + largest component": (True, True)}  # fmt: skip
"""Prediction variants scored on the held-out cases: (mirroring, largest component per class)."""


def score_variants(args: argparse.Namespace, case_ids: list[str], model: Path) -> dict[str, Any]:
    """Mean held-out Dice of ``c2fnas predict`` from the source images, in their geometry, with
    and without test-time mirroring and with and without keeping each class's largest connected
    component (here in every class: the benchmark has no out-of-fold predictions to choose
    by), and the seconds each variant took."""
    dataset = {case.case_id: case for case in read_dataset(args.data).training}
    folder = args.work / "held-out"
    shutil.rmtree(folder, ignore_errors=True)
    for kind in ("images", "labels"):
        (folder / kind).mkdir(parents=True)
    for case_id in case_ids:
        case = dataset[case_id]
        assert case.label is not None
        (folder / "images" / case.image.name).symlink_to(case.image)
        (folder / "labels" / case.label.name).symlink_to(case.label)
    every_class = Postprocessing(largest_component=(1, 2)).save(folder / "postprocessing.json")
    scores = {}
    for name, (tta, largest) in VARIANTS.items():
        out = folder / name.replace(" ", "_").replace("+", "and")
        started = time.perf_counter()
        predict_folder(
            [model], folder / "images", out, stride=args.stride, precision=args.precision,
            tta=tta, postprocess=str(every_class) if largest else "none",
        )  # fmt: skip
        seconds = time.perf_counter() - started
        summary = summarize(evaluate_folders(out, folder / "labels"))
        per_label = summary["labels"]
        assert isinstance(per_label, dict)
        dice = {
            label: per_label[str(value)]["dice_mean"]
            for value, label in ((1, "anterior"), (2, "posterior"))
        }
        scores[name] = {
            "dice_per_class": dice,
            "mean_dice": sum(dice.values()) / 2,
            "seconds": round(seconds, 1),
        }
        log.info("held-out %s: mean Dice %.4f in %.0f s", name, scores[name]["mean_dice"], seconds)
    return scores


def _progress(total: int) -> Any:
    every = max(1, total // 20)

    def report(done: int, _: int, metrics: dict[str, float]) -> None:
        if done % every == 0 or done == total:
            log.info("iteration %d/%d loss %.4f", done, total, metrics["loss"])

    return report


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="Task04_Hippocampus folder")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "hippocampus-benchmark")
    parser.add_argument(
        "--budget-minutes", type=float, default=30.0, help="training time per model"
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--width", type=float, default=0.25, help="C2FNAS width multiplier")
    parser.add_argument("--patch", type=int, nargs=3, default=[32, 48, 32])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--stride", type=int, default=16, help="sliding-window step (paper: 16)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--test-cases", type=int, default=None, help="score only the first N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per model (default: torch's choice). On a CPU shared with other "
        "jobs use 1: OpenMP threads spinning against another job's threads can make a step 10x "
        "slower.",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON (default: results/)")
    parser.add_argument(
        "--run-budget",
        metavar="DURATION",
        help="time `c2fnas run --time-budget DURATION` with C2FNAS-Panc (see above) instead",
    )
    parser.add_argument(
        "--search", action="store_true", help="with --run-budget: search, leave out --arch"
    )
    parser.add_argument(
        "--folds",
        type=int,
        nargs="+",
        choices=range(5),
        help="with --run-budget: the folds `c2fnas run` trains (default: what it plans)",
    )
    parser.add_argument(
        "--accept-changed-data",
        action="store_true",
        help="with --run-budget: pass --accept-changed-data to a resumed run (the dataset was "
        "copied again, same contents, new modification times); the start records it",
    )
    parser.add_argument(
        "--parallel",
        action="store_true",
        help="train the models at the same time (with --threads 1 on a machine with a core each)",
    )
    parser.add_argument("--only", choices=MODELS, help=argparse.SUPPRESS)  # the child process
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.run_budget:
        run_mode(args)
        return
    args.out = args.out or RESULTS / "hippocampus.json"
    keep_freed_memory()  # as the c2fnas command line does
    if args.only:
        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(run_one(args)))
        return
    started = time.perf_counter()
    summary = preprocess_dataset(args.data, args.work / "run", workers=2)
    log.info("preprocessed: %d written, %d cached", len(summary.written), len(summary.skipped))
    children = []
    for model in args.models:
        command = [sys.executable, __file__, *(argv or sys.argv[1:]), "--only", model]
        children.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
        if not args.parallel:
            children[-1].wait()
    rows = []
    for model, child in zip(args.models, children, strict=True):
        output, _ = child.communicate()
        if child.returncode:
            raise SystemExit(f"{model}: the training process failed (exit {child.returncode})")
        rows.append(json.loads(output.strip().splitlines()[-1]))
    report = {
        "dataset": str(args.data),
        "split": "5 folds in dataset order; train on folds 1-4, score fold 5",
        "budget_minutes_per_model": args.budget_minutes,
        "patch": args.patch, "batch": args.batch, "stride": args.stride,
        "precision": resolve_precision(args.precision, torch.device("cpu")),
        "threads": args.threads or torch.get_num_threads(),
        "parallel": args.parallel,
        "machine": machine.describe(),
        "results": rows,
        "seconds": time.perf_counter() - started,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    show(rows, args)


def run_mode(args: argparse.Namespace) -> None:
    """Run ``c2fnas run`` as a user would and record its time against the budget and its Dice.

    A run folder that exists is resumed (the same command continues a run stopped by the end
    of a session, from its plan and checkpoints). Every start of this mode is appended to
    ``RUN.starts.json`` (its wall seconds, also when stopped by SIGTERM or Ctrl-C), and the
    record's wall time is the sum over the starts: the run's own spent time, whatever the number
    of sessions. Delete ``--work`` for a clean measurement.
    """
    budget = parse_duration(args.run_budget)
    kind = "search" if args.search else "panc"
    name = f"{kind}_{args.run_budget}" + (
        f"_folds{''.join(map(str, args.folds))}" if args.folds else ""
    )
    run_dir = args.work / f"run-{name.replace('_', '-')}"
    starts_file = run_dir.parent / f"{run_dir.name}.starts.json"
    command = [sys.executable, "-m", "c2fnas", "run", str(args.data), "--run", str(run_dir),
               "--time-budget", args.run_budget]  # fmt: skip
    if not args.search:
        command += ["--arch", str(REPO / "architectures" / "c2fnas-panc.json")]
    if args.folds:
        command += ["--folds", *map(str, args.folds)]
    if args.accept_changed_data:
        command.append("--accept-changed-data")
    log.info("running: %s", " ".join(command))
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    starts = json.loads(starts_file.read_text()) if starts_file.is_file() else []
    started = time.perf_counter()
    start = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resumed": run_dir.exists(),
             "cpu": machine.describe()["cpu"],
             "accepted_changed_data": args.accept_changed_data}  # fmt: skip
    log_path = run_dir.parent / f"{run_dir.name}.log"
    returncode: int | None = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally below still runs

    def record_start() -> None:
        """This start's wall seconds so far, rewritten every minute: a machine that goes away
        with the session (no signal) loses at most a minute of the account."""
        entry = {**start, "wall_seconds": round(time.perf_counter() - started, 1),
                 "exit": child.returncode}  # fmt: skip
        write_json_atomic(starts_file, [*starts, entry])

    with open(log_path, "a") as output:
        child = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            while returncode is None:
                try:
                    returncode = child.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    record_start()
        except KeyboardInterrupt:
            child.wait()  # Ctrl-C reached the child too: it stops cleanly
        finally:
            if child.poll() is None:
                child.terminate()
                child.wait()
            record_start()
    starts = json.loads(starts_file.read_text())
    if returncode:
        raise SystemExit(f"c2fnas run failed (exit {returncode}); see {log_path}")
    wall = sum(entry["wall_seconds"] for entry in starts)
    state = RunState.read(RunFolder(run_dir).pipeline_state)
    trained = state.result("train", TrainResult)
    predicted = state.result("predict", PredictResult)
    assert trained is not None, "c2fnas run finished without its train stage"
    fold_dice = list(trained.fold_dice)
    plan = load_config("paper", run_dir / "plan.yaml")
    report = {
        "command": " ".join(["c2fnas", *command[3:]]),
        "starts": starts,
        "budget_seconds": budget,
        "wall_seconds": round(wall, 1),
        "within_budget_plus_10_percent": wall <= 1.1 * budget,
        "search_mode": plan.search.mode,
        "architecture": trained_architecture(run_dir, trained.folds or range(5)),
        "folds": list(trained.folds or range(5)),
        "fold_dice": fold_dice,
        "mean_fold_dice": sum(fold_dice) / len(fold_dice),
        "out_of_fold": out_of_fold_dice(run_dir, args.data),
        "iterations_per_fold": [  # each fold's own schedule: re-fits before later folds
            load_config("paper", RunFolder(run_dir).fold(fold).config).training.iterations
            for fold in trained.folds or range(5)
        ],
        "planned_iterations_per_fold": plan.training.iterations,
        "refits": [asdict(refit) for refit in state.refits],
        "patch": list(plan.data.patch),
        "width": plan.search.width,
        "test_cases_predicted": predicted.cases if predicted is not None else None,
        "spent_seconds": {stage: record.seconds for stage, record in state.stages.items()},
        "planned_seconds": dict(state.planned) if state.planned is not None else None,
        "machine": machine.describe(),
    }
    out = args.out or RESULTS / f"hippocampus_run_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    table = Table(title=f"{report['command']}  ({report['machine']['cpu']})")
    for column in ("budget", "wall", "starts", "within +10%", "folds", "fold Dice", "mean",
                   "out-of-fold (95%)"):  # fmt: skip
        table.add_column(column, justify="right")
    oof = report["out_of_fold"]
    table.add_row(
        f"{budget / 60:.0f} min", f"{wall / 60:.1f} min", str(len(starts)),
        str(report["within_budget_plus_10_percent"]),
        ", ".join(map(str, report["folds"])), ", ".join(f"{d:.4f}" for d in fold_dice),
        f"{report['mean_fold_dice']:.4f}",
        f"{oof['mean']:.4f} [{oof['low']:.4f}, {oof['high']:.4f}] ({oof['cases']} cases)"
        if oof else "-",
    )  # fmt: skip
    Console().print(table)
    log.info("wrote %s", out)


def trained_architecture(run_dir: Path, folds: Sequence[int]) -> dict[str, Any]:
    """The architecture the run trained (searched, or given with ``--arch``), as its first
    fold's model records it."""
    return Architecture.load(RunFolder(run_dir).fold(folds[0]).last / "architecture.json").to_dict()


def out_of_fold_dice(run_dir: Path, data: Path) -> dict[str, Any] | None:
    """Mean Dice of the run's out-of-fold predictions (``RUN_DIR/crossval``, in the source
    images' geometry) against the source labels, with a 95% bootstrap interval over cases, and
    each case's Dice (mean over the foreground classes) for paired comparisons with peers."""
    crossval = RunFolder(run_dir).crossval
    if not crossval.is_dir():
        return None
    with tempfile.TemporaryDirectory() as labels:  # the labels of the cases predicted
        for prediction in crossval.glob("*.nii*"):
            (Path(labels) / prediction.name).symlink_to(
                (data / "labelsTr" / prediction.name).resolve()
            )
        scores = evaluate_folders(crossval, labels)
    per_case: dict[str, list[float]] = {}
    for score in scores:
        per_case.setdefault(score.case, []).append(score.dice)
    means = {case: float(np.mean(values)) for case, values in sorted(per_case.items())}
    summary = interval_of_cases(np.array(list(means.values())))
    return {"cases": len(means), **summary, "per_case": means}


def show(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    table = Table(title=f"Hippocampus, held-out fold, {args.budget_minutes:g} min training each")
    for column in ("model", "params", "GMACs/patch", "iterations", "anterior", "posterior",
                   "mean Dice", "time (s)", "peak RSS (GiB)"):  # fmt: skip
        table.add_column(column, justify="right")
    for row in rows:
        dice = row["dice_per_class"]
        table.add_row(
            row["model"] + (f" x{row['width']:g}" if row["width"] else ""),
            f"{row['params_millions']:.2f} M", f"{row['gmacs_per_patch']:.2f}",
            str(row["iterations"]), f"{dice.get('anterior', math.nan):.4f}",
            f"{dice.get('posterior', math.nan):.4f}", f"{row['mean_dice']:.4f}",
            f"{row['train_plus_eval_seconds']:.0f}", f"{row['peak_rss_gib']:.2f}",
        )  # fmt: skip
    Console().print(table)
    for row in rows:
        if not row.get("held_out_prediction"):
            continue
        variants = Table(title=f"{row['model']}: held-out prediction from the source images")
        for column in ("variant", "anterior", "posterior", "mean Dice", "time (s)"):
            variants.add_column(column, justify="right")
        for name, score in row["held_out_prediction"].items():
            dice = score["dice_per_class"]
            variants.add_row(
                name, f"{dice['anterior']:.4f}", f"{dice['posterior']:.4f}",
                f"{score['mean_dice']:.4f}", f"{score['seconds']:.0f}",
            )  # fmt: skip
        Console().print(variants)


if __name__ == "__main__":
    main()
