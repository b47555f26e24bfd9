"""The ``c2fnas`` command line: thin commands over the library, with tables and progress."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

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


# --- data: check, synth, preprocess ----------------------------------------------------------

data_app = typer.Typer(help="Check datasets and make synthetic data.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _progress_bar() -> tuple[Any, Any]:
    """A rich progress bar and the ``progress(stage, done, total)`` callback that drives it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bar = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return bar, update


@data_app.command("check")
def data_check(
    dataset_dir: Annotated[Path, typer.Argument(help="MSD dataset folder (with dataset.json).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Check every case of a dataset; exit 1 naming each problem, 0 when all is well."""
    from c2fnas.data.check import check_dataset

    bar, update = _progress_bar()
    with bar:
        report = check_dataset(dataset_dir, workers=workers, progress=None if as_json else update)
    if as_json:
        print(json.dumps(report.to_dict()))
        raise typer.Exit(0 if report.ok else 1)
    table = Table(title=f"{dataset_dir}: {len(report.cases)} case(s)")
    for column in ("case", "kind", "shape", "spacing (mm)", "ch", "labels", "status"):
        table.add_column(column)
    for case in report.cases:
        status = "[green]ok[/]" if case.ok else "[red]" + "; ".join(case.problems) + "[/]"
        table.add_row(
            case.case_id,
            case.kind,
            "x".join(map(str, case.shape or [])),
            " ".join(f"{v:.3g}" for v in case.spacing or []),
            str(case.channels or ""),
            ",".join(map(str, case.labels or [])),
            status,
        )
    if report.cases:
        console.print(table)
    for problem in report.problems:
        err_console.print(f"[bold red]error:[/] {problem}", highlight=False)
    bad = report.bad_cases
    if report.ok:
        console.print(f"[green]all {len(report.cases)} case(s) ok[/]")
        return
    if bad:
        err_console.print(
            f"[bold red]{len(bad)} bad case(s):[/] {', '.join(c.case_id for c in bad)}"
        )
    raise typer.Exit(1)


@data_app.command("synth")
def data_synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the dataset into.")],
    cases: Annotated[int, typer.Option(help="Labeled training cases.")] = 20,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    shape: Annotated[tuple[int, int, int], typer.Option(help="Mean grid D H W (voxels).")] = (
        64,
        64,
        32,
    ),
    modality: Annotated[
        list[str] | None, typer.Option(help="Modality per channel (repeat for 4D); CT or MR.")
    ] = None,
    test_cases: Annotated[int, typer.Option(help="Unlabeled cases in imagesTs.")] = 2,
) -> None:
    """Write a synthetic MSD dataset: body, organ (label 1), lesion (label 2)."""
    from c2fnas.data.synth import make_synthetic_dataset

    try:
        root = make_synthetic_dataset(
            out_dir, cases, seed, shape, tuple(modality or ["MR"]), test_cases
        )
    except (ValueError, OSError) as error:
        raise _fail(str(error)) from None
    console.print(f"wrote {cases} training and {test_cases} test case(s) to {root}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def preprocess(
    ctx: typer.Context,
    dataset_dir: Annotated[Path, typer.Argument(help="MSD dataset folder.")],
    run: Annotated[Path, typer.Option("--run", help="Run folder to write the cache into.")],
    spacing: Annotated[
        str | None,
        typer.Option(help="Target spacing in mm: X Y Z, one number, or 'auto' (median)."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Reorient, resample, crop and normalise every case into RUN/preprocessed (resumable)."""
    from c2fnas.data.msd import DatasetError
    from c2fnas.data.pipeline import PreprocessError, parse_spacing, preprocess_dataset

    tokens = [str(dataset_dir), *ctx.args]
    # "--spacing 0.8 0.8 2.5": click gives the option one value; the other two arrive as extra
    # positional arguments, before or after the dataset folder.
    numbers = [t for t in tokens if _is_number(t)]
    folders = [t for t in tokens if not _is_number(t)]
    if len(folders) != 1 or (numbers and spacing is None):
        raise _fail(f"expected one dataset folder and --spacing values, got {' '.join(tokens)}")
    try:
        target = parse_spacing([spacing, *numbers] if spacing else [])
        bar, update = _progress_bar()
        with bar:
            summary = preprocess_dataset(Path(folders[0]), run, target, workers, update)
    except (DatasetError, PreprocessError, ValueError, OSError) as error:
        raise _fail(str(error), code=1) from None
    console.print(
        f"{len(summary.written)} case(s) written, {len(summary.skipped)} unchanged, "
        f"spacing {' x '.join(f'{v:g}' for v in summary.plan.spacing)} mm, "
        f"{summary.seconds:.1f} s -> {run}"
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def main() -> None:
    app()


if __name__ == "__main__":
    main()
