"""The ``c2fnas`` command line: thin commands over the library, with tables and progress.

Commands import the library inside their bodies, not at the top: importing torch and MONAI takes
5-15 s on a small CPU, which ``c2fnas --help``, ``c2fnas data check`` and a mistyped option
should not wait for. Modules that load in a fraction of a second are imported at the top.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from c2fnas.accel.process import keep_freed_memory, use_threads
from c2fnas.data.msd import DatasetError
from c2fnas.files.lock import FolderBusy, folder_lock
from c2fnas.files.run_folder import RunFolder, TrainingFolder
from c2fnas.progress import bar_with
from c2fnas.space import Architecture, ArchitectureError

if TYPE_CHECKING:
    from c2fnas.training.config import SearchMode

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


@contextlib.contextmanager
def _holding(lock: Path, shared: bool = False) -> Iterator[None]:
    """Hold a folder's lock (``c2fnas.files.lock``) while the command writes into it; when
    another process holds it, one line naming that process and exit code 1. Under torchrun,
    rank 0 holds it for every rank of the job."""
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(folder_lock(lock, shared))
        except FolderBusy as error:
            raise _fail(str(error), code=1) from None
        yield


def _folder_and_numbers(
    folder: Path, extra: list[str], option: str, given: bool
) -> tuple[Path, list[str]]:
    """Click gives an option one value per flag: of ``--spacing 0.8 0.8 2.5`` or ``--folds 0 2``
    the values after the first arrive as extra positional arguments, before or after the folder
    argument. Returns the one folder and those numbers, in order.

    Raises:
        UserError: not exactly one folder, or numbers although ``option`` was not ``given``.
    """
    tokens = [str(folder), *extra]
    numbers = [token for token in tokens if _is_number(token)]
    folders = [token for token in tokens if not _is_number(token)]
    if len(folders) != 1 or (numbers and not given):
        raise UserError(f"expected one dataset folder and {option} values, got {' '.join(tokens)}")
    return Path(folders[0]), numbers


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Fix the CPU threads (default: OMP_NUM_THREADS, or the cores this process "
            "may use, leaving cores to other jobs that load them while training).",
        ),
    ] = None,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    keep_freed_memory()  # this process trains or predicts: keep its activation buffers mapped
    use_threads(threads)


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


plot_app = typer.Typer(help="Figures.", no_args_is_help=True)
app.add_typer(plot_app, name="plot")


@plot_app.command("arch")
def plot_arch(
    arch_json: Annotated[Path, typer.Argument(help="Architecture JSON file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG (or PDF/SVG) to write.")],
    patch: Annotated[tuple[int, int, int], typer.Option(help="Patch for the MAC count.")] = (
        96,
        96,
        96,
    ),
    in_channels: Annotated[int, typer.Option(help="Input modalities.")] = 1,
    classes: Annotated[int, typer.Option(help="Output classes.")] = 3,
) -> None:
    """Draw an architecture like the paper's Fig. 5, with parameters and MACs in the caption."""
    from c2fnas.nn.profile import profile_architecture
    from c2fnas.plots import plot_architecture

    try:
        architecture = Architecture.load(arch_json)
        report = profile_architecture(architecture, patch, in_channels, classes, timing=False)
    except (ArchitectureError, ValueError) as error:
        raise _fail(str(error)) from None
    caption = (
        f"{report['params'] / 1e6:.2f} M parameters, {report['macs'] / 1e9:.2f} G MACs at "
        f"{'x'.join(map(str, patch))}, width {architecture.width:g}"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    plot_architecture(architecture, output, caption)
    console.print(f"wrote {output}")


# --- data: check, synth, preprocess ----------------------------------------------------------

data_app = typer.Typer(help="Check, convert and make datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _progress_bar() -> tuple[Any, Any]:
    """A progress bar (plain lines in a log) and the ``progress(stage, done, total)`` callback
    that drives it."""
    bar = bar_with(err_console)
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total, info="")
        bar.update(tasks[stage], completed=done, total=total)

    return bar, update


def _print_listing(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A table in a terminal; in a log (CI, batch jobs: no terminal, 80 columns) aligned plain
    lines that are never cut. The last column is a status, green when "ok"."""

    if not console.is_terminal:
        widths = [max(map(len, column)) for column in zip(columns, *rows, strict=True)]
        lines = [
            "  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip()
            for row in (columns, *rows)
        ]
        for line in (title, *lines):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column, no_wrap=column == columns[0], overflow="fold")
    for row in rows:
        table.add_row(*map(Text, row[:-1]), Text(row[-1], "green" if row[-1] == "ok" else "red"))
    console.print(table)


@data_app.command("check")
def data_check(
    dataset_dir: Annotated[Path, typer.Argument(help="Dataset folder (MSD or nnU-Net v2).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Check every case of a dataset; exit 1 naming each problem, 0 when all is well."""
    from c2fnas.data.check import COLUMNS, check_dataset

    bar, update = _progress_bar()
    with bar:
        report = check_dataset(dataset_dir, workers=workers, progress=None if as_json else update)
    if as_json:
        print(json.dumps(report.to_dict()))
        raise typer.Exit(0 if report.ok else 1)
    if report.cases:
        _print_listing(f"{dataset_dir}: {len(report.cases)} case(s)", COLUMNS, report.rows())
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
    from c2fnas.data.synth import make_synthetic_dataset

    try:
        root = make_synthetic_dataset(
            out_dir, cases, seed, shape, tuple(modality or ["MR"]), test_cases
        )
    except (ValueError, OSError) as error:
        raise _fail(str(error)) from None
    console.print(f"wrote {cases} training and {test_cases} test case(s) to {root}")


@data_app.command("convert")
def data_convert(
    source: Annotated[Path, typer.Argument(help="Dataset folder (MSD or nnU-Net v2).")],
    destination: Annotated[Path, typer.Argument(help="New folder (absent or empty).")],
    to: Annotated[str, typer.Option("--to", help="Layout to write: nnunet or msd.")],
) -> None:
    """Write a dataset in the nnU-Net v2 or the MSD layout (the source is never changed)."""
    from c2fnas.data.convert import LAYOUTS, convert_dataset

    if to not in LAYOUTS:
        raise _fail(f"--to {to}: choose {' or '.join(LAYOUTS)}")
    try:
        root = convert_dataset(source, destination, to)
    except (DatasetError, ValueError, OSError) as error:
        raise _fail(str(error), code=1) from None
    console.print(f"wrote {root} ({to})")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def preprocess(
    ctx: typer.Context,
    dataset_dir: Annotated[Path, typer.Argument(help="Dataset folder (MSD or nnU-Net v2).")],
    run: Annotated[Path, typer.Option("--run", help="Run folder to write the cache into.")],
    spacing: Annotated[
        str | None,
        typer.Option(help="Target spacing in mm: X Y Z, one number, or 'auto' (median)."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Reorient, resample, crop and normalise every case into RUN/preprocessed (resumable)."""
    from c2fnas.data.pipeline import PreprocessError, parse_spacing, preprocess_dataset

    try:
        folder, numbers = _folder_and_numbers(dataset_dir, ctx.args, "--spacing", bool(spacing))
    except UserError as error:
        raise _fail(str(error)) from None
    try:
        target = parse_spacing([spacing, *numbers] if spacing else [])
        bar, update = _progress_bar()
        with _holding(RunFolder(run).lock), bar:
            summary = preprocess_dataset(folder, run, target, workers, update)
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


SEARCH_HELP = (
    "coarse (both stages), fine (the fine stage alone on C2FNAS-Panc's topology) or none "
    "(C2FNAS-Panc trained as it is), whatever the budget buys; default: under --time-budget, "
    "what can pay (see `c2fnas plan`), the paper's search without one."
)


def _search_mode(search: str | None) -> SearchMode | None:
    from typing import get_args

    from c2fnas.training.config import SearchMode

    if search is None:
        return None
    modes = get_args(SearchMode)
    if search not in modes:
        raise UserError(f"--search {search}: choose {', '.join(modes)}")
    return search  # type: ignore[return-value]


@app.command("plan")
def plan(
    dataset_dir: Annotated[Path, typer.Argument(help="Dataset folder (MSD or nnU-Net v2).")],
    run: Annotated[Path, typer.Option("--run", help="Run folder to write plan.yaml into.")],
    time_budget: Annotated[
        str | None,
        typer.Option(help="Wall-clock budget of the whole run: 45m, 8h, 3d (default: paper)."),
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
    search: Annotated[str | None, typer.Option(help=SEARCH_HELP)] = None,
) -> None:
    """Plan a run from the data, the device and a time budget: writes RUN/plan.yaml for --config."""
    import torch  # heavy: see the module docstring

    from c2fnas.planning import BudgetError, PlanError, parse_duration, plan_run

    try:
        budget = parse_duration(time_budget) if time_budget is not None else None
        architecture = Architecture.load(arch) if arch is not None else None
        forced = _search_mode(search)
        if device not in (None, "cpu", "cuda"):
            raise UserError(f"--device {device}: choose cpu or cuda")
        if device == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is visible")
    except (ValueError, OSError, ArchitectureError, UserError) as error:
        raise _fail(str(error)) from None
    target = torch.device(device) if device else None
    try:
        bar, update = _progress_bar()
        with _holding(RunFolder(run).lock), bar:
            planned = plan_run(
                dataset_dir, run, budget, architecture, target,
                gpus=gpus if gpus is not None else _gpu_count(), progress=update, search=forced,
            )  # fmt: skip
            path = planned.write(run)
    except (DatasetError, PlanError, BudgetError, OSError) as error:
        raise _fail(str(error), code=1) from None
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


# --- training, prediction, evaluation -----------------------------------------------------


def _training_info(metrics: dict[str, float]) -> str:
    """``loss 0.4312  lr 2.00e-02  val Dice 0.812`` from a ``fit`` progress callback's metrics."""
    dice = f"{metrics['dice']:.3f}" if "dice" in metrics else "-"
    rate = f"  lr {metrics['lr']:.2e}" if "lr" in metrics else ""
    return f"loss {metrics['loss']:.4f}{rate}  val Dice {dice}"


def _training_bar() -> tuple[Any, Any]:
    """A bar with loss, learning rate, last validation Dice and ETA (plain lines in a log), and
    the ``fit`` callback driving it."""
    bar = bar_with(err_console)
    task = bar.add_task("training", total=None, info="")

    def update(done: int, total: int, metrics: dict[str, float]) -> None:
        bar.update(task, completed=done, total=total, info=_training_info(metrics))

    return bar, update


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

    from c2fnas.files.model_folder import CheckpointError
    from c2fnas.training.config import ConfigError, load_config, read_config
    from c2fnas.training.loop import TrainingDiverged
    from c2fnas.training.run import train as train_fold

    out_dir = out or RunFolder(run_dir).fold(fold).root
    saved = TrainingFolder(out_dir).config
    try:
        architecture = Architecture.load(arch)
        if resume and saved.is_file():
            run_config = read_config(saved)
        else:
            run_config = load_config(preset, config)
        rank_zero = os.environ.get("RANK", "0") == "0"
        bar, update = _training_bar()
        # folds train side by side (one per GPU) in one run folder; one fold's folder is one's
        with (
            _holding(RunFolder(run_dir).lock, shared=True),
            _holding(TrainingFolder(out_dir).lock),
            bar if rank_zero else contextlib.nullcontext(),
        ):
            result = train_fold(
                architecture, run_dir, fold, run_config, out_dir, resume, progress=update
            )
    except TrainingDiverged as error:
        raise _fail(f"training diverged: {error}", code=1) from None
    except FileExistsError as error:
        raise _fail(f"{error} (pass --resume)") from None
    except (ArchitectureError, ConfigError, CheckpointError, ValueError, OSError) as error:
        raise _fail(str(error)) from None
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
    from c2fnas.inference.predict import predict_folder

    if ensemble not in ("vote", "mean"):
        raise _fail(f"--ensemble {ensemble}: choose vote or mean")
    if engine not in ("torch", "onnx"):
        raise _fail(f"--engine {engine}: choose torch or onnx")
    steps = _stride_steps(stride)
    bar, update = _progress_bar()
    try:
        with bar:
            summary = predict_folder(
                model, in_dir, out_dir, ensemble, steps, precision,  # type: ignore[arg-type]
                progress=lambda name, done, total: update("predict", done, total),
                tta=tta if tta is not None else _gpu_count() > 0, postprocess=postprocess,
                save_probabilities=save_probabilities, engine=engine,  # type: ignore[arg-type]
            )  # fmt: skip
    except (ValueError, OSError) as error:
        raise _fail(str(error)) from None
    console.print(f"{len(summary.written)} label map(s) in {summary.seconds:.1f} s -> {out_dir}")
    for name, message in summary.failed.items():
        err_console.print(f"[bold red]failed:[/] {name}: {message}", highlight=False)
    if summary.failed:
        raise typer.Exit(1)


def _stride_steps(text: str) -> tuple[int, ...]:
    """``16`` or ``24,24,8`` (commas, spaces or x between the numbers)."""
    parts = text.replace(",", " ").replace("x", " ").split()
    if len(parts) not in (1, 3) or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise _fail(f"--stride {text}: expected one step or three (X,Y,Z), in voxels")
    return tuple(int(part) for part in parts)


@app.command()
def export(
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
    from c2fnas.inference.export import export_models
    from c2fnas.inference.onnx_engine import export_onnx
    from c2fnas.inference.predict import resolve_postprocessing

    if output is None and onnx is None:
        raise _fail("name what to write: -o model.zip, --onnx model.onnx, or both")
    if onnx is not None and len(model) != 1:
        raise _fail(f"--onnx holds one network; got {len(model)} models (export each alone)")
    if output is not None and output.suffix != ".zip":
        raise _fail(f"-o {output}: a model file ends in .zip")
    try:
        postprocessing = resolve_postprocessing(postprocess, model, None)
        if output is not None:
            export_models(model, output, postprocessing)
            console.print(f"wrote {output}")
        if onnx is not None:
            export_onnx(model[0], onnx, postprocessing)
            console.print(f"wrote {onnx}")
    except (ValueError, OSError) as error:
        raise _fail(str(error)) from None


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
    from c2fnas.evaluation.metrics import EvaluationError, evaluate_folders, summarize
    from c2fnas.evaluation.report import write_csv, write_summary

    tokens = ([labels] if labels else []) + list(ctx.args)
    try:
        values = [int(part) for token in tokens for part in token.replace(",", " ").split()]
    except ValueError:
        raise _fail(f"--labels {' '.join(tokens)}: expected integer label values") from None
    bar, update = _progress_bar()
    try:
        with bar:
            scores = evaluate_folders(
                pred_dir, label_dir, values or None, tolerance,
                progress=lambda case, done, total: update("evaluate", done, total),
            )  # fmt: skip
    except EvaluationError as error:
        raise _fail(str(error)) from None
    summary = summarize(scores)
    write_csv(scores, csv_out or pred_dir / "evaluation.csv")
    write_summary(summary, json_out or pred_dir / "evaluation.json")
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


search_app = typer.Typer(
    help="The search stages: coarse (topology), fine (ops), scale (width).", no_args_is_help=True
)
app.add_typer(search_app, name="search")


def _search_display(stage: str, budget: int) -> tuple[Any, Callable[[Any], None]]:
    """A live table of the search in a terminal, plain progress lines in a log; and the
    ``on_progress(snapshot)`` callback that drives it."""

    from c2fnas.search.report import code_text, progress_table

    describe = code_text if stage == "coarse" else _ops_text
    if console.is_terminal:
        live = Live(console=console, refresh_per_second=1)

        def update_table(snapshot: Any) -> None:
            live.update(progress_table(snapshot, budget, stage=stage, describe=describe))

        return live, update_table
    bar = bar_with(console)
    task = bar.add_task(f"{stage} search", total=budget, info="")

    def update_lines(snapshot: Any) -> None:
        best = snapshot.best
        info = f"best Dice {best.score:.4f} ({describe(best.code)})" if best is not None else ""
        info += f"  {snapshot.count('running')} running"
        bar.update(task, completed=snapshot.evaluated, info=info)

    return bar, update_lines


def _search_config(preset: str, config: Path | None, **search: Any) -> Any:
    """The run configuration, with the search fields given on the command line (None: keep)."""
    from c2fnas.training.config import load_config

    run_config = load_config(preset, config)
    given = {key: value for key, value in search.items() if value is not None}
    return run_config.with_fields("search", **given) if given else run_config


@search_app.command("coarse")
def search_coarse(
    run_dir: Annotated[Path, typer.Argument(help="Prepared run folder (after preprocess).")],
    preset: Annotated[str, typer.Option(help="Configuration preset: paper, cpu, smoke.")] = "paper",
    config: Annotated[Path | None, typer.Option(help="YAML file overriding the preset.")] = None,
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
    from c2fnas.search.stages import coarse_estimate, coarse_stage
    from c2fnas.search.store import StoreError

    gpus = _gpu_count()
    try:
        run_config = _search_config(preset, config, width=width)
        if estimate:
            computed = coarse_estimate(run_dir, run_config, measure=True)
            console.print(computed.describe(workers or max(1, gpus)), highlight=False)
            return
        display, on_progress = _search_display("coarse", run_config.search.coarse_networks)
        # more workers may join with the same command: their claims are atomic in the store
        with _holding(RunFolder(run_dir).lock, shared=True), display:
            snapshot = coarse_stage(
                run_dir, run_config, strategy=strategy, storage=storage,
                workers=workers if workers is not None else max(1, gpus), gpus=gpus,
                grace_period=grace_period, prune=prune, on_progress=on_progress,
                announce=lambda text: console.print(text, highlight=False),
            )  # fmt: skip
    except (StoreError, ValueError) as error:  # ConfigError, RunFolderError, ArchitectureError
        raise _fail(str(error)) from None
    if snapshot is None:
        return  # a torchrun rank other than 0
    best = snapshot.best
    folder = RunFolder(run_dir).coarse
    if best is None:
        raise _fail(f"no candidate finished; see {folder.trials_csv}", code=1)
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
    preset: Annotated[str, typer.Option(help="Configuration preset: paper, cpu, smoke.")] = "paper",
    config: Annotated[Path | None, typer.Option(help="YAML file overriding the preset.")] = None,
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
    from c2fnas.search.stages import fine_stage
    from c2fnas.search.store import StoreError
    from c2fnas.training.loop import TrainingDiverged

    gpus = _gpu_count()
    rank_zero = int(os.environ.get("RANK", "0")) == 0
    try:
        run_config = _search_config(preset, config)
        given = Architecture.load(topology) if topology is not None else None
        bar, supernet_progress = _training_bar()
        display, on_progress = _search_display("fine", run_config.search.fine_candidates)
        with (
            _holding(RunFolder(run_dir).lock, shared=True),
            bar if rank_zero else contextlib.nullcontext(),
            display,
        ):
            snapshot = fine_stage(
                run_dir, run_config, topology=given, storage=storage,
                workers=workers if workers is not None else max(1, gpus), gpus=gpus,
                supernet_progress=supernet_progress, on_progress=on_progress,
            )  # fmt: skip
    except TrainingDiverged as error:
        raise _fail(f"supernet training diverged: {error}", code=1) from None
    except FolderBusy as error:  # another command trains the supernet
        raise _fail(str(error), code=1) from None
    except (StoreError, ValueError, FileNotFoundError) as error:  # ConfigError, RunFolderError
        raise _fail(str(error)) from None
    if snapshot is None:
        return  # a torchrun rank other than 0: rank 0 scores the colourings
    best = snapshot.best
    folder = RunFolder(run_dir).fine
    if best is None:
        raise _fail(f"no colouring was scored; see {folder.candidates_csv}", code=1)
    console.print(
        f"best colouring (trial {best.number}, supernet Dice {best.score:.4f}): "
        f"{folder.best_architecture}"
    )


def _ops_text(code: tuple[int, ...] | None) -> str:
    from c2fnas.search.fine import colouring_text

    return colouring_text(code)


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
    preset: Annotated[str, typer.Option(help="Configuration preset: paper, cpu, smoke.")] = "paper",
    config: Annotated[Path | None, typer.Option(help="YAML file overriding the preset.")] = None,
) -> None:
    """Width scaling (paper Sec. 5.3): train and validate every width; table and Dice-MACs plot."""
    from c2fnas.search.stages import scale_stage
    from c2fnas.training.loop import TrainingDiverged

    try:
        run_config = _search_config(preset, config, scale_widths=widths or None)
        with (
            _holding(RunFolder(run_dir).lock, shared=True),
            _holding(RunFolder(run_dir).scale.lock),
        ):
            rows = scale_stage(
                run_dir,
                run_config,
                architecture=Architecture.load(arch) if arch is not None else None,
                on_width=lambda row: console.print(
                    f"width {row['width']:g}: Dice {row['dice_mean']:.4f}, "
                    f"{row['params'] / 1e6:.2f} M parameters, {row['macs'] / 1e9:.2f} G MACs"
                ),
            )
    except TrainingDiverged as error:
        raise _fail(f"training diverged: {error}", code=1) from None
    except (ValueError, FileNotFoundError) as error:  # ConfigError, ArchitectureError
        raise _fail(str(error)) from None
    table = Table(title="width scaling")
    for column in rows[0]:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(table)
    scale = RunFolder(run_dir).scale
    console.print(f"wrote {scale.table} and {scale.plot}")


@app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def run(
    ctx: typer.Context,
    dataset_dir: Annotated[Path, typer.Argument(help="Dataset folder (MSD or nnU-Net v2).")],
    run_dir: Annotated[Path, typer.Option("--run", help="Run folder for every output.")],
    preset: Annotated[
        str | None,
        typer.Option(
            help="paper, cpu or smoke (default: plan the run from the data and this "
            "machine, as `c2fnas plan` does)."
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML file overriding the preset.")] = None,
    time_budget: Annotated[
        str | None,
        typer.Option(
            help="Plan the whole run to this wall-clock time: 45m, 8h, 3d (without "
            "--preset or --config; default: the paper's schedule)."
        ),
    ] = None,
    stages: Annotated[
        list[str] | None,
        typer.Option(
            "--stages",
            help="Stages to run (repeat): check preprocess coarse fine scale train predict "
            "evaluate report. Default: all but scale.",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Local search workers (default: one per GPU, or 1).")
    ] = None,
    storage: Annotated[
        str | None, typer.Option(help="Shared trial store URL or journal file for the searches.")
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
            help="Folds to train (--folds 0 2, or repeat; default: the configuration's, all 5 "
            "unless a time budget planned fewer); the ensemble predicts with the folds trained.",
        ),
    ] = None,
    grace_period: Annotated[
        int,
        typer.Option(help="Seconds without heartbeat before a search worker counts as dead."),
    ] = 600,
    search: Annotated[str | None, typer.Option(help=SEARCH_HELP)] = None,
) -> None:
    """Every stage from data to evaluated predictions; rerun the same command to resume.

    Without --preset and --config the run is planned first (RUN_DIR/plan.yaml, see `c2fnas
    plan`), to --time-budget when given.
    """
    from c2fnas.pipeline import DEFAULT_STAGES, Pipeline, PipelineError, planned_config
    from c2fnas.planning import parse_duration
    from c2fnas.training.config import load_config

    try:
        dataset_dir, more_folds = _folder_and_numbers(dataset_dir, ctx.args, "--folds", bool(folds))
        chosen = tuple(sorted({*(folds or []), *(int(fold) for fold in more_folds)})) or None
        forced = _search_mode(search)
    except (UserError, ValueError) as error:
        raise _fail(str(error)) from None
    with _holding(RunFolder(run_dir).lock):  # planning writes into the folder too
        gpus = _gpu_count()
        planned_seconds = None
        try:
            if preset is None and config is None:
                budget = parse_duration(time_budget) if time_budget is not None else None
                bar, update = _progress_bar()
                with bar:
                    run_config, planned_seconds = planned_config(
                        dataset_dir, run_dir, budget, arch, chosen, gpus, update, forced
                    )
            elif time_budget is not None:
                raise UserError("--time-budget plans the run: leave out --preset and --config")
            else:
                run_config = load_config(preset or "paper", config)
                if forced is not None:
                    run_config = run_config.with_fields("search", mode=forced)
        except (ValueError, OSError, UserError) as error:  # ConfigError, PlanError, DatasetError
            raise _fail(str(error)) from None
        bar, progress = _pipeline_progress()

        def on_stage(stage: str, event: str, seconds: float) -> None:
            if event == "skip":
                bar.console.print(f"[dim]{stage}: done before, skipped[/]")
            elif event == "done":
                bar.console.print(f"[green]{stage}[/]: done in {seconds:.1f} s")

        pipeline = Pipeline(
            dataset_dir=dataset_dir,
            run_dir=run_dir,
            config=run_config,
            workers=workers if workers is not None else max(1, gpus),
            gpus=gpus,
            storage=storage,
            grace_period=grace_period,
            architecture=arch,
            folds=chosen,
            planned_seconds=planned_seconds,
            on_stage=on_stage,
            progress=progress,
        )
        try:
            with bar:
                state = pipeline.run(tuple(stages) if stages else DEFAULT_STAGES)
        except PipelineError as error:
            raise _fail(str(error), code=1) from None
        except Exception as error:  # a stage's own clear error (data, config, training)
            raise _fail(f"{type(error).__name__}: {error}", code=1) from None
        _print_run_summary(run_dir, state)


def _pipeline_progress() -> tuple[Any, Callable[[str, str, int | None], Callable[..., None]]]:
    """One rich progress display for a whole run, and the factory of per-task callbacks."""
    bar = bar_with(err_console)

    def factory(kind: str, label: str, total: int | None) -> Callable[..., None]:
        task = bar.add_task(label, total=total, info="")

        def data(stage: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=f"{label}: {stage}")

        def training(done: int, total: int, metrics: dict[str, float]) -> None:
            bar.update(task, completed=done, total=total, info=_training_info(metrics))

        def search(snapshot: Any) -> None:
            best = snapshot.best
            info = f"best Dice {best.score:.3f}" if best is not None else ""
            running = snapshot.count("running")
            bar.update(task, completed=snapshot.evaluated, info=f"{info}  {running} running")

        def cases(case: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, info=case)

        return {"data": data, "train": training, "search": search, "predict": cases}[kind]

    return bar, factory


def _print_run_summary(run_dir: Path, state: dict[str, Any]) -> None:
    stages = state.get("stages", {})
    table = Table(title=f"c2fnas run: {run_dir}")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("result")
    for stage, info in stages.items():
        result = ""
        if "fold_dice" in info:
            result = "fold Dice " + ", ".join(f"{d:.3f}" for d in info["fold_dice"])
        elif "best_dice" in info:
            result = f"{info['evaluated']} evaluated, best Dice {info['best_dice']:.3f}"
        elif "mean_dice" in info:
            result = f"test mean Dice {info['mean_dice']:.4f} (fold ensemble)"
        elif "largest_component" in info:
            classes = info["largest_component"]
            result = f"largest component kept for classes {classes}" if classes else "none"
        elif "cases" in info:
            result = f"{info['cases']} cases"
        table.add_row(stage, f"{info.get('seconds', 0):.1f}", result)
    console.print(table)
    from c2fnas.report import planned_against_spent  # heavy: see the module docstring

    parts = planned_against_spent(state)
    if parts:
        budget = Table(title="planned against spent")
        for column in ("part", "planned (min)", "spent (min)"):
            budget.add_column(column, justify="right")
        for part, planned, spent in parts:
            budget.add_row(part, f"{planned / 60:.1f}", f"{spent / 60:.1f}")
        console.print(budget)
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


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def main() -> None:
    app()


if __name__ == "__main__":
    main()
