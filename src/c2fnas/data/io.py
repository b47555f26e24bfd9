"""NIfTI reading and writing with the conventions the rest of ``c2fnas.data`` relies on.

Images come back channel-first, ``(C, X, Y, Z)`` float32 (a 3D file gives ``C = 1``, a 4D MSD
file keeps its modalities on the 4th axis). Labels come back ``(X, Y, Z)`` uint8.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from c2fnas.files.atomic import replacing

# What nibabel and gzip raise for truncated, corrupt or non-NIfTI files.
READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError)


class NiftiError(ValueError):
    """A NIfTI file cannot be read or has the wrong form; the message names the file."""


def load_nifti(path: str | Path) -> nib.Nifti1Image:
    """Open a NIfTI file (header only; data is read lazily)."""
    try:
        image = nib.load(str(path))
    except READ_ERRORS as error:
        raise NiftiError(f"{path}: not a readable NIfTI file ({error})") from None
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise NiftiError(f"{path}: not a NIfTI file ({type(image).__name__})")
    return image


def spatial_shape(image: nib.Nifti1Image) -> tuple[int, int, int]:
    return tuple(int(size) for size in image.shape[:3])  # type: ignore[return-value]


def image_channels(image: nib.Nifti1Image, path: str | Path) -> int:
    """Number of channels of a 3D (1) or 4D (4th axis) image; anything else is an error."""
    shape = image.shape
    if len(shape) == 3:
        return 1
    if len(shape) == 4:
        return int(shape[3])
    if len(shape) == 5 and shape[3] == 1:  # (X, Y, Z, 1, C): the NIfTI vector convention
        return int(shape[4])
    raise NiftiError(f"{path}: expected a 3D or 4D image, got shape {shape}")


def read_image_array(image: nib.Nifti1Image, path: str | Path) -> np.ndarray:
    """Voxel data of an image as float32 ``(C, X, Y, Z)``, scaling (slope/intercept) applied."""
    channels = image_channels(image, path)
    try:
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except READ_ERRORS as error:
        raise NiftiError(f"{path}: cannot read the voxel data ({error})") from None
    data = data.reshape(spatial_shape(image) + (channels,))
    return np.ascontiguousarray(np.moveaxis(data, -1, 0))


def read_label_array(image: nib.Nifti1Image, path: str | Path) -> np.ndarray:
    """Voxel data of a label map as uint8 ``(X, Y, Z)``.

    Raises:
        NiftiError: not 3D, not integer-valued, or values outside 0..255.
    """
    if len(image.shape) != 3 and not (len(image.shape) == 4 and image.shape[3] == 1):
        raise NiftiError(f"{path}: a label map must be 3D, got shape {image.shape}")
    try:
        data = np.asanyarray(image.dataobj).reshape(spatial_shape(image))
    except READ_ERRORS as error:
        raise NiftiError(f"{path}: cannot read the voxel data ({error})") from None
    integer = np.issubdtype(data.dtype, np.integer)
    if not integer and (not np.all(np.isfinite(data)) or np.any(data != np.round(data))):
        raise NiftiError(f"{path}: label values are not integers")
    if data.size and (data.min() < 0 or data.max() > 255):
        raise NiftiError(f"{path}: label values must lie in 0..255")
    return data.astype(np.uint8)


def load_image(path: str | Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Image voxels ``(C, X, Y, Z)`` float32 and the NIfTI object (affine, header)."""
    image = load_nifti(path)
    return read_image_array(image, path), image


def load_label(path: str | Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Label voxels ``(X, Y, Z)`` uint8 and the NIfTI object."""
    image = load_nifti(path)
    return read_label_array(image, path), image


def file_stamp(path: str | Path) -> list[int]:
    """``[size in bytes, mtime in ns]``: cheap evidence that a source file has not changed."""
    stat = os.stat(path)
    return [int(stat.st_size), int(stat.st_mtime_ns)]


def write_like(label: np.ndarray, reference_image_path: str | Path, out_path: str | Path) -> Path:
    """Write a label map as NIfTI with the reference image's affine and header.

    Args:
        label: integer array ``(X, Y, Z)`` with the reference's spatial shape.
        reference_image_path: the original image (3D or 4D) the label belongs to.
        out_path: ``.nii.gz`` or ``.nii``; written atomically.

    Raises:
        NiftiError: the shapes differ.
    """
    reference = load_nifti(reference_image_path)
    if tuple(label.shape) != spatial_shape(reference):
        raise NiftiError(
            f"{reference_image_path}: prediction shape {tuple(label.shape)} differs from the "
            f"image's {spatial_shape(reference)}"
        )
    dtype = np.uint8 if label.size == 0 or int(label.max()) <= 255 else np.int16
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    out = nib.Nifti1Image(np.asarray(label, dtype=dtype), reference.affine, header=header)
    out.header.set_slope_inter(1.0, 0.0)  # the reference's intensity scaling must not apply
    out.set_qform(reference.get_qform(), int(reference.header["qform_code"]))
    out.set_sform(reference.get_sform(), int(reference.header["sform_code"]))
    out_path = Path(out_path)
    with replacing(out_path) as temporary:
        nib.save(out, str(temporary))
    return out_path
