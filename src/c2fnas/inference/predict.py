"""Prediction in the original geometry: preprocess, sliding window, ensemble, restore, write.

Models come from model folders (``inference.models``), exported model files (``.zip``,
``inference.export``) or ONNX files run by ONNX Runtime (``.onnx``, ``inference.onnx_engine``).
Every model of an ensemble must share one plan, so their probabilities live on one grid.

A single model and the ``mean`` ensemble bring the (averaged) class probabilities back to the
original grid (linear interpolation) and take the argmax there; the ``vote`` ensemble takes
each model's argmax on the preprocessed grid and restores the voted labels (nearest neighbour).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.nn.functional import one_hot

from c2fnas.accel.precision import resolve_precision
from c2fnas.data.io import IMAGE_SUFFIXES, image_files_in, load_images, write_like
from c2fnas.data.loader import FLIP_AXES
from c2fnas.data.nnunet import group_channel_files
from c2fnas.data.preprocess import Plan, preprocess_arrays
from c2fnas.files.atomic import remove_leftovers
from c2fnas.inference.estimate import estimate_prediction, seconds_per_window
from c2fnas.inference.export import load_model_file
from c2fnas.inference.models import Engine, LoadedModel, load_model
from c2fnas.inference.onnx_engine import load_onnx_model
from c2fnas.inference.postprocess import Postprocessing, find_postprocessing
from c2fnas.inference.probabilities import write_probabilities
from c2fnas.inference.sliding_window import per_axis, predict_probabilities

__all__ = ["LoadedModel", "load_model", "load_models", "predict_case", "predict_folder"]

log = logging.getLogger(__name__)

Ensemble = Literal["vote", "mean"]
"""The axes ``data.loader.augment`` flips at random in training; test-time mirroring uses them."""


@dataclass
class PredictionSummary:
    written: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    """Image file name -> error message."""
    seconds: float = 0.0


def load_models(
    paths: Sequence[str | Path],
    device: torch.device,
    engine: Engine = "torch",
    accelerated: bool = False,
) -> tuple[list[LoadedModel], Postprocessing | None]:
    """Models from folders, ``.zip`` model files or (``engine="onnx"``) ``.onnx`` files, and the
    post-processing an exported file carries (``accelerated``: see ``load_model``).

    Raises:
        ValueError: a path of the other engine, files carrying different post-processing, or a
            damaged model (``CheckpointError``, ``ModelFileError``: both name the path).
    """
    models: list[LoadedModel] = []
    carried: list[Postprocessing] = []
    for path in map(Path, paths):
        if (path.suffix == ".onnx") != (engine == "onnx"):
            raise ValueError(
                f"{path}: --engine onnx runs .onnx files, written by `c2fnas export --onnx`"
                if engine == "onnx"
                else f"{path}: an ONNX file; predict it with --engine onnx"
            )
        if engine == "onnx":
            onnx_model, postprocessing = load_onnx_model(path)
            found = [onnx_model]
        elif path.suffix == ".zip":
            found, postprocessing = load_model_file(path, device, accelerated)
        else:
            found, postprocessing = [load_model(path, device, accelerated)], None
        models += found
        carried += [postprocessing] if postprocessing is not None else []
    if len({p.model_dump_json() for p in carried}) > 1:
        raise ValueError("the model files carry different post-processing; pick one")
    return models, carried[0] if carried else None


def resolve_postprocessing(
    choice: str, model_paths: Sequence[str | Path], carried: Postprocessing | None
) -> Postprocessing | None:
    """``none``; ``auto``: what an exported model carries, else the ``postprocessing.json`` of
    the models' run folder when there is one; or a file's path."""
    if choice == "none":
        return None
    if choice != "auto":
        return Postprocessing.load(choice)
    if carried is not None:
        return carried
    found = find_postprocessing([Path(path) for path in model_paths])
    if found is None:
        return None
    log.info("post-processing from %s", found)
    return Postprocessing.load(found)


def ensemble_labels(probabilities: Sequence[torch.Tensor], mode: Ensemble) -> torch.Tensor:
    """Class index per voxel from each model's ``(K, X, Y, Z)`` probabilities.

    ``mean``: argmax of the averaged probabilities. ``vote``: the class most models pick (the
    paper's majority vote); ties go to the tied class with the higher mean probability.
    """
    mean = torch.stack(list(probabilities)).mean(0)
    if mode == "mean" or len(probabilities) == 1:
        return mean.argmax(0)
    if mode != "vote":
        raise ValueError(f"unknown ensemble {mode!r}; choose vote or mean")
    classes = mean.shape[0]
    votes = sum(one_hot(p.argmax(0), classes).movedim(-1, 0).float() for p in probabilities)
    assert isinstance(votes, torch.Tensor)
    # A mean probability is below 1, so it only decides between classes with equal votes.
    return (votes + 0.5 * mean).argmax(0)


def predict_case(
    image_path: Path,
    models: Sequence[LoadedModel],
    out_path: Path,
    ensemble: Ensemble = "vote",
    stride: int | Sequence[int] = 16,
    precision: str = "fp32",
    window_batch: int = 4,
    device: torch.device | None = None,
    *,
    mirror_axes: Sequence[int] = (),
    postprocessing: Postprocessing | None = None,
    save_probabilities: bool = False,
    more_channels: Sequence[Path] = (),
) -> Path:
    """Predict one image file and write its label map with the image's shape and geometry, in
    the format ``out_path``'s suffix names (``io.write_like``).

    ``device`` is where the models are (default CPU); ``precision`` is already resolved.
    ``mirror_axes``: test-time mirroring (``FLIP_AXES``, or none). Post-processing
    applies to the label map only; ``save_probabilities`` writes ``<case>.npz`` beside it.
    ``more_channels``: the case's further channel files (nnU-Net's ``CASE_0001``, ...).
    Each file is read once: its header is kept as the reference the label map is written like.
    """
    if ensemble not in ("vote", "mean"):
        raise ValueError(f"unknown ensemble {ensemble!r}; choose vote or mean")
    plan = models[0].plan
    device = device or torch.device("cpu")
    data, reference = load_images([image_path, *more_channels])  # the case's one read
    image, _, geometry = preprocess_arrays(data, reference.affine, plan)
    del data  # free the file's voxels before the network runs; `image` is all it needs
    tensor = torch.from_numpy(image)[None].to(device)
    probabilities = [
        predict_probabilities(
            model.network, tensor, model.patch, stride, precision, window_batch, mirror_axes
        )[0]
        for model in models
    ]
    mean = torch.stack(probabilities).mean(0).cpu().numpy()
    restored = None
    if ensemble == "vote" and len(models) > 1:
        voted = ensemble_labels(probabilities, "vote").cpu().numpy()
        classes = geometry.restore_label(voted)
    else:
        restored = geometry.restore_probabilities(mean)
        classes = restored.argmax(0)
    label = label_map(classes, plan)
    if postprocessing is not None:
        label = postprocessing.apply(label)
    written = write_like(label, reference, out_path)
    if save_probabilities:
        restored = restored if restored is not None else geometry.restore_probabilities(mean)
        write_probabilities(restored, sorted(plan.labels), out_path)
    return written


def label_map(classes: np.ndarray, plan: Plan) -> np.ndarray:
    """Class indices -> the plan's label values (classes in ascending label order)."""
    values = np.array(sorted(plan.labels), dtype=np.int64)
    return values[classes].astype(np.uint8 if values.max() <= 255 else np.int16)


def image_files(in_dir: Path) -> list[Path]:
    if not in_dir.is_dir():
        raise FileNotFoundError(f"{in_dir}: not a folder")
    files = image_files_in(in_dir)
    if not files:
        raise FileNotFoundError(f"{in_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def input_cases(files: Sequence[Path], channels: int) -> dict[str, list[Path]]:
    """The cases among image files: output file name -> the case's files.

    Files named the nnU-Net way (``CASE_0000.nii.gz``, ..., one per channel, every case
    complete with ``channels`` files) make one case each, written as ``CASE.nii.gz``. Otherwise
    each file is a case (MSD: a 4D file holds every channel) and its output keeps its name.
    """
    by_name = {path.name: path for path in files}
    groups = group_channel_files(list(by_name), channels)
    if groups is None:
        return {name: [path] for name, path in by_name.items()}
    return {name: [by_name[part] for part in parts] for name, parts in groups.items()}


def check_inputs_are_kept(in_dir: Path, out_dir: Path, files: Sequence[Path]) -> None:
    """Refuse an output folder where a label map would replace one of the input images.

    Label maps take their image's file name, so ``out_dir`` must not be ``in_dir``. Paths are
    compared with symlinks resolved: a link to the input folder, or to an input image, is refused.

    Raises:
        ValueError: naming the output folder, the images at stake and the input folder.
    """
    inputs = {path.resolve() for path in files}
    clashes = [path.name for path in files if (out_dir / path.name).resolve() in inputs]
    if clashes:
        more = f" and {len(clashes) - 3} more" if len(clashes) > 3 else ""
        raise ValueError(
            f"{out_dir}: the label maps would overwrite the input images of {in_dir} "
            f"({', '.join(clashes[:3])}{more}); choose another output folder"
        )


def check_output_folder(out_dir: Path) -> None:
    """Make ``out_dir`` and write a scratch file in it, before any model loads: a read-only
    folder, or a file in its place, would otherwise fail only once every case is computed.

    Raises:
        ValueError: ``out_dir`` is a file, or cannot be made or written in (with the reason).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: a file, not a folder; choose a folder for the label maps")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as error:
        reason = error.strerror or str(error)
        raise ValueError(f"{out_dir}: cannot write the label maps there ({reason})") from None


def check_same_plan(models: Sequence[LoadedModel]) -> None:
    digests = {model.plan.digest() for model in models}
    if len(digests) > 1:
        names = ", ".join(str(model.folder) for model in models)
        raise ValueError(
            f"models {names} use different preprocessing plans; ensemble one run's folds"
        )


def engine_precision(precision: str, models: Sequence[LoadedModel], device: torch.device) -> str:
    """``resolve_precision``, except that ONNX Runtime models run fp32 (``auto`` gives it)."""
    if any(model.engine == "onnx" for model in models):
        if precision not in ("auto", "fp32"):
            raise ValueError(f"precision {precision}: ONNX Runtime models run fp32 only")
        return "fp32"
    return resolve_precision(precision, device)


def predict_folder(
    model_dirs: Sequence[str | Path],
    in_dir: str | Path,
    out_dir: str | Path,
    ensemble: Ensemble = "vote",
    stride: int | Sequence[int] = 16,
    precision: str = "auto",
    device: torch.device | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    models: Sequence[LoadedModel] | None = None,
    *,
    tta: bool = False,
    postprocess: str = "none",
    save_probabilities: bool = False,
    engine: Engine = "torch",
    window_batch: int = 4,
    accelerated: bool = False,
) -> PredictionSummary:
    """Predict every image in ``in_dir`` into ``out_dir``, each in its own format and with its
    file name; nnU-Net channel files (``CASE_0000.nii.gz``, ...) as one case ``CASE.nii.gz``
    (``input_cases``).

    A case that fails is logged and listed in ``PredictionSummary.failed``; the others still run.
    An ``out_dir`` that would overwrite an input image, or that cannot be written, is refused
    before anything is loaded.
    Before the first case, the windows per case and the estimated time are logged.

    Args:
        model_dirs: model or training folders, ``.zip`` model files, or ``.onnx`` files with
            ``engine="onnx"``; several are ensembled.
        stride: sliding-window step in voxels, one for all axes or X, Y, Z (paper: 16).
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (GPU).
        progress: called as ``(image name, done, total)`` after each case.
        models: already loaded models (instead of ``model_dirs``).
        tta: mirror along ``FLIP_AXES`` (8 passes per window) and average; the
            caller picks (worth it where time allows: a GPU, not a small CPU).
        postprocess: ``none``, ``auto`` (see ``resolve_postprocessing``) or a file's path.
        save_probabilities: write ``<case>.npz`` (float16 class probabilities, input geometry).
        accelerated: load the models with the fast layers swapped in (``load_model``); the
            entry point decides.
    """
    started = time.perf_counter()
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    files = image_files(in_dir)
    check_inputs_are_kept(in_dir, out_dir, files)
    check_output_folder(out_dir)
    for leftover in remove_leftovers(out_dir):
        log.info("%s: removed, the temporary file of a killed run", leftover)
    stride = per_axis(stride)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    carried = None
    loaded = list(models) if models is not None else []
    if models is None:
        loaded, carried = load_models(model_dirs, device, engine, accelerated)
    if not loaded:
        raise ValueError("predict needs at least one model folder")
    check_same_plan(loaded)
    chosen = resolve_postprocessing(postprocess, model_dirs, carried)
    resolved = engine_precision(precision, loaded, device)
    mirror_axes = FLIP_AXES if tta else ()
    first = loaded[0]
    cases = input_cases(files, first.plan.in_channels)
    estimate = estimate_prediction(
        [paths[0] for paths in cases.values()], first.plan, first.patch, stride,
        len(loaded) * 2 ** len(mirror_axes),
        seconds_per_window(first.network, first.plan.in_channels, first.patch, window_batch,
                           resolved, device),
    )  # fmt: skip
    log.info("predict: %s", estimate.describe())
    summary = PredictionSummary()
    for done, (name, paths) in enumerate(cases.items(), start=1):
        try:
            summary.written.append(
                predict_case(
                    paths[0],
                    loaded,
                    out_dir / name,
                    ensemble,
                    stride,
                    resolved,
                    window_batch,
                    device,
                    mirror_axes=mirror_axes,
                    postprocessing=chosen,
                    save_probabilities=save_probabilities,
                    more_channels=paths[1:],
                )  # fmt: skip
            )
        except Exception as error:  # noqa: BLE001 - one bad case must not stop the others
            log.error("%s: prediction failed: %s", paths[0], error)
            summary.failed[name] = f"{type(error).__name__}: {error}"
        if progress is not None:
            progress(name, done, len(cases))
    summary.seconds = time.perf_counter() - started
    return summary
