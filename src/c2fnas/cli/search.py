"""``c2fnas search coarse | fine | scale``: the three stages of the search, each resumable and
each open to more workers joining with the same command."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from c2fnas.accel.process import start_governor
from c2fnas.cli.display import console, fail, search_display, training_bar
from c2fnas.cli.options import ConfigOption, PresetOption, gpu_count, holding, search_config
from c2fnas.files.lock import FolderBusy
from c2fnas.files.run_folder import RunFolder
from c2fnas.space import Architecture
from c2fnas.training.errors import TrainingDiverged

app = typer.Typer()
search_app = typer.Typer(
    help="The search stages: coarse (topology), fine (ops), scale (width).", no_args_is_help=True
)
app.add_typer(search_app, name="search")


@search_app.command("coarse")
def search_coarse(
    run_dir: Annotated[Path, typer.Argument(help="Prepared run folder (after preprocess).")],
    preset: PresetOption = "paper",
    config: ConfigOption = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Local worker processes (default: one per GPU, or 1)."),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Trial store: database URL or journal file (default RUN_DIR/coarse/trials.db)."
        ),
    ] = None,
    strategy: Annotated[str, typer.Option(help="c2f (paper), random or evolution.")] = "c2f",
    width: Annotated[
        float | None,
        typer.Option(help="Width multiplier of every candidate (default: search.width)."),
    ] = None,
    grace_period: Annotated[
        int, typer.Option(help="Seconds without heartbeat before a worker counts as dead.")
    ] = 600,
    prune: Annotated[
        bool, typer.Option(help="Stop weak candidates early (successive halving on val. Dice).")
    ] = False,
    estimate: Annotated[
        bool,
        typer.Option(
            "--estimate",
            help="Print the search's compute and device-hours from a training step measured "
            "here (on a CPU at the paper's settings, a minute or more), then stop.",
        ),
    ] = False,
) -> None:
    """Topology search (paper Algorithm 1); rerun the same command to resume or to join."""
    from c2fnas.search import stages, store  # heavy: see the package docstring

    gpus = gpu_count()
    try:
        run_config = search_config(preset, config, width=width)
        if estimate:
            computed = stages.coarse_estimate(run_dir, run_config, measure=True)
            console.print(computed.describe(workers or max(1, gpus)), highlight=False)
            return
        display, on_progress = search_display("coarse", run_config.search.coarse_networks)
        # more workers may join with the same command: their claims are atomic in the store
        with holding(RunFolder(run_dir).lock, shared=True), display:
            snapshot = stages.coarse_stage(
                run_dir, run_config, strategy=strategy, storage=storage,
                workers=workers if workers is not None else max(1, gpus), gpus=gpus,
                grace_period=grace_period, prune=prune, on_progress=on_progress,
                announce=lambda text: console.print(text, highlight=False), accelerated=True,
            )  # fmt: skip
    # ValueError: also ConfigError, RunFolderError, ArchitectureError
    except (store.StoreError, ValueError) as error:
        raise fail(str(error)) from None
    if snapshot is None:
        return  # a torchrun rank other than 0
    best = snapshot.best
    folder = RunFolder(run_dir).coarse
    if best is None:
        raise fail(f"no candidate finished; see {folder.trials_csv}", code=1)
    if prune:
        saved = snapshot.iterations_saved(run_config.search.iterations)
        total = run_config.search.iterations * snapshot.evaluated
        console.print(f"pruning saved {saved} of {total} training iterations")
    console.print(
        f"best topology (trial {best.number}, Dice {best.score:.4f}): {folder.best_topology}"
    )


@search_app.command("fine")
def search_fine(
    run_dir: Annotated[Path, typer.Argument(help="Prepared run folder (after preprocess).")],
    topology: Annotated[
        Path | None,
        typer.Option(
            help="Topology JSON (default RUN_DIR/coarse/best_topology.json at search.width)."
        ),
    ] = None,
    preset: PresetOption = "paper",
    config: ConfigOption = None,
    workers: Annotated[
        int | None, typer.Option(help="Scoring worker processes (default: one per GPU, or 1).")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="Trial store: database URL or journal file (default RUN_DIR/fine/)."),
    ] = None,
) -> None:
    """Op search: train the one-shot supernet, then score random colourings with its weights.

    Rerun the same command to resume; workers on other machines join with the same --storage.
    """
    from c2fnas.search import stages, store  # heavy: see the package docstring

    gpus = gpu_count()
    rank_zero = int(os.environ.get("RANK", "0")) == 0
    try:
        run_config = search_config(preset, config)
        given = Architecture.load(topology) if topology is not None else None
        bar, supernet_progress = training_bar()
        display, on_progress = search_display("fine", run_config.search.fine_candidates)
        with (
            holding(RunFolder(run_dir).lock, shared=True),
            bar if rank_zero else contextlib.nullcontext(),
            display,
        ):
            snapshot = stages.fine_stage(
                run_dir, run_config, topology=given, storage=storage,
                workers=workers if workers is not None else max(1, gpus), gpus=gpus,
                supernet_progress=supernet_progress, on_progress=on_progress, accelerated=True,
                governor=start_governor(),
            )  # fmt: skip
    except TrainingDiverged as error:
        raise fail(f"supernet training diverged: {error}", code=1) from None
    except FolderBusy as error:  # another command trains the supernet
        raise fail(str(error), code=1) from None
    # ValueError: also ConfigError, RunFolderError
    except (store.StoreError, ValueError, FileNotFoundError) as error:
        raise fail(str(error)) from None
    if snapshot is None:
        return  # a torchrun rank other than 0: rank 0 scores the colourings
    best = snapshot.best
    folder = RunFolder(run_dir).fine
    if best is None:
        raise fail(f"no colouring was scored; see {folder.candidates_csv}", code=1)
    console.print(
        f"best colouring (trial {best.number}, supernet Dice {best.score:.4f}): "
        f"{folder.best_architecture}"
    )


@search_app.command("scale")
def search_scale(
    run_dir: Annotated[Path, typer.Argument(help="Prepared run folder (after preprocess).")],
    arch: Annotated[
        Path | None,
        typer.Option("--arch", help="Architecture JSON (default RUN_DIR/fine's best)."),
    ] = None,
    widths: Annotated[
        list[float] | None,
        typer.Option("--widths", help="Width multipliers (repeat; default search.scale_widths)."),
    ] = None,
    preset: PresetOption = "paper",
    config: ConfigOption = None,
) -> None:
    """Width scaling (paper Sec. 5.3): train and validate every width; table and Dice-MACs plot."""
    from c2fnas.search.stages import scale_stage  # heavy: see the package docstring

    try:
        run_config = search_config(preset, config, scale_widths=widths or None)
        with (
            holding(RunFolder(run_dir).lock, shared=True),
            holding(RunFolder(run_dir).scale.lock),
        ):
            rows = scale_stage(
                run_dir,
                run_config,
                architecture=Architecture.load(arch) if arch is not None else None,
                on_width=lambda row: console.print(
                    f"width {row['width']:g}: Dice {row['dice_mean']:.4f}, "
                    f"{row['params'] / 1e6:.2f} M parameters, {row['macs'] / 1e9:.2f} G MACs"
                ),
                accelerated=True,
                governor=start_governor(),
            )
    except TrainingDiverged as error:
        raise fail(f"training diverged: {error}", code=1) from None
    except (ValueError, FileNotFoundError) as error:  # ConfigError, ArchitectureError
        raise fail(str(error)) from None
    table = Table(title="width scaling")
    for column in rows[0]:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(table)
    scale = RunFolder(run_dir).scale
    console.print(f"wrote {scale.table} and {scale.plot}")
