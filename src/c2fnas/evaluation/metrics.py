"""Dice, 95% Hausdorff distance and surface Dice per case and class, in mm (MONAI's metrics).

Conventions for empty masks (a class absent from the reference, the prediction, or both):

| reference | prediction | Dice | HD95 (mm) | surface Dice |
| --- | --- | --- | --- | --- |
| empty | empty | 1 | 0 | 1 |
| empty | not empty, or the reverse | 0 | undefined (NaN, left out of the mean) | 0 |

Distances use the voxel size of the reference's affine (column norms), so they are in mm. torch
and MONAI are imported where the distances are computed, so that the command line imports this
module (and ``c2fnas --help`` starts) without them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from c2fnas.data.io import IMAGE_SUFFIXES, NiftiError, image_files_in, load_volume

METRICS = ("dice", "hd95", "surface_dice")


class EvaluationError(ValueError):
    """Folders that cannot be compared; the message names the files."""


@dataclass
class CaseScore:
    case: str
    label: int
    dice: float
    hd95: float
    surface_dice: float


def _files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: not a folder")
    return {path.name: path for path in image_files_in(folder)}


def paired_files(pred_dir: Path, label_dir: Path) -> list[tuple[Path, Path]]:
    """Prediction and reference files matched by name; any unmatched file is an error."""
    predictions, references = _files(pred_dir), _files(label_dir)
    missing = sorted(set(references) - set(predictions))
    extra = sorted(set(predictions) - set(references))
    if missing or extra:
        raise EvaluationError(
            f"{pred_dir} and {label_dir} hold different cases: "
            f"no prediction for {missing or 'none'}; no reference for {extra or 'none'}"
        )
    if not references:
        raise EvaluationError(f"{label_dir}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return [(predictions[name], references[name]) for name in sorted(references)]


def _load_pair(prediction: Path, reference: Path) -> tuple[np.ndarray, np.ndarray, list[float]]:
    try:
        predicted, expected = load_volume(prediction), load_volume(reference)
    except NiftiError as error:
        raise EvaluationError(str(error)) from None
    if predicted.shape[:3] != expected.shape[:3]:
        raise EvaluationError(
            f"{prediction}: shape {predicted.shape} differs from {reference}'s {expected.shape}"
        )
    if not np.allclose(predicted.affine, expected.affine, atol=1e-3):
        raise EvaluationError(f"{prediction}: affine differs from {reference}'s (other geometry)")
    spacing = np.sqrt((expected.affine[:3, :3] ** 2).sum(0)).tolist()
    as_labels = [np.rint(np.asanyarray(image.dataobj)).astype(np.int64).reshape(image.shape[:3])
                 for image in (predicted, expected)]  # fmt: skip
    return as_labels[0], as_labels[1], spacing


def dice(predicted: np.ndarray, expected: np.ndarray) -> float:
    """Dice of two boolean masks; 1 when both are empty."""
    total = int(predicted.sum()) + int(expected.sum())
    return 1.0 if total == 0 else 2.0 * int((predicted & expected).sum()) / total


def class_scores(
    predicted: np.ndarray, expected: np.ndarray, spacing: Sequence[float], tolerance_mm: float
) -> tuple[float, float, float]:
    """(Dice, HD95 in mm, surface Dice at ``tolerance_mm``) of two boolean masks."""
    if not predicted.any() and not expected.any():
        return 1.0, 0.0, 1.0
    if not predicted.any() or not expected.any():
        return 0.0, math.nan, 0.0
    import torch  # heavy: see the module docstring
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    # MONAI takes one-hot (B, C, ...) tensors; channel 0 is the background, left out.
    masks = [torch.from_numpy(np.stack([~mask, mask])[None]) for mask in (predicted, expected)]
    hd95 = compute_hausdorff_distance(*masks, percentile=95, spacing=list(spacing))
    surface = compute_surface_dice(*masks, class_thresholds=[tolerance_mm], spacing=list(spacing))
    return dice(predicted, expected), float(hd95[0, 0]), float(surface[0, 0])


def evaluate_folders(
    pred_dir: str | Path,
    label_dir: str | Path,
    labels: Sequence[int] | None = None,
    tolerance_mm: float = 1.0,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[CaseScore]:
    """Scores of every case (matched by file name) and every foreground label.

    Args:
        labels: label values to score; default every non-zero value in any reference.
        tolerance_mm: surface Dice tolerance.

    Raises:
        EvaluationError: different case sets, shapes or affines, unreadable files.
    """
    pairs = paired_files(Path(pred_dir), Path(label_dir))
    loaded = [_load_pair(prediction, reference) for prediction, reference in pairs]
    if labels is None:
        labels = sorted({int(v) for _, expected, _ in loaded for v in np.unique(expected)} - {0})
    scores = []
    for done, ((_, reference), (predicted, expected, spacing)) in enumerate(
        zip(pairs, loaded, strict=True), start=1
    ):
        case = reference.name.removesuffix(".gz").removesuffix(".nii")
        for label in labels:
            values = class_scores(predicted == label, expected == label, spacing, tolerance_mm)
            scores.append(CaseScore(case, int(label), *values))
        if progress is not None:
            progress(case, done, len(pairs))
    return scores


def summarize(scores: Sequence[CaseScore]) -> dict[str, object]:
    """Mean and std per label and metric (NaN HD95s left out and counted), and overall means."""
    per_label: dict[str, dict[str, float | int]] = {}
    for label in sorted({score.label for score in scores}):
        rows = [score for score in scores if score.label == label]
        entry: dict[str, float | int] = {"cases": len(rows)}
        for metric in METRICS:
            values = np.array([getattr(row, metric) for row in rows], dtype=float)
            finite = values[~np.isnan(values)]
            entry[f"{metric}_mean"] = float(finite.mean()) if finite.size else math.nan
            entry[f"{metric}_std"] = float(finite.std()) if finite.size else math.nan
        entry["hd95_undefined"] = int(sum(math.isnan(row.hd95) for row in rows))
        per_label[str(label)] = entry
    return {
        "labels": per_label,
        "mean_dice": float(np.mean([entry["dice_mean"] for entry in per_label.values()])),
        "conventions": "both empty: Dice 1, HD95 0, surface Dice 1; one empty: Dice 0, "
        "surface Dice 0, HD95 undefined (NaN, excluded from means, counted in hd95_undefined)",
    }
