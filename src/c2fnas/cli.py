"""The ``c2fnas`` command line: thin commands over the library, with tables and progress."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="c2fnas",
    help="Coarse-to-fine neural architecture search for 3D medical image segmentation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


class UserError(Exception):
    """A problem with the user's input: printed as one clear line, exit code 2."""


def _fail(message: str, code: int = 2) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command()
def profile(
    arch_json: Annotated[Path, typer.Argument(help="Architecture JSON file.")],
    patch: Annotated[tuple[int, int, int], typer.Option(help="Patch size D H W.")] = (96, 96, 96),
    in_channels: Annotated[int, typer.Option(help="Input modalities.")] = 1,
    classes: Annotated[int, typer.Option(help="Output classes, background included.")] = 3,
    width: Annotated[float | None, typer.Option(help="Override the width multiplier.")] = None,
    batch: Annotated[int, typer.Option(help="Batch size for memory and timing.")] = 1,
    timing: Annotated[bool, typer.Option(help="Measure forward and training-step time.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Parameters, MACs, training activation memory and measured speed of an architecture."""
    from c2fnas.nn.profile import profile_architecture
    from c2fnas.space import Architecture, ArchitectureError

    try:
        architecture = Architecture.load(arch_json)
        if width is not None:
            architecture = architecture.with_width(width)
        report = profile_architecture(
            architecture, patch, in_channels, classes, batch, timing=timing
        )
    except (ArchitectureError, ValueError) as error:
        raise _fail(str(error)) from None
    if as_json:
        print(json.dumps(report))
        return
    table = Table(title=f"{architecture.name or arch_json.name} at {'x'.join(map(str, patch))}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("parameters", f"{report['params'] / 1e6:.2f} M")
    table.add_row("MACs (paper 'FLOPs'), per sample", f"{report['macs'] / 1e9:.2f} G")
    table.add_row(
        f"training activations, batch {batch}, fp32",
        f"{report['activation_bytes_fp32'] / 2**30:.2f} GiB",
    )
    if timing:
        table.add_row(
            f"forward, batch {batch} ({report['device']})", f"{report['forward_seconds']:.3f} s"
        )
        table.add_row(f"training step, batch {batch}", f"{report['train_step_seconds']:.3f} s")
    console.print(table)


search_app = typer.Typer(help="The search stages: coarse (topology).", no_args_is_help=True)
app.add_typer(search_app, name="search")


@search_app.command("coarse")
def search_coarse(
    run_dir: Annotated[Path, typer.Argument(help="Prepared run folder (after preprocess).")],
    preset: Annotated[str, typer.Option(help="Configuration preset: paper, cpu, smoke.")] = "paper",
    config: Annotated[Path | None, typer.Option(help="YAML file overriding the preset.")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Local worker processes (default: one per GPU, or 1).")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Trial store: database URL or journal file (default RUN_DIR/coarse/trials.db)."
        ),
    ] = None,
    strategy: Annotated[str, typer.Option(help="c2f (paper), random or evolution.")] = "c2f",
    width: Annotated[float, typer.Option(help="Width multiplier of every candidate.")] = 1.0,
    grace_period: Annotated[
        int, typer.Option(help="Seconds without heartbeat before a worker counts as dead.")
    ] = 600,
) -> None:
    """Topology search (paper Algorithm 1); rerun the same command to resume or to join."""
    from rich.live import Live

    from c2fnas.search.coarse import make_job, run_coarse, run_under_torchrun
    from c2fnas.search.estimate import estimate_search_compute
    from c2fnas.search.evaluate import (
        RunFolderError,
        TrainingEvaluator,
        dataset_channels,
        settings_from_config,
    )
    from c2fnas.search.report import progress_table
    from c2fnas.search.store import StoreError
    from c2fnas.training.config import ConfigError, load_config

    try:
        run_config = load_config(preset, config)
        settings = settings_from_config(
            run_config,
            strategy,
            heartbeat_interval=max(1, grace_period // 10),
            grace_period=grace_period,
        )
        settings.make_strategy()
        in_channels, classes = dataset_channels(run_dir)
        job = make_job(run_dir, settings, storage)
    except (ConfigError, RunFolderError, ValueError) as error:
        raise _fail(str(error)) from None
    factory = TrainingEvaluator(run_config.to_yaml(), width)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Under torchrun this process is one rank of a single multi-GPU worker.
        try:
            distributed_snapshot = run_under_torchrun(job, factory)
        except StoreError as error:
            raise _fail(str(error)) from None
        if distributed_snapshot is None:
            return
        snapshot = distributed_snapshot
    else:
        gpus = _gpu_count()
        workers = workers if workers is not None else max(1, gpus)
        estimate = estimate_search_compute(
            run_config.data.patch,
            in_channels,
            classes,
            run_config.data.batch_size,
            run_config.search.iterations,
            settings.budget,
            width,
            settings.seed,
            settings.clusters,
        )
        console.print(estimate.describe(workers), highlight=False)
        try:
            with Live(console=console, refresh_per_second=1) as live:
                snapshot = run_coarse(
                    job,
                    factory,
                    workers,
                    gpus,
                    on_progress=lambda now: live.update(progress_table(now, settings.budget)),
                )
        except StoreError as error:
            raise _fail(str(error)) from None
    best = snapshot.best
    if best is None:
        raise _fail(f"no candidate finished; see {run_dir / 'coarse' / 'trials.csv'}", code=1)
    console.print(f"best topology: {run_dir / 'coarse' / 'best_topology.json'}")


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def main() -> None:
    app()


if __name__ == "__main__":
    main()
