"""A synthetic MSD dataset that a small network learns in minutes on a CPU.

Each case: an ellipsoidal body (label 0 but non-zero intensity), an ellipsoidal organ inside it
(label 1) and a spherical lesion inside the organ (label 2), drawn in millimetres so the anatomy
has the same physical size whatever the voxel size. Voxels are anisotropic (about 0.9 x 0.9 x
1.8 mm), the affine is oblique (a few degrees of rotation) and stored with flipped X and Y axes
(like DICOM's LPS), shapes vary by about +-12% per axis, and intensities carry partial-volume blur,
a smooth bias field and Gaussian noise. MR-like channels have exactly 0 outside the body (so
cropping to non-zero does something); a ``CT`` channel is in Hounsfield units with air at -1000.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

DEFAULT_SHAPE = (64, 64, 32)
DEFAULT_SPACING = (0.9, 0.9, 1.8)  # mm
LABELS = {"0": "background", "1": "organ", "2": "lesion"}
# mean intensity of background, body, organ, lesion; and the noise std
CT_TISSUE = (-1000.0, 40.0, 110.0, 190.0, 15.0)
MR_TISSUES = ((0.0, 100.0, 180.0, 290.0, 12.0), (0.0, 150.0, 90.0, 220.0, 14.0))


def _affine(rng: np.random.Generator, spacing: Sequence[float], shape: Sequence[int]) -> np.ndarray:
    rotation = Rotation.from_euler("zyx", rng.uniform(-12, 12, size=3), degrees=True).as_matrix()
    flips = np.diag([-1.0, -1.0, 1.0])  # voxel X, Y run towards -world X, -world Y (LPS storage)
    affine = np.eye(4)
    affine[:3, :3] = rotation @ flips @ np.diag(spacing)
    centre = (np.array(shape) - 1) / 2
    affine[:3, 3] = rng.uniform(-50, 50, size=3) - affine[:3, :3] @ centre
    return affine


def _ellipsoid(points: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    return (((points - centre) / radii) ** 2).sum(axis=-1) <= 1.0


def make_case(
    rng: np.random.Generator, shape: Sequence[int], modalities: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One case: image ``(X, Y, Z)`` or ``(X, Y, Z, C)`` float32, label uint8, affine."""
    shape = [max(8, round(size * rng.uniform(0.88, 1.12))) for size in shape]
    spacing = np.array(DEFAULT_SPACING) * rng.uniform(0.95, 1.05, size=3)
    extent = np.array(shape) * spacing  # mm
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1)
    points = (grid + 0.5) * spacing  # voxel centres in mm from the corner
    body_radii = extent / 2 * rng.uniform(0.78, 0.9, size=3)
    body_centre = extent / 2 + rng.uniform(-0.04, 0.04, size=3) * extent
    organ_radii = body_radii * rng.uniform(0.5, 0.6, size=3)
    room = body_radii - organ_radii
    organ_centre = body_centre + rng.uniform(-0.5, 0.5, size=3) * room
    lesion_radius = organ_radii.min() * rng.uniform(0.45, 0.6)
    lesion_room = organ_radii - lesion_radius
    lesion_centre = organ_centre + rng.uniform(-0.45, 0.45, size=3) * lesion_room / math.sqrt(3)
    body = _ellipsoid(points, body_centre, body_radii)
    label = np.zeros(shape, dtype=np.uint8)
    label[_ellipsoid(points, organ_centre, organ_radii) & body] = 1
    label[_ellipsoid(points, lesion_centre, np.full(3, lesion_radius)) & (label == 1)] = 2
    channels = []
    for index, name in enumerate(modalities):
        ct = name.strip().upper() == "CT"
        air, soft, organ, lesion, noise = CT_TISSUE if ct else MR_TISSUES[index % len(MR_TISSUES)]
        tissue = np.where(body, soft, air).astype(np.float32)
        tissue[label == 1], tissue[label == 2] = organ, lesion
        tissue = ndimage.gaussian_filter(tissue, sigma=0.6 / spacing)
        if not ct:  # a smooth multiplicative bias field, as in MR
            phase = rng.uniform(0, 2 * np.pi, size=3)
            bias = 1 + 0.08 * np.cos(points / extent * np.pi + phase).sum(axis=-1) / 3
            tissue *= bias.astype(np.float32)
        tissue += rng.normal(0.0, noise, size=shape).astype(np.float32)
        if not ct:
            tissue[~body] = 0.0
        channels.append(tissue)
    image = channels[0] if len(channels) == 1 else np.stack(channels, axis=-1)
    return image.astype(np.float32), label, _affine(rng, spacing, shape)


def _save(data: np.ndarray, affine: np.ndarray, path: Path) -> None:
    nifti = nib.Nifti1Image(data, affine)
    nifti.set_qform(affine, code=1)
    nifti.set_sform(affine, code=1)
    nib.save(nifti, str(path))


def make_synthetic_dataset(
    out_dir: str | Path,
    cases: int = 20,
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
    modalities: Sequence[str] = ("MR",),
    test_cases: int = 0,
) -> Path:
    """Write an MSD-layout dataset (``dataset.json``, ``imagesTr``, ``labelsTr``, ``imagesTs``).

    Args:
        out_dir: created if needed; existing files of the same names are overwritten.
        cases: labeled training cases.
        seed: the whole dataset is a function of the seed.
        shape: mean voxel grid ``(X, Y, Z)``; each case varies it by up to +-12%.
        modalities: one name per channel; ``"CT"`` gives Hounsfield units, others MR-like
            contrasts; several give 4D images with channels on the 4th axis.
        test_cases: unlabeled cases in ``imagesTs``.

    Returns:
        The dataset folder.
    """
    if cases < 1 or test_cases < 0 or len(shape) != 3 or min(shape) < 8 or not modalities:
        raise ValueError("need cases >= 1, test_cases >= 0, a shape of 3 sizes >= 8, a modality")
    root = Path(out_dir)
    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    training, test = [], []
    for index in range(cases + test_cases):
        image, label, affine = make_case(np.random.default_rng([seed, index]), shape, modalities)
        name = f"synth_{index:03d}.nii.gz"
        if index < cases:
            _save(image, affine, root / "imagesTr" / name)
            _save(label, affine, root / "labelsTr" / name)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            _save(image, affine, root / "imagesTs" / name)
            test.append(f"./imagesTs/{name}")
    description = {
        "name": "Synthetic",
        "description": "c2fnas synthetic data: body, organ (1), lesion (2)",
        "tensorImageSize": "3D" if len(modalities) == 1 else "4D",
        "modality": {str(i): name for i, name in enumerate(modalities)},
        "labels": LABELS,
        "numTraining": cases,
        "numTest": test_cases,
        "training": training,
        "test": test,
        "seed": seed,
    }
    (root / "dataset.json").write_text(json.dumps(description, indent=1) + "\n")
    return root
