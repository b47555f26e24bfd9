"""The preprocessed cache of a run: ``RUN_DIR/preprocessed/<case>.npz`` + ``<case>.json``.

The ``.npz`` holds ``image`` float32 ``(C, X, Y, Z)``, ``label`` uint8 ``(X, Y, Z)`` and
``locations`` int32 ``(N, 4)`` (a seeded sample of foreground voxels, rows ``[value, x, y, z]``,
used for foreground oversampling). The ``.json`` holds the properties that undo preprocessing
(``CaseGeometry.properties``; ``CaseGeometry.from_properties`` reads them back), plus the source
files' size and mtime, the plan (and its digest), the ``.npz`` size and the CRC-32 of
each of its arrays (``verified_properties`` checks them before training). The ``.json`` is written
last, so a case counts as done only when both files are complete; every write goes to a temporary
file first and is moved into place with ``os.replace``.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from c2fnas.data.fingerprint import stamps
from c2fnas.data.io import load_images, load_label
from c2fnas.data.msd import Case
from c2fnas.data.preprocess import Plan, preprocess_arrays
from c2fnas.files.atomic import write_bytes_atomic, write_json_atomic
from c2fnas.files.run_folder import RunFolder

log = logging.getLogger(__name__)

LOCATIONS_PER_CLASS = 10_000


class CacheError(ValueError):
    """A cached case is missing, damaged or not the one expected; the message names the file."""


def case_paths(run_dir: str | Path, case_id: str) -> tuple[Path, Path]:
    folder = RunFolder(run_dir).cache
    return folder / f"{case_id}.npz", folder / f"{case_id}.json"


def foreground_locations(label: np.ndarray, seed: int) -> np.ndarray:
    """Up to ``LOCATIONS_PER_CLASS`` voxels of each foreground value, rows ``[value, x, y, z]``."""
    rng = np.random.default_rng(seed)
    rows = []
    for value in np.unique(label):
        if value == 0:
            continue
        coords = np.argwhere(label == value)
        if len(coords) > LOCATIONS_PER_CLASS:
            coords = coords[rng.choice(len(coords), LOCATIONS_PER_CLASS, replace=False)]
        rows.append(np.column_stack([np.full(len(coords), value), coords]))
    if not rows:
        return np.zeros((0, 4), dtype=np.int32)
    return np.concatenate(rows).astype(np.int32)


def preprocess_case(case: Case, plan: Plan, run_dir: str | Path) -> dict[str, Any]:
    """Preprocess one labeled case and write it to the cache; returns its properties."""
    assert case.label is not None
    image, nifti = load_images(case.images)
    label, _ = load_label(case.label)
    if label.shape != image.shape[1:]:
        raise ValueError(
            f"{case.label}: shape {label.shape} differs from the image's {image.shape[1:]}"
        )
    image, label, geometry = preprocess_arrays(image, nifti.affine, plan, label)
    assert label is not None
    locations = foreground_locations(label, zlib.crc32(case.case_id.encode()))
    buffer = io.BytesIO()
    np.savez(buffer, image=image, label=label, locations=locations)
    npz_path, json_path = case_paths(run_dir, case.case_id)
    write_bytes_atomic(npz_path, buffer.getvalue())
    with zipfile.ZipFile(buffer) as archive:
        checksums = member_checksums(archive)
    properties = geometry.properties() | dict(
        case_id=case.case_id,
        source={"images": [str(path) for path in case.images], "label": str(case.label)},
        stamps=stamps(case),
        plan_digest=plan.digest(),
        plan=plan.model_dump(mode="json"),
        npz_bytes=len(buffer.getvalue()),
        npz_crc32=checksums,
        class_voxels={str(v): int(n) for v, n in enumerate(np.bincount(label.ravel())) if n},
    )
    write_json_atomic(json_path, properties)
    return properties


def read_properties(run_dir: str | Path, case_id: str) -> dict[str, Any]:
    _, json_path = case_paths(run_dir, case_id)
    try:
        return dict(json.loads(json_path.read_text()))
    except FileNotFoundError:
        raise CacheError(f"{json_path}: missing; run `c2fnas preprocess` first") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CacheError(f"{json_path}: damaged ({error}); rerun `c2fnas preprocess`") from None


def member_checksums(archive: zipfile.ZipFile) -> dict[str, int]:
    """CRC-32 of each array in an ``.npz``, from its zip directory (no data read)."""
    return {info.filename: info.CRC for info in archive.infolist()}


def verified_properties(run_dir: str | Path, case_id: str) -> dict[str, Any]:
    """The properties of a cached case once its files are shown complete, intact and its own.

    The ``.json`` must name ``case_id``; the ``.npz`` must have the size and the member checksums
    recorded when it was written (another case's file has others), and its data must match those
    checksums (reads the file once).

    Raises:
        CacheError: naming the file and what is wrong.
    """
    properties = read_properties(run_dir, case_id)
    npz_path, json_path = case_paths(run_dir, case_id)
    if properties.get("case_id") != case_id:
        raise CacheError(
            f"{json_path}: describes case {properties.get('case_id')!r}, not {case_id}"
        )
    recorded = properties.get("npz_crc32")
    if not isinstance(recorded, dict):
        raise CacheError(f"{json_path}: written by an older c2fnas, without checksums")
    try:
        size = npz_path.stat().st_size
        if size != properties.get("npz_bytes"):
            raise CacheError(
                f"{npz_path}: {size} bytes, but {properties.get('npz_bytes')} were written "
                "(truncated or replaced)"
            )
        with zipfile.ZipFile(npz_path) as archive:
            if member_checksums(archive) != recorded:
                raise CacheError(f"{npz_path}: not the file written for {case_id} (replaced)")
            damaged = archive.testzip()  # reads every member, checks its CRC
    except FileNotFoundError:
        raise CacheError(f"{npz_path}: missing") from None
    except (OSError, zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise CacheError(f"{npz_path}: unreadable ({error})") from None
    if damaged is not None:
        raise CacheError(f"{npz_path}: damaged ({damaged} fails its checksum)")
    return properties


def is_current(run_dir: str | Path, case: Case, plan_digest: str) -> bool:
    """True when the cached case exists, is intact, and matches the source files and plan."""
    _, json_path = case_paths(run_dir, case.case_id)
    if not json_path.is_file():
        return False
    try:
        properties = read_properties(run_dir, case.case_id)
        if properties.get("plan_digest") != plan_digest or properties.get("stamps") != stamps(case):
            return False
        verified_properties(run_dir, case.case_id)  # reads the arrays once more: only if current
    except CacheError as error:
        log.warning("%s; redoing it", error)
        return False
    return True


def load_arrays(run_dir: str | Path, case_id: str) -> dict[str, np.ndarray]:
    """All arrays of a cached case (``image``, ``label``, ``locations``); never unpickles."""
    npz_path, _ = case_paths(run_dir, case_id)
    try:
        with np.load(npz_path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise CacheError(f"{npz_path}: missing; run `c2fnas preprocess` first") from None
    except (OSError, ValueError, zipfile.BadZipFile, zlib.error, EOFError) as error:
        raise CacheError(f"{npz_path}: damaged ({error}); rerun `c2fnas preprocess`") from None


def load_case(
    run_dir: str | Path, case_id: str
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """A cached case: image ``(C, X, Y, Z)`` float32, label ``(X, Y, Z)`` uint8, properties.

    Raises:
        CacheError: the case is missing or damaged (naming the file).
    """
    properties = read_properties(run_dir, case_id)
    arrays = load_arrays(run_dir, case_id)
    return arrays["image"], arrays.get("label"), properties
