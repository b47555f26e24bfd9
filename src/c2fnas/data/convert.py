"""``c2fnas data convert``: write a dataset folder in the MSD layout or nnU-Net v2's.

Either layout is read as one ``Dataset`` (``msd.read_dataset``) and written in the other:

- nnU-Net v2: ``imagesTr/CASE_0000.nii.gz`` per channel, ``labelsTr/CASE.nii.gz``,
  ``imagesTs/CASE_0000.nii.gz``; ``dataset.json`` with ``channel_names``, ``labels`` as
  name -> value, ``file_ending`` and ``numTraining``.
- MSD: ``imagesTr/CASE.nii.gz`` (4D when several channels), ``labelsTr/CASE.nii.gz``,
  ``imagesTs/CASE.nii.gz``; ``dataset.json`` listing them.

A file that stays one file (labels, single-channel images) is copied byte for byte. A 4D NIfTI
is split into 3D files, and channel files are stacked into a 4D NIfTI, keeping the first file's
header (affine, qform, sform); intensity scaling is applied to the voxels, so values are equal.
Only NIfTI channels are split or stacked. ``labelsTs/`` (held-out references) is copied as is.

The user's files are never overwritten: the destination must be absent or an empty folder. The
dataset is written into a hidden sibling folder and renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from c2fnas.data.io import IMAGE_SUFFIXES, NIFTI_SUFFIXES, load_volume
from c2fnas.data.msd import (
    Case,
    Dataset,
    DatasetError,
    case_id_of,
    read_dataset,
    read_description,
)
from c2fnas.data.nnunet import channel_file

LAYOUTS = ("nnunet", "msd")


def convert_dataset(source: str | Path, destination: str | Path, layout: str) -> Path:
    """Write the dataset of ``source`` (MSD or nnU-Net v2) into ``destination`` in ``layout``
    (one of ``LAYOUTS``).

    Raises:
        DatasetError: ``source`` is unusable, ``destination`` exists and is not an empty
            folder, the images mix file endings, or channels are not NIfTI where they must be
            split or stacked.
        OSError: ``destination`` cannot be written.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: choose {' or '.join(LAYOUTS)}")
    destination = Path(destination)
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise DatasetError(f"{destination}: exists and is not an empty folder; choose a new one")
    dataset = read_dataset(source)
    description = read_description(dataset.root)
    ending = _file_ending(dataset)
    destination.parent.mkdir(parents=True, exist_ok=True)
    building = destination.parent / f".{destination.name}.tmp{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)  # left by a killed conversion
    try:
        if layout == "nnunet":
            written = _write_nnunet(dataset, building, ending)
        else:
            written = _write_msd(dataset, building, ending)
        written |= {"name": dataset.name, "description": str(description.get("description", ""))}
        held_out = dataset.root / "labelsTs"
        if held_out.is_dir():
            shutil.copytree(held_out, building / "labelsTs")
        (building / "dataset.json").write_text(json.dumps(written, indent=1) + "\n")
        building.rename(destination)  # onto an empty folder too (POSIX)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return destination


def _file_ending(dataset: Dataset) -> str:
    """The one image suffix of every file: nnU-Net names a dataset's files with one ending."""
    paths = [path for case in dataset.training + dataset.test for path in case.images]
    paths += [case.label for case in dataset.training if case.label is not None]
    endings = {path.name[len(case_id_of(path)) :].lower() for path in paths}
    if len(endings) != 1 or not endings <= set(IMAGE_SUFFIXES):
        raise DatasetError(
            f"{dataset.root}: the files end in {', '.join(sorted(endings))}; converting needs "
            f"one of {', '.join(IMAGE_SUFFIXES)} for all of them"
        )
    return endings.pop()


def _write_nnunet(dataset: Dataset, root: Path, ending: str) -> dict[str, Any]:
    names = list(dataset.labels.values())
    if len(set(names)) != len(names):
        raise DatasetError(
            f"{dataset.root / 'dataset.json'}: label names {names} repeat; nnU-Net v2 maps "
            "each name to one value"
        )
    channels = len(dataset.modalities)
    for folder, cases in (("imagesTr", dataset.training), ("imagesTs", dataset.test)):
        for case in cases:
            names = [channel_file(case.case_id, c, ending) for c in range(channels)]
            _write_channels(case, [root / folder / name for name in names])
    for case in dataset.training:
        assert case.label is not None
        _copy(case.label, root / "labelsTr" / f"{case.case_id}{ending}")
    return {
        "channel_names": {str(index): name for index, name in dataset.modalities.items()},
        "labels": {name: value for value, name in dataset.labels.items()},
        "numTraining": len(dataset.training),
        "file_ending": ending,
    }


def _write_msd(dataset: Dataset, root: Path, ending: str) -> dict[str, Any]:
    training, test = [], []
    for case in dataset.training:
        assert case.label is not None
        image, label = f"imagesTr/{case.case_id}{ending}", f"labelsTr/{case.case_id}{ending}"
        _join_channels(case, root / image)
        _copy(case.label, root / label)
        training.append({"image": f"./{image}", "label": f"./{label}"})
    for case in dataset.test:
        image = f"imagesTs/{case.case_id}{ending}"
        _join_channels(case, root / image)
        test.append(f"./{image}")
    channels = len(dataset.modalities)
    return {
        "tensorImageSize": "4D" if channels > 1 else "3D",
        "modality": {str(index): name for index, name in dataset.modalities.items()},
        "labels": {str(value): name for value, name in dataset.labels.items()},
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
    }


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)  # follows symlinks: the copy holds the data


def _require_nifti(case: Case, what: str) -> None:
    bad = [path.name for path in case.images if not path.name.lower().endswith(NIFTI_SUFFIXES)]
    if bad:
        raise DatasetError(f"{', '.join(bad)}: only NIfTI channels can be {what}")


def _write_channels(case: Case, targets: list[Path]) -> None:
    """The case's channels as one 3D file each (a 4D NIfTI is split)."""
    if len(case.images) == len(targets):
        for source, target in zip(case.images, targets, strict=True):
            _copy(source, target)
        return
    _require_nifti(case, "split")
    image = load_volume(case.image)
    data = np.asanyarray(image.dataobj).reshape(*image.shape[:3], len(targets))
    for channel, target in enumerate(targets):
        _save_like(data[..., channel], image, target)


def _join_channels(case: Case, target: Path) -> None:
    """The case's channel files as one image (several: stacked into a 4D NIfTI)."""
    if len(case.images) == 1:
        _copy(case.image, target)
        return
    _require_nifti(case, "stacked")
    images = [load_volume(path) for path in case.images]
    data = np.stack([np.asanyarray(image.dataobj) for image in images], axis=-1)
    _save_like(data, images[0], target)


def _save_like(data: np.ndarray, reference: nib.Nifti1Image, target: Path) -> None:
    """Save voxels with the reference's header (affine, qform, sform), scaling already applied."""
    header = reference.header.copy()
    header.set_data_dtype(data.dtype)
    image = nib.Nifti1Image(np.ascontiguousarray(data), reference.affine, header=header)
    image.header.set_slope_inter(1.0, 0.0)
    image.set_qform(reference.get_qform(), int(reference.header["qform_code"]))
    image.set_sform(reference.get_sform(), int(reference.header["sform_code"]))
    target.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(target))
