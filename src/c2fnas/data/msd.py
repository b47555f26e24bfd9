"""Reading a Medical Segmentation Decathlon folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``).

``dataset.json`` lists cases with paths relative to the dataset folder, e.g.
``{"image": "./imagesTr/la_003.nii.gz", "label": "./labelsTr/la_003.nii.gz"}``; test cases are
plain path strings. Modalities sit under ``modality`` (``{"0": "CT"}``) and label values under
``labels`` (``{"0": "background", "1": "liver"}``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REQUIRED_KEYS = ("modality", "labels", "training")
NIFTI_SUFFIXES = (".nii.gz", ".nii")


class DatasetError(ValueError):
    """A dataset folder or its ``dataset.json`` is unusable; the message names the file."""


@dataclass(frozen=True)
class Case:
    """One case: absolute image path and label path (``None`` for test cases)."""

    case_id: str
    image: Path
    label: Path | None = None


@dataclass(frozen=True)
class Dataset:
    """A parsed ``dataset.json``.

    Attributes:
        root: the dataset folder (absolute).
        name: the dataset's name.
        modalities: channel index -> modality name, e.g. ``{0: "CT"}``.
        labels: label value -> class name, background (0) included.
        training: labeled cases in dataset order.
        test: unlabeled cases.
    """

    root: Path
    name: str
    modalities: dict[int, str]
    labels: dict[int, str]
    training: list[Case]
    test: list[Case]

    @property
    def case_ids(self) -> list[str]:
        return [case.case_id for case in self.training]


def case_id_of(path: str | Path) -> str:
    """The case id is the file name without its NIfTI suffix: ``la_003.nii.gz`` -> ``la_003``."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_description(dataset_dir: str | Path) -> dict[str, Any]:
    """Load ``dataset.json`` and check its keys and their types (not the files it names).

    Raises:
        DatasetError: the folder or file is missing, not JSON, or lacks a required key.
    """
    root = Path(dataset_dir)
    path = root / "dataset.json"
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    if not path.is_file():
        raise DatasetError(f"{path}: missing; an MSD dataset folder needs a dataset.json")
    try:
        description = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: unreadable JSON ({error})") from None
    if not isinstance(description, dict):
        raise DatasetError(f"{path}: expected a JSON object at the top level")
    missing = [key for key in REQUIRED_KEYS if key not in description]
    if missing:
        raise DatasetError(f"{path}: missing key(s) {', '.join(missing)}")
    for key in ("modality", "labels"):
        if not isinstance(description[key], dict) or not description[key]:
            raise DatasetError(f"{path}: '{key}' must be a non-empty object")
        if not all(str(index).lstrip("-").isdigit() for index in description[key]):
            raise DatasetError(f"{path}: the keys of '{key}' must be integers")
    if 0 not in {int(value) for value in description["labels"]}:
        raise DatasetError(f"{path}: 'labels' must declare the background value 0")
    if sorted(int(index) for index in description["modality"]) != list(
        range(len(description["modality"]))
    ):
        raise DatasetError(f"{path}: the keys of 'modality' must be 0, 1, ..., n-1")
    if not isinstance(description["training"], list):
        raise DatasetError(f"{path}: 'training' must be a list")
    if not description["training"]:
        raise DatasetError(
            f"{path}: 'training' lists no cases; at least one labeled case is needed"
        )
    for index, entry in enumerate(description["training"]):
        if not (isinstance(entry, dict) and isinstance(entry.get("image"), str)):
            raise DatasetError(f"{path}: training[{index}] needs an 'image' path")
        if not isinstance(entry.get("label"), str):
            raise DatasetError(f"{path}: training[{index}] needs a 'label' path")
    if not isinstance(description.get("test", []), list):
        raise DatasetError(f"{path}: 'test' must be a list")
    return description


def resolve_path(root: Path, relative: str) -> Path:
    """Resolve a path from ``dataset.json`` inside ``root``.

    Raises:
        DatasetError: the path leaves the dataset folder (``../``, absolute, symlink out).
    """
    root = root.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise DatasetError(f"{root / 'dataset.json'}: path {relative!r} escapes the dataset folder")
    return path


def _test_path(entry: Any) -> str:
    # Some MSD releases list test cases as {"image": ...} objects instead of plain strings.
    return entry["image"] if isinstance(entry, dict) else str(entry)


def read_dataset(dataset_dir: str | Path) -> Dataset:
    """Parse ``dataset_dir/dataset.json`` into a ``Dataset`` with absolute, checked paths.

    Every listed file must exist inside the folder. ``c2fnas data check`` inspects the files
    themselves (readability, shapes, label values).

    Raises:
        DatasetError: naming ``dataset.json`` and every bad entry.
    """
    root = Path(dataset_dir).resolve()
    description = read_description(root)
    problems: list[str] = []
    training: list[Case] = []
    test: list[Case] = []

    def resolve(relative: str) -> Path:
        try:
            path = resolve_path(root, relative)
        except DatasetError as error:
            problems.append(str(error))
            return root / relative
        if not path.is_file():
            problems.append(f"{path}: missing (listed in {root / 'dataset.json'})")
        return path

    for entry in description["training"]:
        image = resolve(entry["image"])
        training.append(Case(case_id_of(image), image, resolve(entry["label"])))
    for entry in description.get("test", []):
        image = resolve(_test_path(entry))
        test.append(Case(case_id_of(image), image))
    counts = Counter(case.case_id for case in training)
    duplicates = sorted(case_id for case_id, count in counts.items() if count > 1)
    if duplicates:
        problems.append(f"{root / 'dataset.json'}: duplicate case ids {duplicates}")
    if problems:
        raise DatasetError("; ".join(problems))
    return Dataset(
        root=root,
        name=str(description.get("name", root.name)),
        modalities={int(k): str(v) for k, v in description["modality"].items()},
        labels={int(k): str(v) for k, v in sorted(description["labels"].items(), key=_int_key)},
        training=training,
        test=test,
    )


def _int_key(item: tuple[str, Any]) -> int:
    return int(item[0])
