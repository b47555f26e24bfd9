"""Dataset fingerprint (``RUN_DIR/fingerprint.json``) and the preprocessing plan made from it.

Per case, once it passes the checks of ``c2fnas data check`` (so no NaN ever enters a statistic):
canonical shape and spacing, foreground intensity statistics per channel, voxel count per label
value and a small seeded sample of foreground intensities. Per dataset: the same pooled,
which gives the target spacing for ``--spacing auto`` (median) and the CT clipping and z-score.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from nibabel.orientations import io_orientation

from c2fnas.data.check import read_checked_case
from c2fnas.data.geometry import canonical_spacing
from c2fnas.data.io import file_stamp
from c2fnas.data.msd import Case, Dataset
from c2fnas.data.preprocess import ChannelNormalization, Plan

CT_PERCENTILES = (0.5, 99.5)
SAMPLES_TOTAL = 20_000  # foreground intensities kept over the whole dataset, per channel


def stamps(case: Case) -> dict[str, Any]:
    """Size and mtime of the case's files: if unchanged, the cached results stand.

    ``image`` is the first image file's; the further channel files of an nnU-Net case are under
    ``channels`` (absent for one file, so the stamps of single-file cases read as before).
    """
    result: dict[str, Any] = {"image": file_stamp(case.images[0])}
    if len(case.images) > 1:
        result["channels"] = [file_stamp(path) for path in case.images[1:]]
    if case.label is not None:
        result["label"] = file_stamp(case.label)
    return result


def changed_files(case: Case, recorded: dict[str, Any]) -> list[Path]:
    """The files of ``case`` whose size or mtime differ from ``recorded`` (its ``stamps`` of
    before); every file of the case when they do not even list the same files."""
    files = [*case.images, *([case.label] if case.label is not None else [])]
    before = [recorded.get("image"), *recorded.get("channels", [])]
    before += [recorded["label"]] if "label" in recorded else []
    if len(before) != len(files):
        return files
    changed = zip(files, before, strict=True)
    return [path for path, stamp in changed if _stamp_or_none(path) != stamp]


def _stamp_or_none(path: Path) -> list[int] | None:
    try:
        return file_stamp(path)
    except OSError:  # gone: changed
        return None


def _stats(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    low, high = np.percentile(values, CT_PERCENTILES)
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "percentile_00_5": float(low),
        "percentile_99_5": float(high),
    }


def checked_against(modalities: int, labels: set[int]) -> dict[str, Any]:
    """What a fingerprint entry was checked against: reused only while ``dataset.json`` agrees."""
    return {"modalities": modalities, "labels": sorted(labels)}


def case_fingerprint(
    case: Case, samples_per_case: int, modalities: int, labels: set[int]
) -> dict[str, Any]:
    """Statistics of one labeled case, read once after the checks of ``c2fnas data check``.

    Args:
        samples_per_case: foreground intensities kept per channel.
        modalities, labels: what ``dataset.json`` declares (channel count, label values).

    Raises:
        CaseCheckError: the case has a problem ``data check`` reports (NaN voxels, undeclared
            label values, image and label apart, ...), so no statistic ever sees it.
    """
    assert case.label is not None
    arrays = read_checked_case(case, modalities, labels)
    image, label = arrays.image, arrays.label
    assert label is not None
    foreground = label > 0
    rng = np.random.default_rng(zlib.crc32(case.case_id.encode()))
    intensity, samples = [], []
    for channel in image:
        values = channel[foreground]
        intensity.append(_stats(values))
        take = min(samples_per_case, values.size)
        samples.append([float(v) for v in rng.choice(values, take, replace=False)])
    counts = np.bincount(label.ravel())
    spacing = canonical_spacing(arrays.affine)
    shape = [int(image.shape[1 + axis]) for axis in _canonical_axes(arrays.affine)]
    return {
        "stamps": stamps(case),
        "checked": checked_against(modalities, labels),
        "shape": shape,
        "spacing": spacing,
        "intensity": intensity,
        "class_voxels": {str(value): int(n) for value, n in enumerate(counts) if n},
        "foreground_samples": samples,
    }


def _canonical_axes(affine: np.ndarray) -> list[int]:
    """File axis that becomes canonical axis 0, 1, 2."""

    order = [0, 0, 0]
    for axis, (target, _) in enumerate(io_orientation(affine)):
        order[int(target)] = axis
    return order


def summarize(cases: dict[str, dict[str, Any]], channels: int) -> dict[str, Any]:
    """Dataset-wide statistics from the per-case fingerprints."""
    spacings = np.array([entry["spacing"] for entry in cases.values()])
    shapes = np.array([entry["shape"] for entry in cases.values()])
    class_voxels: dict[str, int] = {}
    for entry in cases.values():
        for value, n in entry["class_voxels"].items():
            class_voxels[value] = class_voxels.get(value, 0) + n
    total = sum(class_voxels.values())
    intensity = []
    for channel in range(channels):
        pooled = np.concatenate(
            [np.asarray(entry["foreground_samples"][channel]) for entry in cases.values()]
        )
        intensity.append(_stats(pooled))
    return {
        "cases": len(cases),
        "spacing": _axis_summary(spacings),
        "shape": _axis_summary(shapes),
        "intensity_foreground": intensity,
        "class_voxels": class_voxels,
        "class_frequency": {value: n / total for value, n in sorted(class_voxels.items())},
    }


def _axis_summary(values: np.ndarray) -> dict[str, list[float]]:
    return {
        "median": np.median(values, axis=0).tolist(),
        "min": values.min(axis=0).tolist(),
        "max": values.max(axis=0).tolist(),
    }


def make_plan(
    dataset: Dataset,
    fingerprint: dict[str, Any],
    spacing: Sequence[float] | str | None = None,
) -> Plan:
    """The plan for a dataset.

    Args:
        dataset: gives modality names (``CT`` -> CT normalisation) and labels.
        fingerprint: from ``summarize`` plus ``cases`` (the per-case entries).
        spacing: ``None`` for 1.0 mm isotropic (paper), ``"auto"`` for the median spacing, or
            three numbers in mm (canonical X, Y, Z).
    """
    if spacing is None:
        target = (1.0, 1.0, 1.0)
    elif isinstance(spacing, str):
        if spacing != "auto":
            raise ValueError(f"spacing must be 'auto' or three numbers, got {spacing!r}")
        target = tuple(float(v) for v in fingerprint["spacing"]["median"])
    else:
        target = tuple(float(v) for v in spacing)
    if len(target) != 3 or not all(np.isfinite(target)) or min(target) <= 0:
        raise ValueError(f"spacing must be three positive numbers in mm, got {spacing!r}")
    normalization = []
    for channel, name in sorted(dataset.modalities.items()):
        if name.strip().upper() != "CT":
            normalization.append(ChannelNormalization(scheme="mr"))
            continue
        pooled = np.concatenate(
            [np.asarray(e["foreground_samples"][channel]) for e in fingerprint["cases"].values()]
        )
        if pooled.size == 0:
            raise ValueError(f"channel {channel} ({name}): no foreground voxels to normalise CT")
        low, high = (float(v) for v in np.percentile(pooled, CT_PERCENTILES))
        clipped = np.clip(pooled, low, high)
        normalization.append(
            ChannelNormalization(
                scheme="ct", clip=(low, high), mean=float(clipped.mean()), std=float(clipped.std())
            )
        )
    return Plan(
        spacing=target,  # type: ignore[arg-type]
        normalization=normalization,
        modalities=dict(dataset.modalities),
        labels=dict(dataset.labels),
        dataset=dataset.name,
    )
