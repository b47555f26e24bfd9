"""Class probabilities back in the original image's geometry, and their ``.npz`` files.

``data.preprocess.restore_prediction`` brings a label map back (nearest neighbour); this module
does the same for probabilities, with linear interpolation, so that an argmax taken on the
original grid sees smooth class boundaries (as nnU-Net resamples probabilities, not labels).
Linear interpolation mixes neighbours with weights summing to one, so restored probabilities
still sum to one per voxel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from nibabel.orientations import apply_orientation, ornt_transform

from c2fnas.data.msd import case_id_of
from c2fnas.data.preprocess import CANONICAL, resample_linear
from c2fnas.files.atomic import replacing

PROBABILITY_SUFFIX = ".npz"


def restore_probabilities(probabilities: np.ndarray, properties: dict[str, Any]) -> np.ndarray:
    """Bring ``(K, x, y, z)`` probabilities from the preprocessed grid to the original one.

    Undoes the crop (outside it: background, probability 1 for class 0), the resampling
    (trilinear, the voxel-centre mapping of preprocessing) and the reorientation.

    Args:
        probabilities: float ``(K, x, y, z)`` shaped like the preprocessed image.
        properties: from ``preprocess_images`` or ``cache.load_case``.

    Returns:
        float32 ``(K, X, Y, Z)`` with the original image's spatial shape and voxel order.
    """
    box = properties["crop_box"]
    expected = tuple(stop - start for start, stop in box)
    if tuple(probabilities.shape[1:]) != expected:
        raise ValueError(f"probabilities shape {probabilities.shape[1:]} differs from {expected}")
    full = np.zeros((len(probabilities), *properties["resampled_shape"]), dtype=np.float32)
    full[0] = 1.0
    full[(slice(None), *(slice(start, stop) for start, stop in box))] = probabilities
    full = resample_linear(full, properties["canonical_shape"])
    back = ornt_transform(CANONICAL, np.asarray(properties["orientation"], dtype=float))
    # apply_orientation works on the first three axes: move the classes last and back.
    restored = apply_orientation(full.transpose(1, 2, 3, 0), back).transpose(3, 0, 1, 2)
    assert list(restored.shape[1:]) == list(properties["original_shape"]), restored.shape
    return np.ascontiguousarray(restored, dtype=np.float32)


def probabilities_path(label_path: Path) -> Path:
    """``case.npz`` beside the label map ``case.nii.gz`` (or ``case.nrrd``, ...)."""
    return label_path.with_name(case_id_of(label_path) + PROBABILITY_SUFFIX)


def write_probabilities(
    probabilities: np.ndarray, label_values: list[int], label_path: Path
) -> Path:
    """Write ``probabilities`` (K, X, Y, Z) as compressed float16 beside its label map.

    The file holds ``probabilities`` (float16, classes in the order of ``labels``) and
    ``labels`` (int64 label values); read it with ``np.load(path)`` (no pickle).
    """
    path = probabilities_path(label_path)
    with replacing(path) as temporary:
        np.savez_compressed(
            temporary,
            probabilities=probabilities.astype(np.float16),
            labels=np.asarray(label_values, dtype=np.int64),
        )
    return path
