"""Image reading and writing with the conventions the rest of ``c2fnas.data`` relies on.

NIfTI (``.nii.gz``, ``.nii``) is read and written by nibabel, which keeps its headers; the
formats of ``ITK_SUFFIXES`` by SimpleITK, converted on reading to an in-memory nibabel image
with the RAS affine (``c2fnas.data.itk``), so every later step sees one kind of image.
Predictions are written in the reference image's format with its exact geometry.

Images come back channel-first, ``(C, X, Y, Z)`` float32 (a 3D file gives ``C = 1``, a 4D MSD
file keeps its modalities on the 4th axis, a vector ITK image its components; ``load_images``
stacks the channel files of an nnU-Net case). Labels come back ``(X, Y, Z)`` uint8.

No file is read whose header claims more than ``MAX_VOXELS`` voxels, or more data than the file
holds: a damaged or hostile header must not make ``data check`` allocate tens of GiB.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from c2fnas.data import itk
from c2fnas.files.atomic import replacing

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
DETACHED_SUFFIXES = (".nhdr", ".mhd")  # a header file naming a separate data file

# Voxels (channels included) of the largest image read: 2^31, i.e. 8 GiB as float32, beyond
# any CT or MR volume (a 1024 x 1024 x 2048 scan) and beyond what preprocessing one case holds.
MAX_VOXELS = 2**31
GEOMETRY_TOLERANCE_MM = 1e-3  # affines that differ by less are one grid
ITK_GEOMETRY = "itk_geometry"  # key in the ``extra`` of an image read from an ITK format

# What nibabel and gzip raise for truncated, corrupt or non-NIfTI files.
READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError)
_CHUNK = 1 << 24  # bytes decompressed at a time when counting a stream


class NiftiError(ValueError):
    """An image file cannot be read or has the wrong form; the message names the file."""


def is_itk_file(path: str | Path) -> bool:
    return str(path).lower().endswith(ITK_SUFFIXES)


def is_hidden(path: str | Path) -> bool:
    """A name starting with ``.``: macOS ``._CASE.nii.gz`` resource forks, the temporary files
    of ``c2fnas.files.atomic``; never an image of a dataset, whatever its suffix."""
    return Path(path).name.startswith(".")


def image_files_in(folder: Path) -> list[Path]:
    """The image files of ``folder`` (``IMAGE_SUFFIXES``), sorted, hidden files left out.

    Every listing of images from a folder (test images, predictions, references) goes through
    here, so a ``._CASE.nii.gz`` copied from a Mac is never taken for a case.
    """
    return sorted(
        path
        for path in folder.iterdir()
        if path.name.lower().endswith(IMAGE_SUFFIXES) and not is_hidden(path) and path.is_file()
    )


def load_volume(path: str | Path) -> nib.Nifti1Image:
    """Open an image file as a nibabel image (NIfTI: header only, data read lazily; the ITK
    formats are read whole and carry their geometry in the RAS affine, and exactly in
    ``extra[ITK_GEOMETRY]``, a SimpleITK reader holding no voxels).

    Raises:
        NiftiError: unreadable, not an image, over ``MAX_VOXELS`` voxels, or a header claiming
            more data than the file holds.
    """
    if is_itk_file(path):
        return _load_itk(Path(path))
    image = _open_nifti(path)
    _check_stored_size(image, Path(path))
    return image


def _open_nifti(path: str | Path) -> nib.Nifti1Image:
    """A NIfTI file's header; its voxels are read lazily, on first use."""
    try:
        image = nib.load(str(path))
    except READ_ERRORS as error:
        raise NiftiError(f"{path}: not a readable NIfTI file ({error})") from None
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise NiftiError(f"{path}: not a NIfTI file ({type(image).__name__})")
    return image


def _check_voxels(path: Path, shape: Sequence[int]) -> int:
    voxels = math.prod(int(size) for size in shape)
    if voxels > MAX_VOXELS:
        raise NiftiError(
            f"{path}: the header claims {'x'.join(map(str, shape))} = {voxels:,} voxels, more "
            f"than the {MAX_VOXELS:,} c2fnas reads (MAX_VOXELS in c2fnas.data.io)"
        )
    return voxels


def _check_stored_size(image: nib.Nifti1Image, path: Path) -> None:
    """Refuse a header that claims more voxel data than the file holds, before allocating it."""
    header = image.header
    shape = tuple(int(size) for size in header.get_data_shape())
    dtype = header.get_data_dtype()
    offset = int(getattr(image.dataobj, "offset", 0))  # a loaded header's vox_offset reads 0
    needed = offset + _check_voxels(path, shape) * dtype.itemsize
    name = str(path).lower()
    if name.endswith(".nii"):
        held, what = path.stat().st_size, "bytes"
    elif name.endswith(".nii.gz"):
        held, what = _decompressed_size(path, needed), "bytes decompressed"
    else:  # a .hdr/.img pair or another form nibabel reads: left to nibabel
        return
    if held < needed:
        raise NiftiError(
            f"{path}: cannot read the voxel data: the header claims "
            f"{'x'.join(map(str, shape))} voxels of {dtype} ({needed:,} bytes with the header) "
            f"but the file holds {held:,} {what} (truncated, or a wrong header)"
        )


def _decompressed_size(path: Path, needed: int) -> int:
    """Bytes the gzip file decompresses to, counted no further than ``needed``.

    The gzip trailer records the size modulo 2^32; when it agrees, the stream is not read.
    Otherwise (a truncated file, several gzip members) the stream is decompressed in chunks
    and counted, never held.
    """
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() >= 4:
            handle.seek(-4, os.SEEK_END)
            if int.from_bytes(handle.read(4), "little") == needed % 2**32:
                return needed
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while total < needed:
                chunk = stream.read(min(_CHUNK, needed - total))
                if not chunk:
                    break
                total += len(chunk)
    except (OSError, EOFError, zlib.error):
        pass  # truncated or corrupt: what was decompressed is what the file holds
    return total


def _itk_header(path: str | Path) -> sitk.ImageFileReader:
    """A SimpleITK reader that has read ``path``'s header (no voxels) of a 3D image.

    Raises:
        NiftiError: unreadable, or not 3D.
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise NiftiError(f"{path}: not a readable image ({_itk_reason(error)})") from None
    if reader.GetDimension() != 3:
        raise NiftiError(f"{path}: expected a 3D image, got {reader.GetDimension()} dimensions")
    return reader


def _load_itk(path: Path) -> nib.Nifti1Image:
    reader = _itk_header(path)
    _check_voxels(path, (*reader.GetSize(), reader.GetNumberOfComponents()))
    try:
        array = itk.array_from_image(reader.Execute())
    except RuntimeError as error:
        raise NiftiError(f"{path}: cannot read the voxel data ({_itk_reason(error)})") from None
    # The reader keeps the exact origin, spacing and direction (no voxels) for ``write_like``.
    image = nib.Nifti1Image(array, itk.image_affine(reader), extra={ITK_GEOMETRY: reader})
    image.set_qform(image.affine, code=1)
    return image


def read_grid(path: str | Path) -> tuple[tuple[int, int, int], np.ndarray]:
    """An image file's spatial shape and affine from its header alone (no voxels read).

    Raises:
        NiftiError: unreadable, or not a 3D or 4D image.
    """
    if not is_itk_file(path):
        image = _open_nifti(path)
        image_channels(image, path)
        return spatial_shape(image), np.asarray(image.affine)
    reader = _itk_header(path)
    shape = tuple(int(size) for size in reader.GetSize())
    return shape, itk.image_affine(reader)  # type: ignore[return-value]


def _itk_reason(error: RuntimeError) -> str:
    # SimpleITK's messages start with C++ file and line; the last line says what went wrong.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


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
    except MemoryError:
        raise NiftiError(f"{path}: not enough memory for {image.shape} voxels") from None
    image.uncache()  # the image may live on as a reference for writing: it keeps no voxels
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
    except MemoryError:
        raise NiftiError(f"{path}: not enough memory for {image.shape} voxels") from None
    integer = np.issubdtype(data.dtype, np.integer)
    if not integer and (not np.all(np.isfinite(data)) or np.any(data != np.round(data))):
        raise NiftiError(f"{path}: label values are not integers")
    if data.size and (data.min() < 0 or data.max() > 255):
        raise NiftiError(f"{path}: label values must lie in 0..255")
    return data.astype(np.uint8)


def load_image(path: str | Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Image voxels ``(C, X, Y, Z)`` float32 and the image (affine, header)."""
    image = load_volume(path)
    return read_image_array(image, path), image


def load_images(paths: Sequence[str | Path]) -> tuple[np.ndarray, nib.Nifti1Image]:
    """The channels of a case stored in several files (nnU-Net's ``CASE_0000``, ``CASE_0001``),
    stacked in order: voxels ``(C, X, Y, Z)`` float32 and the first file's image.

    Raises:
        NiftiError: a file is unreadable, or its grid differs from the first file's (shape, or
            affine by more than ``GEOMETRY_TOLERANCE_MM``).
    """
    arrays, first = [], None
    for path in paths:
        data, image = load_image(path)
        if first is None:
            first = image
        elif spatial_shape(image) != spatial_shape(first) or not same_geometry(image, first):
            raise NiftiError(
                f"{path}: its grid ({'x'.join(map(str, spatial_shape(image)))}, affine) differs "
                f"from the case's first channel file {paths[0]}"
            )
        arrays.append(data)
    if first is None:
        raise NiftiError("no image file given")
    return np.concatenate(arrays) if len(arrays) > 1 else arrays[0], first


def same_geometry(image: nib.Nifti1Image, other: nib.Nifti1Image) -> bool:
    """Whether two images' affines agree within ``GEOMETRY_TOLERANCE_MM``."""
    return bool(np.abs(image.affine - other.affine).max() <= GEOMETRY_TOLERANCE_MM)


def load_label(path: str | Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Label voxels ``(X, Y, Z)`` uint8 and the image."""
    image = load_volume(path)
    return read_label_array(image, path), image


def file_stamp(path: str | Path) -> list[int]:
    """``[size in bytes, mtime in ns]``: cheap evidence that a source file has not changed."""
    stat = os.stat(path)
    return [int(stat.st_size), int(stat.st_mtime_ns)]


def write_like(label: np.ndarray, reference: nib.Nifti1Image, out_path: str | Path) -> Path:
    """Write a label map in the geometry of the reference image, atomically.

    A NIfTI output keeps a NIfTI reference's affine and header (qform, sform and their codes);
    an ITK output (``.nrrd``, ``.mha``, ...) keeps an ITK reference's origin, spacing and
    direction exactly. Across formats the geometry goes through the RAS affine.

    Args:
        label: integer array ``(X, Y, Z)`` with the reference's spatial shape.
        reference: the original image (3D or 4D) the label belongs to, as ``load_volume`` read
            it; only its header is used (no file is opened).
        out_path: its suffix picks the format (``IMAGE_SUFFIXES``).

    Raises:
        NiftiError: the shapes differ, or the suffix is not an image format.
    """
    out_path = Path(out_path)
    if not out_path.name.lower().endswith(IMAGE_SUFFIXES):
        raise NiftiError(f"{out_path}: not an image file name ({', '.join(IMAGE_SUFFIXES)})")
    if tuple(label.shape) != spatial_shape(reference):
        raise NiftiError(
            f"{out_path}: prediction shape {tuple(label.shape)} differs from the "
            f"image's {spatial_shape(reference)}"
        )
    dtype = np.uint8 if label.size == 0 or int(label.max()) <= 255 else np.int16
    label = np.asarray(label, dtype=dtype)
    if is_itk_file(out_path):
        reader = reference.extra.get(ITK_GEOMETRY)
        geometry = np.asarray(reference.affine) if reader is None else reader
        return _write_itk(itk.image_from_array(label, geometry), out_path)
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    out = nib.Nifti1Image(label, reference.affine, header=header)
    out.header.set_slope_inter(1.0, 0.0)  # the reference's intensity scaling must not apply
    out.set_qform(reference.get_qform(), int(reference.header["qform_code"]))
    out.set_sform(reference.get_sform(), int(reference.header["sform_code"]))
    with replacing(out_path) as temporary:
        nib.save(out, str(temporary))
    return out_path


def _write_itk(image: sitk.Image, out_path: Path) -> Path:
    """Write with SimpleITK (compressed). A detached header (``.mhd``, ``.nhdr``) names its data
    file, so both are written under their final names in a temporary folder beside the target
    and moved into place data first: a reader never finds a header without its data."""
    if not out_path.name.lower().endswith(DETACHED_SUFFIXES):
        with replacing(out_path) as temporary:
            _write_image(image, temporary)
        return out_path
    out_path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", dir=out_path.parent))
    try:
        _write_image(image, folder / out_path.name)
        for written in sorted(folder.iterdir(), key=lambda file: file.name == out_path.name):
            os.replace(written, out_path.parent / written.name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return out_path


def _write_image(image: sitk.Image, path: Path) -> None:
    try:
        sitk.WriteImage(image, str(path), True)
    except RuntimeError as error:
        raise OSError(f"{path}: cannot write ({_itk_reason(error)})") from None
