"""``c2fnas plan`` and ``c2fnas run``: plan a run from the data, the device and a time budget;
run every stage from data to evaluated predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from c2fnas.accel.process import start_governor
from c2fnas.cli.display import UserError, console, fail, pipeline_progress, progress_bar
from c2fnas.cli.options import (
    SEARCH_HELP,
    ConfigOption,
    DatasetFolder,
    folder_and_numbers,
    gpu_count,
    holding,
    search_mode,
)
from c2fnas.cli.stopping import stop_code, stoppable, stopped
from c2fnas.costs.schedule import BudgetError, parse_duration
from c2fnas.data.msd import DatasetError
from c2fnas.files.run_folder import RunFolder
from c2fnas.files.run_state import RunState, RunStateError
from c2fnas.space import Architecture, ArchitectureError
from c2fnas.training.config import load_config

app = typer.Typer()


@app.command("plan")
def plan(
    dataset_dir: DatasetFolder,
    run: Annotated[Path, typer.Option("--run", help="Run folder to write plan.yaml into.")],
    time_budget: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Wall-clock budget of the whole run: 45m, 8h, 3d (default: paper).",
        ),
    ] = None,
    arch: Annotated[
        Path | None, typer.Option("--arch", help="Train this architecture: no search planned.")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="cpu or cuda (default: cuda when available).")
    ] = None,
    gpus: Annotated[
        int | None, typer.Option(help="GPUs (search workers; default: all visible).")
    ] = None,
    search: Annotated[str | None, typer.Option(metavar="MODE", help=SEARCH_HELP)] = None,
) -> None:
    """Plan a run from the data, the device and a time budget: writes RUN/plan.yaml for --config."""
    import torch  # heavy: see the package docstring

    from c2fnas.planning import PlanError, plan_run

    try:
        budget = parse_duration(time_budget) if time_budget is not None else None
        architecture = Architecture.load(arch) if arch is not None else None
        forced = search_mode(search)
        if device not in (None, "cpu", "cuda"):
            raise UserError(f"--device {device}: choose cpu or cuda")
        if device == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is visible")
    except (ValueError, OSError, ArchitectureError, UserError) as error:
        raise fail(str(error)) from None
    target = torch.device(device) if device else None
    try:
        bar, update = progress_bar()
        with holding(RunFolder(run).lock), bar:
            planned = plan_run(
                dataset_dir, run, budget, architecture, target,
                gpus=gpus if gpus is not None else gpu_count(), progress=update, search=forced,
            )  # fmt: skip
            path = planned.write(run)
    except (DatasetError, PlanError, BudgetError, OSError) as error:
        raise fail(str(error), code=1) from None
    table = Table(title=f"c2fnas plan: {dataset_dir}")
    for column in ("setting", "value", "reason"):
        table.add_column(column)
    for choice in planned.choices:
        table.add_row(choice.setting, choice.value, choice.reason)
    console.print(table)
    split = Table(title="time budget" if budget else "estimated time (no budget)")
    for column in ("part", "minutes", "share"):
        split.add_column(column, justify="right")
    for part, seconds, share in planned.split():
        split.add_row(part, f"{seconds / 60:.1f}", f"{share:.0%}")
    console.print(split)
    console.print(f"wrote {path}: c2fnas run {dataset_dir} --run {run} --config {path}")


@app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def run(
    ctx: typer.Context,
    dataset_dir: DatasetFolder,
    run_dir: Annotated[Path, typer.Option("--run", help="Run folder for every output.")],
    preset: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="paper, cpu or smoke (default: plan the run from the data and this "
            "machine, as `c2fnas plan` does).",
        ),
    ] = None,
    config: ConfigOption = None,
    time_budget: Annotated[
        str | None,
        typer.Option(
            metavar="DURATION",
            help="Plan the whole run to this wall-clock time: 45m, 8h, 3d (without "
            "--preset or --config; default: the paper's schedule).",
        ),
    ] = None,
    stages: Annotated[
        list[str] | None,
        typer.Option(
            "--stages",
            metavar="STAGE",
            help="Stages to run (repeat): check preprocess coarse fine scale train predict "
            "evaluate report. Default: all but scale.",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Local search workers (default: one per GPU, or 1).")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            metavar="URL", help="Shared trial store URL or journal file for the searches."
        ),
    ] = None,
    arch: Annotated[
        Path | None,
        typer.Option(
            "--arch",
            help="Train this architecture (e.g. architectures/c2fnas-panc.json) instead of "
            "searching one: the coarse and fine stages are skipped.",
        ),
    ] = None,
    folds: Annotated[
        list[int] | None,
        typer.Option(
            "--folds",
            metavar="FOLD",
            help="Folds to train (--folds 0 2, or repeat; default: the configuration's, all 5 "
            "unless a time budget planned fewer); the ensemble predicts with the folds trained.",
        ),
    ] = None,
    grace_period: Annotated[
        int,
        typer.Option(
            metavar="SECONDS",
            help="Seconds without heartbeat before a search worker counts as dead.",
        ),
    ] = 600,
    search: Annotated[str | None, typer.Option(metavar="MODE", help=SEARCH_HELP)] = None,
    accept_changed_data: Annotated[
        bool,
        typer.Option(
            "--accept-changed-data",
            help="A training case's image or label file changed since the run preprocessed it "
            "(size or modification time): keep the results made from it rather than refuse. "
            "Only for files whose contents are unchanged (copied without their times).",
        ),
    ] = False,
) -> None:
    """Every stage from data to evaluated predictions; rerun the same command to resume.

    Without --preset and --config the run is planned first (RUN_DIR/plan.yaml, see `c2fnas
    plan`), to --time-budget when given.
    """
    # heavy: see the package docstring
    from c2fnas.pipeline import DEFAULT_STAGES, Pipeline, PipelineError

    try:
        dataset_dir, more_folds = folder_and_numbers(dataset_dir, ctx.args, "--folds", bool(folds))
        chosen = tuple(sorted({*(folds or []), *(int(fold) for fold in more_folds)})) or None
        forced = search_mode(search)
        planned = preset is None and config is None
        if time_budget is not None and not planned:
            raise UserError("--time-budget plans the run: leave out --preset and --config")
        budget = parse_duration(time_budget) if time_budget is not None else None
        run_config = None if planned else load_config(preset or "paper", config)
    except (UserError, ValueError, OSError) as error:  # ConfigError
        raise fail(str(error)) from None
    bar, progress = pipeline_progress()
    running: list[str] = []  # the stage under way, named if the run is stopped

    def on_stage(stage: str, event: str, seconds: float) -> None:
        if event == "start":
            running[:] = [stage]
        if event == "skip":
            bar.console.print(f"[dim]{stage}: done before, skipped[/]")
        elif event == "done":
            bar.console.print(f"[green]{stage}[/]: done in {seconds:.1f} s")

    gpus = gpu_count()
    pipeline = Pipeline(
        dataset_dir=dataset_dir, run_dir=run_dir, config=run_config, budget=budget,
        search=forced, workers=workers if workers is not None else max(1, gpus), gpus=gpus,
        storage=storage, grace_period=grace_period, architecture=arch, folds=chosen,
        accept_changed_data=accept_changed_data, on_stage=on_stage, progress=progress,
        accelerated=True, governor=start_governor(),
    )  # fmt: skip
    try:
        with stoppable(), holding(RunFolder(run_dir).lock), bar:
            state = pipeline.run(tuple(stages) if stages else DEFAULT_STAGES)
    except PipelineError as error:
        raise fail(str(error), code=1) from None
    except Exception as error:  # a stage's own clear error (data, config, training)
        raise fail(f"{type(error).__name__}: {error}", code=1) from None
    except (KeyboardInterrupt, SystemExit) as error:
        code = stop_code(error)
        if code is None:
            raise
        raise stopped(code, kept_in(run_dir, running)) from None
    print_run_summary(run_dir, state)


def kept_in(run_dir: Path, running: list[str]) -> str:
    """What a stopped run keeps: its finished stages, and what the running one had saved."""
    try:
        finished = list(RunState.read(RunFolder(run_dir).pipeline_state).stages)
    except RunStateError:
        finished = []
    kept = f"{run_dir} keeps the finished stages ({', '.join(finished) or 'none'})"
    stage = running[0] if running and running[0] not in finished else None
    return kept + (f" and what {stage} had saved; {stage} resumes from there" if stage else "")


def print_run_summary(run_dir: Path, state: RunState) -> None:
    """The stages' times and results, the time planned against spent, the test scores."""
    table = Table(title=f"c2fnas run: {run_dir}")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("result")
    for stage, record in state.stages.items():
        table.add_row(stage, f"{record.seconds:.1f}", record.summary())
    console.print(table)
    parts = state.planned_against_spent()
    if parts:
        budget = Table(title="planned against spent")
        for column in ("part", "planned (min)", "spent (min)"):
            budget.add_column(column, justify="right")
        for part, planned, spent in parts:
            budget.add_row(part, f"{planned / 60:.1f}", f"{spent / 60:.1f}")
        console.print(budget)
    for refit in state.refits:
        console.print(f"training {refit.summary()}")
    summary = RunFolder(run_dir).evaluation_summary
    if summary.is_file():
        labels = json.loads(summary.read_text())["labels"]
        dice = Table(title="test set, fold ensemble (majority vote)")
        for column in ("label", "Dice", "HD95 (mm)", "surface Dice", "cases"):
            dice.add_column(column, justify="right")
        for label, entry in labels.items():
            hd95 = entry.get("hd95_mean")
            dice.add_row(
                label,
                f"{entry['dice_mean']:.4f}",
                "-" if hd95 is None else f"{hd95:.2f}",
                f"{entry['surface_dice_mean']:.4f}",
                str(entry["cases"]),
            )
        console.print(dice)
    console.print(f"report: {RunFolder(run_dir).report_markdown} (and report.html)")
