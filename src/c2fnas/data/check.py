"""``c2fnas data check``: every problem of a dataset folder, case by case.

Each case is checked on its own, so one bad case never hides another: paths (missing, escaping
the folder), readability (truncated or corrupt files, headers claiming more data than the file
holds), non-finite intensities, channel count vs. ``modality``, label maps (3D, integer, values
declared in ``labels``), and the geometry of the image, its other channel files (nnU-Net v2) and
its label (shape, and affine within ``GEOMETRY_TOLERANCE_MM``). A NIfTI header whose sform and
qform disagree is a warning (``_warn_of_forms``), not a problem. The test cases are those of
``dataset.json`` and every other image in ``imagesTs`` (hidden files aside): ``predict`` reads
them all, so a broken one must stop a run before training, not after it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from c2fnas.data.geometry import canonical_spacing
from c2fnas.data.io import (
    GEOMETRY_TOLERANCE_MM,
    NiftiError,
    image_channels,
    load_volume,
    read_image_array,
    read_label_array,
    same_geometry,
    spatial_shape,
)
from c2fnas.data.msd import (
    OUTSIDE,
    Case,
    DatasetError,
    as_test_entry,
    entry_case_id,
    entry_images,
    read_description,
    resolve_path,
    unlisted_test_images,
)
from c2fnas.data.parallel import Progress, run_parallel

log = logging.getLogger(__name__)

COLUMNS = ("case", "kind", "shape", "spacing (mm)", "ch", "labels", "status")


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
    warnings: list[str] = field(default_factory=list)  # worth a look, but no problem

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def status(self) -> str:
        """The status column: ``ok`` or the problems, then any warnings."""
        said = ["ok"] if self.ok else list(self.problems)
        return "; ".join(said + [f"warning: {warning}" for warning in self.warnings])


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

    def rows(self) -> list[tuple[str, ...]]:
        """One row of text per case, under ``COLUMNS``; the status is "ok" or the problems."""
        return [
            (
                case.case_id,
                case.kind,
                "x".join(map(str, case.shape or [])),
                " ".join(f"{v:.3g}" for v in case.spacing or []),
                str(case.channels or ""),
                ",".join(map(str, case.labels or [])),
                case.status,
            )
            for case in self.cases
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_dir": self.dataset_dir,
            "ok": self.ok,
            "problems": self.problems,
            "cases": [asdict(case) | {"ok": case.ok} for case in self.cases],
        }


class CaseCheckError(ValueError):
    """A case failed the checks of ``c2fnas data check``; the message lists its problems."""


@dataclass(frozen=True)
class CaseArrays:
    """The voxels ``inspect_case`` read, for a caller that goes on to use them (one read)."""

    image: np.ndarray  # (C, X, Y, Z) float32
    affine: np.ndarray  # the image's voxel-to-world matrix
    label: np.ndarray | None  # (X, Y, Z) uint8


def _check_image(
    paths: Sequence[Path], modalities: int, report: CaseReport
) -> tuple[Any, np.ndarray]:
    """Check a case's image file, or its channel files (nnU-Net v2): read, on one grid."""
    first = load_volume(paths[0])
    report.shape = list(spatial_shape(first))
    report.spacing = [round(v, 4) for v in canonical_spacing(first.affine)]
    arrays = []
    for path in paths:
        image = first if path == paths[0] else load_volume(path)
        _warn_of_forms(image, path, report)
        if spatial_shape(image) != spatial_shape(first) or not same_geometry(image, first):
            report.problems.append(
                f"{path.name}: grid {'x'.join(map(str, spatial_shape(image)))} or affine differs "
                f"from {paths[0].name}'s"
            )
        image_channels(image, path)  # 3D or 4D, before reading
        arrays.append(read_image_array(image, path))
    data = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    report.channels = channels = int(data.shape[0])
    if channels != modalities:
        report.problems.append(
            f"image has {channels} channel(s) but dataset.json declares {modalities} modalities"
        )
    if not np.all(np.isfinite(data)):
        bad = int(data.size - np.isfinite(data).sum())
        report.problems.append(f"image has {bad} NaN or infinite voxel(s)")
    return first, data


def _warn_of_forms(image: nib.Nifti1Image, path: Path, report: CaseReport) -> None:
    """Warn when a NIfTI header sets both its sform and its qform and they differ by more than
    ``GEOMETRY_TOLERANCE_MM`` in any element (translation, or rotation and zoom per voxel).

    A warning, not a problem: c2fnas reads every file with nibabel's choice (the sform, its
    code being set) and writes each prediction with its image's two forms and codes, so a run
    is consistent and its label maps overlay their images. What differs is where other tools
    put the image: ITK (SimpleITK, nnU-Net, many viewers) may take the qform. And an sform with
    shear has no exact qform, so such files are valid; refusing them would refuse good data.
    """
    header = image.header
    if not isinstance(header, nib.Nifti1Header) or not (
        header["sform_code"] and header["qform_code"]
    ):
        return
    difference = float(np.abs(header.get_sform() - header.get_qform()).max())
    if difference > GEOMETRY_TOLERANCE_MM:
        report.warnings.append(
            f"{path.name}: sform and qform differ by up to {difference:.4g} mm; c2fnas reads "
            f"the sform (nibabel's choice), tools built on ITK may place the image by the qform"
        )


def _check_label(path: Path, image: Any, declared: set[int], report: CaseReport) -> np.ndarray:
    nifti = load_volume(path)
    _warn_of_forms(nifti, path, report)
    label = read_label_array(nifti, path)
    values = sorted(int(v) for v in np.unique(label))
    report.labels = values
    undeclared = sorted(set(values) - declared)
    if undeclared:
        report.problems.append(f"label values {undeclared} are not declared in 'labels'")
    if image is None:
        return label
    if spatial_shape(nifti) != spatial_shape(image):
        report.problems.append(
            f"label shape {spatial_shape(nifti)} differs from image shape {spatial_shape(image)}"
        )
    difference = float(np.abs(nifti.affine - image.affine).max())
    if difference > GEOMETRY_TOLERANCE_MM:
        report.problems.append(f"label and image affines differ by up to {difference:.4g} mm")
    return label


def inspect_case(
    case_id: str,
    kind: str,
    images: tuple[Path, ...] | None,
    label: Path | None,
    modalities: int,
    declared: set[int],
    problems: Sequence[str] = (),
) -> tuple[CaseReport, CaseArrays | None]:
    """Check one case's files, keeping the voxels read; ``problems`` are those of its paths.

    Args:
        images: the image file, or the channel files of an nnU-Net v2 case (``None``: a path
            problem, already in ``problems``).

    Returns:
        the report, and the case's arrays when it has no problem (``None`` otherwise).
    """
    report = CaseReport(case_id=case_id, kind=kind, problems=list(problems))
    nifti = data = label_data = None
    if images:
        try:
            nifti, data = _check_image(images, modalities, report)
        except NiftiError as error:
            report.problems.append(f"image: {error}")
    if label is not None:
        try:
            label_data = _check_label(label, nifti, declared, report)
        except NiftiError as error:
            report.problems.append(f"label: {error}")
    if report.problems or nifti is None or data is None:
        return report, None
    return report, CaseArrays(image=data, affine=np.asarray(nifti.affine), label=label_data)


def check_case(
    case_id: str,
    kind: str,
    images: tuple[Path, ...] | None,
    label: Path | None,
    modalities: int,
    declared: set[int],
    problems: list[str],
) -> CaseReport:
    """Check one case's files; ``problems`` are those already found in its paths."""
    return inspect_case(case_id, kind, images, label, modalities, declared, problems)[0]


def read_checked_case(case: Case, modalities: int, declared: set[int]) -> CaseArrays:
    """Read a labeled case after the checks of ``c2fnas data check`` (``preprocess`` uses this).

    Raises:
        CaseCheckError: listing every problem found, as ``data check`` reports them.
    """
    report, arrays = inspect_case(
        case.case_id, "training", case.images, case.label, modalities, declared
    )
    if arrays is None:
        raise CaseCheckError("; ".join(report.problems))
    for warning in report.warnings:
        log.warning("%s: %s", case.case_id, warning)
    return arrays


def _resolve(root: Path, relative: Any, problems: list[str], what: str) -> Path | None:
    if not isinstance(relative, str):
        problems.append(f"{what}: no path given")
        return None
    try:
        path = resolve_path(root, relative)
    except DatasetError:
        problems.append(f"{what}: path {relative!r} leaves {OUTSIDE}")
        return None
    if not path.is_file():
        problems.append(f"{what}: {path} is missing")
        return None
    return path


def _resolve_images(root: Path, entry: dict[str, Any], problems: list[str]) -> tuple[Path, ...]:
    """The entry's image files; empty when any of them is a path problem (in ``problems``)."""
    paths = [_resolve(root, image, problems, "image") for image in entry_images(entry)]
    return () if None in paths else tuple(path for path in paths if path is not None)


def check_dataset(
    dataset_dir: str | Path, workers: int = 1, progress: Progress | None = None
) -> CheckReport:
    """Check ``dataset.json`` and every training and test case of a dataset folder (MSD or
    nnU-Net v2), the test cases including each image of ``imagesTs`` it does not list."""
    root = Path(dataset_dir).resolve()
    report = CheckReport(dataset_dir=str(root))
    try:
        description = read_description(root)
    except DatasetError as error:
        report.problems.append(str(error))
        return report
    modalities = len(description["modality"])
    declared = {int(value) for value in description["labels"]}
    entries = [("training", entry) for entry in description["training"]]
    entries += [("test", as_test_entry(entry)) for entry in description.get("test", [])]
    entries += [("test", entry) for entry in unlisted_test_images(root, description)]
    names = [_entry_name(root, kind, index, entry) for index, (kind, entry) in enumerate(entries)]
    counts = Counter(names)
    jobs = []
    for index, ((kind, entry), case_id) in enumerate(zip(entries, names, strict=True)):
        problems: list[str] = []
        if counts[case_id] > 1:
            problems.append(f"case id {case_id} is used by {counts[case_id]} entries")
        images = _resolve_images(root, entry, problems)
        label = (
            _resolve(root, entry.get("label"), problems, "label") if kind == "training" else None
        )
        jobs.append((f"{index}", (case_id, kind, images, label, modalities, declared, problems)))
    arguments = dict(jobs)
    results = {
        key: result if error is None else _crashed(arguments[key], error)
        for key, result, error in run_parallel(check_case, jobs, workers, "check", progress)
    }
    report.cases = [results[key] for key, _ in jobs]
    return report


def _entry_name(root: Path, kind: str, index: int, entry: dict[str, Any]) -> str:
    """The case id, or the entry's place in dataset.json (``training[3]``) when its image path
    names no file of the dataset (an escaping ``../../etc/passwd`` is not case "passwd")."""
    try:
        for image in entry_images(entry):
            resolve_path(root, image)
    except DatasetError:
        return f"{kind}[{index}]"
    return entry_case_id(entry)


def _crashed(args: tuple[Any, ...], error: BaseException) -> CaseReport:
    # An unexpected failure of one case becomes a problem of that case, not of the whole check;
    # some errors (MemoryError) have no message, so the kind is named too.
    reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return CaseReport(case_id=args[0], kind=args[1], problems=[f"cannot check: {reason}"])
