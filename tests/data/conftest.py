from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from c2fnas.data.pipeline import preprocess_dataset
from c2fnas.data.synth import make_synthetic_dataset

SMALL = (24, 24, 12)


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 tiny synthetic cases (read-only: copy before changing)."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synth"), cases=6, shape=SMALL, seed=3)


@pytest.fixture(scope="session")
def run_dir(synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic dataset preprocessed at 1 mm (read-only)."""
    run = tmp_path_factory.mktemp("run")
    preprocess_dataset(synthetic, run)
    return run


def save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path
