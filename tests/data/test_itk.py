"""Non-NIfTI images through SimpleITK: LPS geometry <-> the RAS affine, and exact write-back."""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from c2fnas.data.io import (
    MAX_VOXELS,
    NiftiError,
    load_image,
    load_label,
    load_volume,
    write_like,
)
from c2fnas.data.itk import affine_from_itk, itk_from_affine

SHAPE = (7, 9, 5)  # X, Y, Z
ORIGIN = (-31.25, 14.5, 102.0)
SPACING = (0.7, 1.3, 2.9)
DIRECTION = tuple(Rotation.from_euler("xyz", (20, -35, 110), degrees=True).as_matrix().ravel())


def itk_image(data_xyz, components=False):
    """A SimpleITK image of ``(X, Y, Z)`` voxels (or ``(X, Y, Z, C)``) with an oblique
    direction, written independently of c2fnas's conversion."""
    order = (2, 1, 0, 3) if components else (2, 1, 0)
    image = sitk.GetImageFromArray(data_xyz.transpose(order), isVector=components)
    image.SetOrigin(ORIGIN)
    image.SetSpacing(SPACING)
    image.SetDirection(DIRECTION)
    return image


def voxels(shape=SHAPE, seed=0):
    return np.random.default_rng(seed).uniform(-100, 100, shape).astype(np.float32)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd", ".nhdr"])
def test_itk_images_read_as_nibabel_reads_the_same_image(tmp_path, suffix):
    data = voxels()
    image = itk_image(data)
    sitk.WriteImage(image, str(tmp_path / f"image{suffix}"))
    sitk.WriteImage(image, str(tmp_path / "image.nii.gz"))  # SimpleITK's own LPS -> RAS
    read, loaded = load_image(tmp_path / f"image{suffix}")
    reference = nib.load(tmp_path / "image.nii.gz")
    assert read.shape == (1, *SHAPE)
    np.testing.assert_array_equal(read[0], data)
    np.testing.assert_array_equal(read[0], reference.get_fdata(dtype=np.float32))
    np.testing.assert_allclose(loaded.affine, reference.affine, atol=1e-5)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd", ".nhdr"])
def test_a_label_is_written_back_with_the_exact_geometry(tmp_path, suffix):
    sitk.WriteImage(itk_image(voxels()), str(tmp_path / f"image{suffix}"))
    label = np.random.default_rng(1).integers(0, 3, SHAPE).astype(np.uint8)
    reference = load_volume(tmp_path / f"image{suffix}")
    out = write_like(label, reference, tmp_path / "out" / f"pred{suffix}")
    written, source = sitk.ReadImage(str(out)), sitk.ReadImage(str(tmp_path / f"image{suffix}"))
    # the source file's geometry as SimpleITK reads it, to the last bits (NRRD stores spacing x
    # direction, so reading it back may differ from the source there)
    assert written.GetOrigin() == source.GetOrigin() == ORIGIN
    for geometry in ("GetSpacing", "GetDirection"):
        expected = getattr(source, geometry)()
        assert getattr(written, geometry)() == pytest.approx(expected, abs=1e-12)
    assert written.GetSpacing() == pytest.approx(SPACING, abs=1e-12)
    assert written.GetDirection() == pytest.approx(DIRECTION, abs=1e-12)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written).transpose(2, 1, 0), label)
    np.testing.assert_array_equal(load_label(out)[0], label)
    assert sorted(path.name for path in (tmp_path / "out").iterdir())[0].startswith("pred")
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file or folder left


def test_the_affine_round_trip_keeps_an_oblique_geometry(tmp_path):
    affine = affine_from_itk(ORIGIN, SPACING, DIRECTION)
    origin, spacing, direction = itk_from_affine(affine)
    np.testing.assert_allclose(origin, ORIGIN, atol=1e-12)
    np.testing.assert_allclose(spacing, SPACING, atol=1e-12)
    np.testing.assert_allclose(direction, DIRECTION, atol=1e-12)
    # NIfTI reference -> .nrrd output: the geometry goes through the affine.
    nifti = nib.Nifti1Image(voxels(), affine)
    nib.save(nifti, tmp_path / "image.nii.gz")
    label = np.ones(SHAPE, np.uint8)
    out = write_like(label, load_volume(tmp_path / "image.nii.gz"), tmp_path / "p.nrrd")
    written = sitk.ReadImage(str(out))
    np.testing.assert_allclose(written.GetOrigin(), ORIGIN, atol=1e-4)
    np.testing.assert_allclose(written.GetSpacing(), SPACING, atol=1e-6)
    np.testing.assert_allclose(written.GetDirection(), DIRECTION, atol=1e-6)


def test_a_vector_image_gives_its_components_as_channels(tmp_path):
    data = voxels((*SHAPE, 2))
    sitk.WriteImage(itk_image(data, components=True), str(tmp_path / "two.nrrd"))
    read, _ = load_image(tmp_path / "two.nrrd")
    np.testing.assert_array_equal(read, np.moveaxis(data, -1, 0))


def test_itk_headers_beyond_the_voxel_limit_are_refused(tmp_path):
    path = tmp_path / "huge.nhdr"
    size = int(round(MAX_VOXELS ** (1 / 3))) + 2
    path.write_text(
        f"NRRD0004\ntype: float\ndimension: 3\nsizes: {size} {size} {size}\n"
        "encoding: raw\nendian: little\ndata file: huge.raw\n"
    )
    (tmp_path / "huge.raw").write_bytes(bytes(1000))
    with pytest.raises(NiftiError, match="MAX_VOXELS"):
        load_image(path)


def test_a_broken_itk_file_names_the_file(tmp_path):
    (tmp_path / "bad.mha").write_text("not an image")
    with pytest.raises(NiftiError, match="bad.mha: not a readable image"):
        load_image(tmp_path / "bad.mha")
