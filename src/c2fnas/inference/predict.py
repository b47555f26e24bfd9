"""Prediction in the original geometry: preprocess, sliding window, ensemble, restore, write.

Each model folder (``best/`` or ``last/`` of a training run, or the training folder itself,
meaning its ``best/``) carries its architecture, weights and preprocessing plan. Every model of
an ensemble must share one plan, so their probabilities live on one grid.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.nn.functional import one_hot

from c2fnas.accel.precision import resolve_precision
from c2fnas.accel.swap import accelerate
from c2fnas.data.io import write_like
from c2fnas.data.preprocess import Plan, preprocess_images, restore_prediction
from c2fnas.files.model_folder import CheckpointError, model_folder, read_model
from c2fnas.inference.sliding_window import predict_probabilities
from c2fnas.nn import C2FNet

log = logging.getLogger(__name__)

Ensemble = Literal["vote", "mean"]
NIFTI_SUFFIXES = (".nii.gz", ".nii")


@dataclass
class LoadedModel:
    """A network ready to predict (eval mode, on its device) and what it expects."""

    network: Callable[[torch.Tensor], torch.Tensor]
    plan: Plan
    patch: tuple[int, int, int]
    folder: Path | None = None


@dataclass
class PredictionSummary:
    written: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    """Image file name -> error message."""
    seconds: float = 0.0


def load_model(path: str | Path, device: torch.device) -> LoadedModel:
    """Build the network of a model folder with its weights; never unpickles."""
    folder = model_folder(path)
    architecture, weights, info = read_model(folder)
    if info.get("kind") != "network":
        raise CheckpointError(
            f"{folder}: holds a {info.get('kind')}, not a network to predict with"
        )
    if "plan" not in info:
        raise CheckpointError(f"{folder}/model.json: no preprocessing plan recorded")
    plan = Plan.model_validate(info["plan"])
    network = C2FNet(architecture, plan.in_channels, plan.num_classes)
    try:
        network.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"{folder}: weights do not fit the architecture: {error}") from None
    accelerate(network).to(device).eval()
    patch = tuple(int(side) for side in info["patch"])
    return LoadedModel(network, plan, patch, folder)  # type: ignore[arg-type]


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
    stride: int = 16,
    precision: str = "fp32",
    window_batch: int = 4,
    device: torch.device | None = None,
) -> Path:
    """Predict one image file and write its label map with the image's shape, affine and header.

    ``device`` is where the models are (default CPU); ``precision`` is already resolved.
    """
    plan = models[0].plan
    device = device or torch.device("cpu")
    image, properties = preprocess_images(image_path, plan)
    tensor = torch.from_numpy(image)[None].to(device)
    probabilities = [
        predict_probabilities(model.network, tensor, model.patch, stride, precision, window_batch)[
            0
        ]
        for model in models
    ]
    classes = ensemble_labels(probabilities, ensemble).cpu().numpy()
    values = np.array(sorted(plan.labels), dtype=np.int64)  # class index -> label value
    label = values[classes].astype(np.uint8 if values.max() <= 255 else np.int16)
    return write_like(restore_prediction(label, properties), image_path, out_path)


def image_files(in_dir: Path) -> list[Path]:
    if not in_dir.is_dir():
        raise FileNotFoundError(f"{in_dir}: not a folder")
    files = sorted(p for p in in_dir.iterdir() if p.name.endswith(NIFTI_SUFFIXES) and p.is_file())
    if not files:
        raise FileNotFoundError(f"{in_dir}: no .nii or .nii.gz images")
    return files


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


def check_same_plan(models: Sequence[LoadedModel]) -> None:
    digests = {model.plan.digest() for model in models}
    if len(digests) > 1:
        names = ", ".join(str(model.folder) for model in models)
        raise ValueError(
            f"models {names} use different preprocessing plans; ensemble one run's folds"
        )


def predict_folder(
    model_dirs: Sequence[str | Path],
    in_dir: str | Path,
    out_dir: str | Path,
    ensemble: Ensemble = "vote",
    stride: int = 16,
    precision: str = "auto",
    device: torch.device | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    models: Sequence[LoadedModel] | None = None,
) -> PredictionSummary:
    """Predict every NIfTI image in ``in_dir`` into ``out_dir`` (same file names).

    A case that fails is logged and listed in ``PredictionSummary.failed``; the others still run.
    An ``out_dir`` that would overwrite an input image is refused before anything is loaded.

    Args:
        model_dirs: model or training folders; several are ensembled.
        stride: sliding-window step in voxels (paper: 16).
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (GPU).
        progress: called as ``(image name, done, total)`` after each case.
        models: already loaded models (instead of ``model_dirs``).
    """
    started = time.perf_counter()
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    files = image_files(in_dir)
    check_inputs_are_kept(in_dir, out_dir, files)
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded = list(models) if models is not None else [load_model(d, device) for d in model_dirs]
    if not loaded:
        raise ValueError("predict needs at least one model folder")
    check_same_plan(loaded)
    resolved = resolve_precision(precision, device)
    summary = PredictionSummary()
    for done, image_path in enumerate(files, start=1):
        try:
            out_path = out_dir / image_path.name
            summary.written.append(
                predict_case(
                    image_path, loaded, out_path, ensemble, stride, resolved, device=device
                )
            )
        except Exception as error:  # noqa: BLE001 - one bad case must not stop the others
            log.error("%s: prediction failed: %s", image_path, error)
            summary.failed[image_path.name] = f"{type(error).__name__}: {error}"
        if progress is not None:
            progress(image_path.name, done, len(files))
    summary.seconds = time.perf_counter() - started
    return summary
