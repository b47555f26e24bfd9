"""``c2fnas train``: one fold of one architecture."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from c2fnas.accel.process import start_governor
from c2fnas.cli.display import console, fail, training_bar
from c2fnas.cli.options import holding
from c2fnas.files.run_folder import RunFolder, TrainingFolder
from c2fnas.space import Architecture
from c2fnas.training.config import load_config, read_config
from c2fnas.training.errors import TrainingDiverged

app = typer.Typer()


@app.command()
def train(
    run_dir: Annotated[Path, typer.Argument(help="Preprocessed run folder.")],
    arch: Annotated[Path, typer.Option("--arch", help="Architecture JSON file.")],
    fold: Annotated[int, typer.Option(help="Validation fold 0..4; the others train.")],
    preset: Annotated[str, typer.Option(help="paper, cpu or smoke.")] = "paper",
    config: Annotated[Path | None, typer.Option(help="YAML overriding preset fields.")] = None,
    out: Annotated[Path | None, typer.Option(help="Default RUN_DIR/train/fold_K.")] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue a stopped run (its saved config).")
    ] = False,
) -> None:
    """Train one fold (SGD, warm-up, step decay); under torchrun with DistributedDataParallel."""
    from c2fnas.training.run import train as train_fold  # heavy: see the package docstring

    out_dir = out or RunFolder(run_dir).fold(fold).root
    saved = TrainingFolder(out_dir).config
    try:
        architecture = Architecture.load(arch)
        if resume and saved.is_file():
            run_config = read_config(saved)
        else:
            run_config = load_config(preset, config)
        rank_zero = os.environ.get("RANK", "0") == "0"
        bar, update = training_bar()
        # folds train side by side (one per GPU) in one run folder; one fold's folder is one's
        with (
            holding(RunFolder(run_dir).lock, shared=True),
            holding(TrainingFolder(out_dir).lock),
            bar if rank_zero else contextlib.nullcontext(),
        ):
            result = train_fold(
                architecture,
                run_dir,
                fold,
                run_config,
                out_dir,
                resume,
                progress=update,
                accelerated=True,
                governor=start_governor(),
            )
    except TrainingDiverged as error:
        raise fail(f"training diverged: {error}", code=1) from None
    except FileExistsError as error:
        raise fail(f"{error} (pass --resume)") from None
    except (ValueError, OSError) as error:  # ArchitectureError, ConfigError, CheckpointError
        raise fail(str(error)) from None
    if not rank_zero:
        return
    table = Table(title=f"fold {fold}: best at iteration {result.best_iteration}")
    table.add_column("class")
    table.add_column("validation Dice", justify="right")
    for index, value in enumerate(result.best_dice, start=1):
        table.add_row(str(index), f"{value:.4f}")
    table.add_row("mean", f"{result.best_mean:.4f}")
    console.print(table)
    console.print(f"{result.iterations} iterations in {result.seconds:.0f} s -> {out_dir}")
