"""``c2fnas predict``, ``export`` and ``evaluate``: trained models to label maps, model files
and scores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from c2fnas.cli.display import console, err_console, fail, progress_bar
from c2fnas.cli.options import gpu_count
from c2fnas.evaluation import metrics, report

app = typer.Typer()


@app.command()
def predict(
    model: Annotated[
        list[Path],
        typer.Option(
            "--model", "-m", help="Model or training folder, .zip or .onnx model file (repeat)."
        ),
    ],
    in_dir: Annotated[Path, typer.Option("--input", "-i", help="Folder of NIfTI images.")],
    out_dir: Annotated[Path, typer.Option("--output", "-o", help="Folder for the labels.")],
    ensemble: Annotated[str, typer.Option(help="vote (the paper) or mean.")] = "vote",
    stride: Annotated[
        str, typer.Option(help="Sliding-window step in voxels: one for all axes, or X,Y,Z.")
    ] = "16",
    precision: Annotated[str, typer.Option(help="auto, fp32, bf16 or fp16 (GPU).")] = "auto",
    tta: Annotated[
        bool | None,
        typer.Option(
            "--tta/--no-tta",
            help="Mirror along the axes training flipped (8x the network time). "
            "Default: on with a GPU, off on a CPU.",
        ),
    ] = None,
    postprocess: Annotated[
        str,
        typer.Option(
            help="auto (the model file's, or RUN_DIR/postprocessing.json), none, or a file."
        ),
    ] = "auto",
    save_probabilities: Annotated[
        bool,
        typer.Option(
            "--save-probabilities",
            help="Also write <case>.npz: float16 class probabilities in the input's geometry.",
        ),
    ] = False,
    engine: Annotated[str, typer.Option(help="torch, or onnx (ONNX Runtime, .onnx files).")] = (
        "torch"
    ),
) -> None:
    """Segment images with one model or an ensemble; labels keep each input's exact geometry.

    The windows per case and an estimated time are logged before the first case.
    """
    from c2fnas.inference.predict import predict_folder  # heavy: see the package docstring

    if ensemble not in ("vote", "mean"):
        raise fail(f"--ensemble {ensemble}: choose vote or mean")
    if engine not in ("torch", "onnx"):
        raise fail(f"--engine {engine}: choose torch or onnx")
    steps = stride_steps(stride)
    bar, update = progress_bar()
    try:
        with bar:
            summary = predict_folder(
                model, in_dir, out_dir, ensemble, steps, precision,  # type: ignore[arg-type]
                progress=lambda name, done, total: update("predict", done, total),
                tta=tta if tta is not None else gpu_count() > 0, postprocess=postprocess,
                save_probabilities=save_probabilities, engine=engine,  # type: ignore[arg-type]
                accelerated=True,
            )  # fmt: skip
    except (ValueError, OSError) as error:
        raise fail(str(error)) from None
    console.print(f"{len(summary.written)} label map(s) in {summary.seconds:.1f} s -> {out_dir}")
    for name, message in summary.failed.items():
        err_console.print(f"[bold red]failed:[/] {name}: {message}", highlight=False)
    if summary.failed:
        raise typer.Exit(1)


def stride_steps(text: str) -> tuple[int, ...]:
    """``16`` or ``24,24,8`` (commas, spaces or x between the numbers)."""
    parts = text.replace(",", " ").replace("x", " ").split()
    if len(parts) not in (1, 3) or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise fail(f"--stride {text}: expected one step or three (X,Y,Z), in voxels")
    return tuple(int(part) for part in parts)


@app.command("export")
def export_model(
    model: Annotated[
        list[Path],
        typer.Option("--model", "-m", help="Model or training folder (repeat for an ensemble)."),
    ],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Model file (.zip) for `c2fnas predict -m`."),
    ] = None,
    onnx: Annotated[
        Path | None, typer.Option(help="ONNX file of the network (one model), dynamic axes.")
    ] = None,
    postprocess: Annotated[
        str,
        typer.Option(help="auto (RUN_DIR/postprocessing.json when present), none, or a file."),
    ] = "auto",
) -> None:
    """One file to hand over: architecture, weights, plan, labels, post-processing, checksums."""
    # heavy: see the package docstring (modules, not names: ``predict`` is a command here)
    from c2fnas.inference import export, onnx_engine, predict

    if output is None and onnx is None:
        raise fail("name what to write: -o model.zip, --onnx model.onnx, or both")
    if onnx is not None and len(model) != 1:
        raise fail(f"--onnx holds one network; got {len(model)} models (export each alone)")
    if output is not None and output.suffix != ".zip":
        raise fail(f"-o {output}: a model file ends in .zip")
    try:
        postprocessing = predict.resolve_postprocessing(postprocess, model, None)
        if output is not None:
            export.export_models(model, output, postprocessing)
            console.print(f"wrote {output}")
        if onnx is not None:
            onnx_engine.export_onnx(model[0], onnx, postprocessing)
            console.print(f"wrote {onnx}")
    except (ValueError, OSError) as error:
        raise fail(str(error)) from None


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def evaluate(
    ctx: typer.Context,
    pred_dir: Annotated[Path, typer.Argument(help="Predicted label maps (NIfTI).")],
    label_dir: Annotated[Path, typer.Argument(help="Reference label maps, same file names.")],
    labels: Annotated[
        str | None, typer.Option(help="Label values to score, e.g. --labels 1 2 (default: all).")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Summary JSON (default PRED_DIR/evaluation.json).")
    ] = None,
    csv_out: Annotated[
        Path | None, typer.Option("--csv", help="Per-case CSV (default PRED_DIR/evaluation.csv).")
    ] = None,
    tolerance: Annotated[float, typer.Option(help="Surface Dice tolerance in mm.")] = 1.0,
) -> None:
    """Dice, HD95 (mm) and surface Dice per case and class; mean and std per class."""
    tokens = ([labels] if labels else []) + list(ctx.args)
    try:
        values = [int(part) for token in tokens for part in token.replace(",", " ").split()]
    except ValueError:
        raise fail(f"--labels {' '.join(tokens)}: expected integer label values") from None
    bar, update = progress_bar()
    try:
        with bar:
            scores = metrics.evaluate_folders(
                pred_dir, label_dir, values or None, tolerance,
                progress=lambda case, done, total: update("evaluate", done, total),
            )  # fmt: skip
    except metrics.EvaluationError as error:
        raise fail(str(error)) from None
    summary = metrics.summarize(scores)
    report.write_csv(scores, csv_out or pred_dir / "evaluation.csv")
    report.write_summary(summary, json_out or pred_dir / "evaluation.json")
    table = Table(
        title=f"{len({s.case for s in scores})} case(s), mean Dice {summary['mean_dice']:.4f}"
    )
    for column in ("label", "Dice", "HD95 (mm)", f"surface Dice @{tolerance:g} mm"):
        table.add_column(column, justify="right")
    for label, entry in summary["labels"].items():  # type: ignore[attr-defined]
        table.add_row(
            label,
            *(
                f"{entry[m + '_mean']:.4f} ± {entry[m + '_std']:.4f}"
                for m in ("dice", "hd95", "surface_dice")
            ),
        )
    console.print(table)
