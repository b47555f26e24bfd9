"""Class probabilities in the original image's geometry as ``.npz`` files beside the label map.

``CaseGeometry.restore_probabilities`` brings them back to that geometry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from c2fnas.data.msd import case_id_of
from c2fnas.files.atomic import replacing

PROBABILITY_SUFFIX = ".npz"


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
