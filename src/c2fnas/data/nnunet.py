"""The nnU-Net v2 raw layout, read as the MSD description the rest of ``c2fnas.data`` uses.

A v2 folder (``DatasetNNN_Name/``) lists no files: ``dataset.json`` holds ``channel_names``
(``{"0": "T1", "1": "T2"}``), ``labels`` as name -> value (``{"background": 0, "tumor": 1}``),
``file_ending`` (``".nii.gz"``) and ``numTraining``; the cases are found by listing
``imagesTr/`` (``CASE_0000.nii.gz``, ``CASE_0001.nii.gz``: one file per channel) beside
``labelsTr/CASE.nii.gz``, and ``imagesTs/`` likewise, without labels.

``msd_description`` gives the MSD form (``modality``, ``labels`` as value -> name, ``training``
and ``test`` lists) whose entries name the case and every channel file, e.g.
``{"case_id": "la_003", "image": ["./imagesTr/la_003_0000.nii.gz"],
"label": "./labelsTr/la_003.nii.gz"}``. Errors are ``ValueError`` naming ``dataset.json``
(``msd.read_description`` turns them into ``DatasetError``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from c2fnas.data.io import IMAGE_SUFFIXES, is_hidden

LAYOUT = "nnU-Net v2"
CHANNEL_DIGITS = 4  # CASE_0000: nnU-Net's channel suffix
NAMED = 3  # a problem that hits many files names the first few and counts the rest


def is_nnunet(description: dict[str, Any]) -> bool:
    """A v2 ``dataset.json``: ``channel_names`` and no ``training`` list."""
    return "channel_names" in description and "training" not in description


def channel_file(case_id: str, channel: int, ending: str) -> str:
    """``("la_003", 1, ".nii.gz")`` -> ``"la_003_0001.nii.gz"``."""
    return f"{case_id}_{channel:0{CHANNEL_DIGITS}d}{ending}"


def parse_channel_file(name: str) -> tuple[str, int, str] | None:
    """``"la_003_0001.nii.gz"`` -> ``("la_003", 1, ".nii.gz")``; ``None`` when not so named."""
    suffix = next((s for s in IMAGE_SUFFIXES if name.lower().endswith(s)), None)
    if suffix is None:
        return None
    case_id, _, channel = name[: -len(suffix)].rpartition("_")
    if not case_id or len(channel) != CHANNEL_DIGITS or not channel.isdigit():
        return None
    return case_id, int(channel), name[-len(suffix) :]


def group_channel_files(names: Sequence[str], channels: int) -> dict[str, list[str]] | None:
    """Image file names grouped the nnU-Net way: ``CASE<suffix>`` -> its ``channels`` files
    in channel order; ``None`` unless every name is a channel file and every case complete.

    ``["a_0000.nii.gz", "a_0001.nii.gz"]`` with 2 channels -> ``{"a.nii.gz": [both]}``.
    """
    found: dict[tuple[str, str], dict[int, str]] = {}
    for name in names:
        parsed = parse_channel_file(name)
        if parsed is None:
            return None
        case_id, channel, suffix = parsed
        found.setdefault((case_id, suffix), {})[channel] = name
    if not found or any(sorted(files) != list(range(channels)) for files in found.values()):
        return None
    return {
        case_id + suffix: [files[channel] for channel in range(channels)]
        for (case_id, suffix), files in sorted(found.items())
    }


def first_few(items: list[str]) -> str:
    """``a, b, c and 517 more``: one line for a problem of many files."""
    more = f" and {len(items) - NAMED} more" if len(items) > NAMED else ""
    return ", ".join(items[:NAMED]) + more


def msd_labels(path: Path, labels: Any) -> dict[str, str]:
    """v2 ``labels`` (name -> value) as MSD ``labels`` (value -> name).

    Raises:
        ValueError: not an object of integer values, region-based (a list of values), values
            repeated, or no background 0.
    """
    if not isinstance(labels, dict) or not labels:
        raise ValueError(f"{path}: 'labels' must be a non-empty object of name -> value")
    regions = [name for name, value in labels.items() if isinstance(value, (list, tuple))]
    if regions:
        raise ValueError(
            f"{path}: region-based labels are not supported ({', '.join(regions)} map to lists "
            "of values); c2fnas segments one class per label value"
        )
    by_value: dict[int, str] = {}
    for name, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{path}: label {name!r} must map to an integer, not {value!r}")
        if value in by_value:
            raise ValueError(f"{path}: labels {by_value[value]!r} and {name!r} share value {value}")
        by_value[value] = str(name)
    if 0 not in by_value:
        raise ValueError(f"{path}: 'labels' must map the background to 0")
    return {str(value): by_value[value] for value in sorted(by_value)}


def _file_ending(path: Path, description: dict[str, Any]) -> str:
    ending = description.get("file_ending")
    if ending not in IMAGE_SUFFIXES:
        raise ValueError(
            f"{path}: 'file_ending' is {ending!r}; c2fnas reads {', '.join(IMAGE_SUFFIXES)}"
        )
    return str(ending)


def _channels(path: Path, description: dict[str, Any]) -> dict[str, str]:
    names = description["channel_names"]
    if not isinstance(names, dict) or not names:
        raise ValueError(f"{path}: 'channel_names' must be a non-empty object")
    if sorted(str(key) for key in names) != [str(i) for i in range(len(names))]:
        raise ValueError(f"{path}: the keys of 'channel_names' must be 0, 1, ..., n-1")
    return {str(key): str(value) for key, value in names.items()}


def list_cases(root: Path, folder: str, ending: str, channels: int) -> dict[str, list[str]]:
    """Case id -> its channel files (``./folder/CASE_0000.nii.gz``, ...), listing ``root/folder``.

    Symlinked folders and files are followed. Files of other endings are ignored.

    Raises:
        ValueError: files not named ``CASE_XXXX<ending>``, or cases without every channel.
    """
    directory = root / folder
    if not directory.is_dir():
        return {}
    found: dict[str, dict[int, str]] = {}
    misnamed = []
    for file in sorted(directory.iterdir()):
        if is_hidden(file) or not file.name.endswith(ending):
            continue
        parsed = parse_channel_file(file.name)
        if parsed is None or parsed[2] != ending:
            misnamed.append(file.name)
            continue
        found.setdefault(parsed[0], {})[parsed[1]] = f"./{folder}/{file.name}"
    if misnamed:
        raise ValueError(
            f"{directory}: {len(misnamed)} file(s) not named CASE_XXXX{ending} (XXXX: the "
            f"channel): {first_few(misnamed)}"
        )
    incomplete = [case for case, files in found.items() if sorted(files) != list(range(channels))]
    if incomplete:
        expected = ", ".join(channel_file("CASE", c, ending) for c in range(channels))
        raise ValueError(
            f"{directory}: {len(incomplete)} case(s) do not have exactly the {channels} channel "
            f"file(s) {expected}: {first_few(incomplete)}"
        )
    return {case: [files[c] for c in range(channels)] for case, files in sorted(found.items())}


def msd_description(root: Path, description: dict[str, Any]) -> dict[str, Any]:
    """The MSD form of a v2 ``dataset.json``, with the cases found in ``imagesTr``/``imagesTs``.

    Raises:
        ValueError: naming ``dataset.json`` or the folder, and what is wrong.
    """
    path = root / "dataset.json"
    if "dataset" in description:
        raise ValueError(f"{path}: explicit 'dataset' file lists are not supported")
    ending = _file_ending(path, description)
    modality = _channels(path, description)
    labels = msd_labels(path, description.get("labels"))
    training = list_cases(root, "imagesTr", ending, len(modality))
    if not training:
        raise ValueError(
            f"{root / 'imagesTr'}: no {channel_file('CASE', 0, ending)} files; at least one "
            "labeled case is needed"
        )
    declared = description.get("numTraining")
    if declared is not None and declared != len(training):
        raise ValueError(
            f"{path}: 'numTraining' is {declared} but imagesTr holds {len(training)} case(s)"
        )
    test = list_cases(root, "imagesTs", ending, len(modality))
    return {
        "name": str(description.get("name", root.name)),
        "description": str(description.get("description", "")),
        "layout": LAYOUT,
        "file_ending": ending,
        "modality": modality,
        "labels": labels,
        "numTraining": len(training),
        "numTest": len(test),
        "training": [
            {"case_id": case, "image": files, "label": f"./labelsTr/{case}{ending}"}
            for case, files in training.items()
        ],
        "test": [{"case_id": case, "image": files} for case, files in test.items()],
    }
