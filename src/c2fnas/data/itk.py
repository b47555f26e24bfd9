"""ITK geometry (origin, spacing, direction; LPS) as the RAS affine c2fnas works in, and back.

SimpleITK reads and writes the formats NIfTI does not cover (``.nrrd``, ``.nhdr``, ``.mha``,
``.mhd``). Its world frame is LPS (x towards the patient's left, y posterior); nibabel's affines
are RAS, so the first two world axes change sign. Its arrays are ``(Z, Y, X)``; c2fnas's are
``(X, Y, Z)`` like nibabel's. With ``D`` the direction matrix (columns: the voxel axes in world
space) and ``F = diag(-1, -1, 1)``::

    affine[:3, :3] = F @ D @ diag(spacing)        affine[:3, 3] = F @ origin
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])  # its own inverse


def affine_from_itk(
    origin: Sequence[float], spacing: Sequence[float], direction: Sequence[float]
) -> np.ndarray:
    """The 4x4 RAS voxel-to-world affine of a 3D ITK image's geometry (direction row-major)."""
    rotation = np.asarray(direction, dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ rotation @ np.diag(np.asarray(spacing, dtype=float))
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(origin, dtype=float)
    return affine


def itk_from_affine(
    affine: np.ndarray,
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """``(origin, spacing, direction)`` of a RAS affine, as SimpleITK's setters take them.

    A sheared affine has no exact ITK geometry: its columns are normalised, not orthogonalised.
    """
    matrix = LPS_TO_RAS @ np.asarray(affine, dtype=float)[:3, :3]
    spacing = np.linalg.norm(matrix, axis=0)
    direction = matrix / spacing
    origin = LPS_TO_RAS @ np.asarray(affine, dtype=float)[:3, 3]
    return (
        tuple(float(v) for v in origin),
        tuple(float(v) for v in spacing),
        tuple(float(v) for v in direction.ravel()),
    )


def image_affine(image: sitk.Image | sitk.ImageFileReader) -> np.ndarray:
    """The RAS affine of a 3D SimpleITK image, or of a reader after ``ReadImageInformation``."""
    return affine_from_itk(image.GetOrigin(), image.GetSpacing(), image.GetDirection())


def array_from_image(image: sitk.Image) -> np.ndarray:
    """Voxels ``(X, Y, Z)``, or ``(X, Y, Z, C)`` for a vector image (SimpleITK's are reversed)."""
    array = sitk.GetArrayFromImage(image)  # (Z, Y, X) or (Z, Y, X, C)
    order = (2, 1, 0) if image.GetNumberOfComponentsPerPixel() == 1 else (2, 1, 0, 3)
    return np.ascontiguousarray(array.transpose(order))


def image_from_array(array: np.ndarray, geometry: sitk.ImageFileReader | np.ndarray) -> sitk.Image:
    """A scalar SimpleITK image of ``(X, Y, Z)`` voxels with the geometry of a reader (after
    ``ReadImageInformation``: copied exactly) or of a RAS affine."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    if isinstance(geometry, np.ndarray):
        origin, spacing, direction = itk_from_affine(geometry)
    else:
        origin, spacing = geometry.GetOrigin(), geometry.GetSpacing()
        direction = geometry.GetDirection()
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image
