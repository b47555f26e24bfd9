"""``c2fnas data check``: every problem of a dataset folder, case by case.

Each case is checked on its own, so one bad case never hides another: paths (missing, escaping
the folder), readability (truncated or corrupt NIfTI), non-finite intensities, channel count vs.
``modality``, label maps (3D, integer, values declared in ``labels``), and image/label geometry
(shape, and affine within ``AFFINE_TOLERANCE_MM``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from c2fnas.data.io import (
    NiftiError,
    image_channels,
    load_nifti,
    read_image_array,
    read_label_array,
    spatial_shape,
)
from c2fnas.data.msd import DatasetError, case_id_of, read_description, resolve_path
from c2fnas.data.pipeline import Progress, run_parallel
from c2fnas.data.preprocess import canonical_spacing

AFFINE_TOLERANCE_MM = 1e-3


@dataclass
class CaseReport:
    """What ``check`` found for one case; ``problems`` is empty when the case is fine."""

    case_id: str
    kind: str  # "training" or "test"
    problems: list[str] = field(default_factory=list)
    shape: list[int] | None = None
    spacing: list[float] | None = None
    channels: int | None = None
    labels: list[int] | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class CheckReport:
    dataset_dir: str
    problems: list[str] = field(default_factory=list)  # about dataset.json itself
    cases: list[CaseReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(case.ok for case in self.cases)

    @property
    def bad_cases(self) -> list[CaseReport]:
        return [case for case in self.cases if not case.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_dir": self.dataset_dir,
            "ok": self.ok,
            "problems": self.problems,
            "cases": [asdict(case) | {"ok": case.ok} for case in self.cases],
        }


def _check_image(path: Path, modalities: int, report: CaseReport) -> Any:
    nifti = load_nifti(path)
    channels = image_channels(nifti, path)
    report.channels = channels
    report.shape = list(spatial_shape(nifti))
    report.spacing = [round(v, 4) for v in canonical_spacing(nifti.affine)]
    if channels != modalities:
        report.problems.append(
            f"image has {channels} channel(s) but dataset.json declares {modalities} modalities"
        )
    data = read_image_array(nifti, path)
    if not np.all(np.isfinite(data)):
        bad = int(data.size - np.isfinite(data).sum())
        report.problems.append(f"image has {bad} NaN or infinite voxel(s)")
    return nifti


def _check_label(path: Path, image: Any, declared: set[int], report: CaseReport) -> None:
    nifti = load_nifti(path)
    label = read_label_array(nifti, path)
    values = sorted(int(v) for v in np.unique(label))
    report.labels = values
    undeclared = sorted(set(values) - declared)
    if undeclared:
        report.problems.append(f"label values {undeclared} are not declared in 'labels'")
    if image is None:
        return
    if spatial_shape(nifti) != spatial_shape(image):
        report.problems.append(
            f"label shape {spatial_shape(nifti)} differs from image shape {spatial_shape(image)}"
        )
    difference = float(np.abs(nifti.affine - image.affine).max())
    if difference > AFFINE_TOLERANCE_MM:
        report.problems.append(f"label and image affines differ by up to {difference:.4g} mm")


def check_case(
    case_id: str,
    kind: str,
    image: Path | None,
    label: Path | None,
    modalities: int,
    declared: set[int],
    problems: list[str],
) -> CaseReport:
    """Check one case's files; ``problems`` are those already found in its paths."""
    report = CaseReport(case_id=case_id, kind=kind, problems=list(problems))
    nifti = None
    if image is not None:
        try:
            nifti = _check_image(image, modalities, report)
        except NiftiError as error:
            report.problems.append(f"image: {error}")
    if label is not None:
        try:
            _check_label(label, nifti, declared, report)
        except NiftiError as error:
            report.problems.append(f"label: {error}")
    return report


def _resolve(root: Path, relative: Any, problems: list[str], what: str) -> Path | None:
    if not isinstance(relative, str):
        problems.append(f"{what}: no path given")
        return None
    try:
        path = resolve_path(root, relative)
    except DatasetError:
        problems.append(f"{what}: path {relative!r} escapes the dataset folder")
        return None
    if not path.is_file():
        problems.append(f"{what}: {path} is missing")
        return None
    return path


def check_dataset(
    dataset_dir: str | Path, workers: int = 1, progress: Progress | None = None
) -> CheckReport:
    """Check ``dataset.json`` and every training and test case of an MSD folder."""
    root = Path(dataset_dir).resolve()
    report = CheckReport(dataset_dir=str(root))
    try:
        description = read_description(root)
    except DatasetError as error:
        report.problems.append(str(error))
        return report
    modalities = len(description["modality"])
    declared = {int(value) for value in description["labels"]}
    entries = [("training", e.get("image"), e.get("label")) for e in description["training"]]
    for entry in description.get("test", []):
        entries.append(("test", entry.get("image") if isinstance(entry, dict) else entry, None))
    counts = Counter(case_id_of(str(image)) for _, image, _ in entries)
    jobs = []
    for index, (kind, image, label) in enumerate(entries):
        case_id = case_id_of(str(image)) if isinstance(image, str) else f"{kind}[{index}]"
        problems: list[str] = []
        if counts[case_id] > 1:
            problems.append(f"case id {case_id} is used by {counts[case_id]} entries")
        image_path = _resolve(root, image, problems, "image")
        label_path = _resolve(root, label, problems, "label") if kind == "training" else None
        args = (case_id, kind, image_path, label_path, modalities, declared, problems)
        jobs.append((f"{index}", args))
    arguments = dict(jobs)
    results = {
        key: result if error is None else _crashed(arguments[key], error)
        for key, result, error in run_parallel(check_case, jobs, workers, "check", progress)
    }
    report.cases = [results[key] for key, _ in jobs]
    return report


def _crashed(args: tuple[Any, ...], error: BaseException) -> CaseReport:
    # An unexpected failure of one case becomes a problem of that case, not of the whole check.
    return CaseReport(case_id=args[0], kind=args[1], problems=[f"cannot check: {error}"])
