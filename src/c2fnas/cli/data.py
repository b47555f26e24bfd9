"""``c2fnas data check | synth | convert`` and ``c2fnas preprocess``: datasets in, a run
folder's cache out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from c2fnas.cli.display import UserError, console, err_console, fail, print_listing, progress_bar
from c2fnas.cli.options import DatasetFolder, folder_and_numbers, holding
from c2fnas.data.check import COLUMNS, check_dataset
from c2fnas.data.convert import LAYOUTS, convert_dataset
from c2fnas.data.msd import DatasetError
from c2fnas.data.pipeline import PreprocessError, parse_spacing, preprocess_dataset
from c2fnas.data.synth import make_synthetic_dataset
from c2fnas.files.run_folder import RunFolder

app = typer.Typer()
data_app = typer.Typer(help="Check, convert and make datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(
    dataset_dir: DatasetFolder,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Check every case of a dataset; exit 1 naming each problem, 0 when all is well."""
    bar, update = progress_bar()
    with bar:
        report = check_dataset(dataset_dir, workers=workers, progress=None if as_json else update)
    if as_json:
        print(json.dumps(report.to_dict()))
        raise typer.Exit(0 if report.ok else 1)
    if report.cases:
        print_listing(f"{dataset_dir}: {len(report.cases)} case(s)", COLUMNS, report.rows())
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
    test_cases: Annotated[
        int, typer.Option(help="Test cases in imagesTs (reference labels in labelsTs).")
    ] = 2,
) -> None:
    """Write a synthetic MSD dataset: body, organ (label 1), lesion (label 2)."""
    try:
        root = make_synthetic_dataset(
            out_dir, cases, seed, shape, tuple(modality or ["MR"]), test_cases
        )
    except (ValueError, OSError) as error:
        raise fail(str(error)) from None
    console.print(f"wrote {cases} training and {test_cases} test case(s) to {root}")


@data_app.command("convert")
def data_convert(
    source: DatasetFolder,
    destination: Annotated[Path, typer.Argument(help="New folder (absent or empty).")],
    to: Annotated[str, typer.Option("--to", help="Layout to write: nnunet or msd.")],
) -> None:
    """Write a dataset in the nnU-Net v2 or the MSD layout (the source is never changed)."""
    if to not in LAYOUTS:
        raise fail(f"--to {to}: choose {' or '.join(LAYOUTS)}")
    try:
        root = convert_dataset(source, destination, to)
    except (DatasetError, ValueError, OSError) as error:
        raise fail(str(error), code=1) from None
    console.print(f"wrote {root} ({to})")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def preprocess(
    ctx: typer.Context,
    dataset_dir: DatasetFolder,
    run: Annotated[Path, typer.Option("--run", help="Run folder to write the cache into.")],
    spacing: Annotated[
        str | None,
        typer.Option(help="Target spacing in mm: X Y Z, one number, or 'auto' (median)."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Reorient, resample, crop and normalise every case into RUN/preprocessed (resumable)."""
    try:
        folder, numbers = folder_and_numbers(dataset_dir, ctx.args, "--spacing", bool(spacing))
    except UserError as error:
        raise fail(str(error)) from None
    try:
        target = parse_spacing([spacing, *numbers] if spacing else [])
        bar, update = progress_bar()
        with holding(RunFolder(run).lock), bar:
            summary = preprocess_dataset(folder, run, target, workers, update)
    except (DatasetError, PreprocessError, ValueError, OSError) as error:
        raise fail(str(error), code=1) from None
    console.print(
        f"{len(summary.written)} case(s) written, {len(summary.skipped)} unchanged, "
        f"spacing {' x '.join(f'{v:g}' for v in summary.plan.spacing)} mm, "
        f"{summary.seconds:.1f} s -> {run}"
    )
