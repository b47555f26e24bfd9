"""Reading a dataset folder: the Medical Segmentation Decathlon layout, or nnU-Net v2's.

An MSD ``dataset.json`` lists cases with paths relative to the dataset folder, e.g.
``{"image": "./imagesTr/la_003.nii.gz", "label": "./labelsTr/la_003.nii.gz"}``; test cases are
plain path strings. Modalities sit under ``modality`` (``{"0": "CT"}``) and label values under
``labels`` (``{"0": "background", "1": "liver"}``). An nnU-Net v2 folder is read into that same
form (``c2fnas.data.nnunet``), its entries naming a case's channel files as a list.

Paths in ``dataset.json`` must stay inside the folder as written (no ``..``, not absolute);
symlinked files and folders inside it are followed, as clusters link ``imagesTr/`` to shared
storage.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from c2fnas.data import nnunet
from c2fnas.data.io import IMAGE_SUFFIXES, image_files_in
from c2fnas.data.nnunet import first_few

REQUIRED_KEYS = ("modality", "labels", "training")
OUTSIDE = "the dataset folder (absolute, or with '..')"  # what an escaping path leaves
TEST_IMAGES = "imagesTs"  # the folder of test images, which ``c2fnas run`` predicts


class DatasetError(ValueError):
    """A dataset folder or its ``dataset.json`` is unusable; the message names the file."""


@dataclass(frozen=True)
class Case:
    """One case: its image files (absolute; one 3D or 4D file, or one file per channel as
    nnU-Net stores them) and label file (``None`` for test cases)."""

    case_id: str
    images: tuple[Path, ...]
    label: Path | None = None

    @property
    def image(self) -> Path:
        """The first image file: its geometry is the case's (predictions are written like it)."""
        return self.images[0]


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
    """The case id is the file name without its image suffix: ``la_003.nii.gz`` -> ``la_003``."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def entry_images(entry: dict[str, Any]) -> list[str]:
    """The image paths of a ``training`` entry: one path, or one per channel file (v2)."""
    image = entry.get("image")
    if isinstance(image, str):
        return [image]
    return list(image) if isinstance(image, list) else []


def as_test_entry(entry: Any) -> dict[str, Any]:
    """A ``test`` entry as an object: MSD lists plain path strings (some releases objects)."""
    return entry if isinstance(entry, dict) else {"image": entry}


def entry_case_id(entry: dict[str, Any]) -> str:
    """The case id of a ``training`` or ``test`` entry: given (v2), or its first image's name."""
    if isinstance(entry.get("case_id"), str):
        return str(entry["case_id"])
    return case_id_of(entry_images(entry)[0])


def _load_json(path: Path) -> dict[str, Any]:
    if not path.parent.is_dir():
        raise DatasetError(f"{path.parent}: not a folder")
    if not path.is_file():
        raise DatasetError(
            f"{path}: missing; a dataset folder (MSD or nnU-Net v2) needs a dataset.json"
        )
    try:
        description = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: unreadable JSON ({error})") from None
    if not isinstance(description, dict):
        raise DatasetError(f"{path}: expected a JSON object at the top level")
    return description


def read_description(dataset_dir: str | Path) -> dict[str, Any]:
    """Load ``dataset.json`` in its MSD form and check its keys and their types (not the files
    it names). An MSD description comes back as written; an nnU-Net v2 one as
    ``nnunet.msd_description`` makes it (listing ``imagesTr``/``imagesTs``).

    Raises:
        DatasetError: the folder or file is missing, not JSON, or lacks a required key.
    """
    root = Path(dataset_dir)
    path = root / "dataset.json"
    description = _load_json(path)
    if nnunet.is_nnunet(description):
        try:
            description = nnunet.msd_description(root, description)
        except (ValueError, OSError) as error:
            raise DatasetError(str(error)) from None
    missing = [key for key in REQUIRED_KEYS if key not in description]
    if missing:
        raise DatasetError(
            f"{path}: missing key(s) {', '.join(missing)} (an MSD dataset.json lists "
            "'modality', 'labels' and 'training'; an nnU-Net v2 one has 'channel_names', "
            "'labels' and 'file_ending')"
        )
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
        if not (isinstance(entry, dict) and _is_image(entry.get("image"))):
            raise DatasetError(f"{path}: training[{index}] needs an 'image' path")
        if not isinstance(entry.get("label"), str):
            raise DatasetError(f"{path}: training[{index}] needs a 'label' path")
    if not isinstance(description.get("test", []), list):
        raise DatasetError(f"{path}: 'test' must be a list")
    for index, entry in enumerate(description.get("test", [])):
        if not _is_image(as_test_entry(entry).get("image")):
            raise DatasetError(f"{path}: test[{index}] needs an image path")
    return description


def _is_image(image: Any) -> bool:
    if isinstance(image, list):
        return bool(image) and all(isinstance(part, str) for part in image)
    return isinstance(image, str)


def resolve_path(root: Path, relative: str) -> Path:
    """The absolute path of a ``dataset.json`` entry, which must name a place inside ``root``.

    The check is on the path as written, not where symlinks lead: ``imagesTr/`` may be a link
    to shared storage elsewhere, and its files are read through it.

    Raises:
        DatasetError: the path is absolute or has a ``..`` part.
    """
    path = Path(relative)
    if path.is_absolute() or ".." in path.parts:
        raise DatasetError(f"{root / 'dataset.json'}: path {relative!r} leaves {OUTSIDE}")
    return root / path


def unlisted_test_images(root: Path, description: dict[str, Any]) -> list[dict[str, Any]]:
    """Test entries, one per image of ``imagesTs`` that no ``test`` entry of ``description``
    names (hidden files aside): ``c2fnas run`` predicts every image there, listed or not."""
    folder = root / TEST_IMAGES
    if not folder.is_dir():
        return []
    listed = set()
    for entry in description.get("test", []):
        for image in entry_images(as_test_entry(entry)):
            with contextlib.suppress(DatasetError):  # an escaping path names no file here
                listed.add(resolve_path(root, image).resolve())
    return [
        {"image": f"./{TEST_IMAGES}/{path.name}"}
        for path in image_files_in(folder)
        if path.resolve() not in listed
    ]


def read_dataset(dataset_dir: str | Path) -> Dataset:
    """Parse ``dataset_dir/dataset.json`` into a ``Dataset`` with absolute, checked paths.

    Every listed file must exist inside the folder. Case ids are unique across training and
    test cases, the images of ``imagesTs`` included (``unlisted_test_images``), as ``c2fnas
    data check`` requires: a prediction is named by its case id. ``data check`` also inspects
    the files themselves (readability, shapes, label values).

    Raises:
        DatasetError: naming ``dataset.json`` and each kind of bad entry once, with its count
            and the first few entries.
    """
    root = Path(dataset_dir).resolve()
    description = read_description(root)
    escaping: list[str] = []
    missing: list[Path] = []

    def resolve(relative: str) -> Path:
        try:
            path = resolve_path(root, relative)
        except DatasetError:
            escaping.append(repr(relative))
            return root / relative
        if not path.is_file():
            missing.append(path)
        return path

    def case(entry: dict[str, Any], label: str | None) -> Case:
        images = tuple(resolve(image) for image in entry_images(entry))
        return Case(entry_case_id(entry), images, None if label is None else resolve(label))

    training = [case(entry, entry["label"]) for entry in description["training"]]
    test = [case(as_test_entry(entry), None) for entry in description.get("test", [])]
    problems = _path_problems(root, escaping, missing)
    unlisted = [entry_case_id(entry) for entry in unlisted_test_images(root, description)]
    counts = Counter([case.case_id for case in training + test] + unlisted)
    duplicates = sorted(case_id for case_id, count in counts.items() if count > 1)
    if duplicates:
        problems.append(
            f"{root / 'dataset.json'}: case ids used by more than one training or test case "
            f"(in dataset.json or {TEST_IMAGES}): {duplicates}"
        )
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


def _path_problems(root: Path, escaping: list[str], missing: list[Path]) -> list[str]:
    """One message per kind of bad path, however many entries it hits."""
    problems, description = [], root / "dataset.json"
    if escaping:
        problems.append(
            f"{description}: {len(escaping)} path(s) leave {OUTSIDE}: {first_few(escaping)}"
        )
    if missing:
        links = sorted({str(link) for path in missing for link in _broken_links(root, path)})
        dangling = f" ({', '.join(links)}: a symlink to nothing)" if links else ""
        problems.append(
            f"{description}: {len(missing)} listed file(s) missing{dangling}: "
            f"{first_few([str(path) for path in missing])}"
        )
    return problems


def _broken_links(root: Path, path: Path) -> list[Path]:
    """The folders or file on the way from ``root`` to ``path`` that are dangling symlinks."""
    found, current = [], root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink() and not current.exists():
            found.append(current)
            break
    return found


def _int_key(item: tuple[str, Any]) -> int:
    return int(item[0])
