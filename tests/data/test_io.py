import nibabel as nib
import numpy as np
import pytest

from c2fnas.data.io import NiftiError, load_label, write_like
from c2fnas.files.atomic import temporary_path


def reference(tmp_path, shape=(5, 6, 7, 2)):
    affine = np.diag([-0.8, 0.8, 2.5, 1.0])
    affine[:3, 3] = [10, -4, 3]
    image = nib.Nifti1Image(np.ones(shape, np.int16), affine)
    image.header.set_slope_inter(2.0, -5.0)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=2)
    path = tmp_path / "image.nii.gz"
    nib.save(image, str(path))
    return path, affine


def test_write_like_keeps_the_reference_geometry(tmp_path):
    path, affine = reference(tmp_path)
    label = np.random.default_rng(0).integers(0, 3, size=(5, 6, 7)).astype(np.int64)
    out = write_like(label, path, tmp_path / "out" / "pred.nii.gz")
    written = nib.load(str(out))
    assert written.shape == (5, 6, 7) and written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, affine)
    assert int(written.header["sform_code"]) == 2 and int(written.header["qform_code"]) == 1
    np.testing.assert_array_equal(load_label(out)[0], label)  # no intensity scaling applied
    assert not list((tmp_path / "out").glob(".*"))


def test_write_like_rejects_a_wrong_shape(tmp_path):
    path, _ = reference(tmp_path)
    with pytest.raises(NiftiError, match="differs"):
        write_like(np.zeros((5, 6, 8), np.uint8), path, tmp_path / "pred.nii.gz")


def test_temporary_path_keeps_the_suffixes(tmp_path):
    temporary = temporary_path(tmp_path / "case.nii.gz")
    assert temporary.name.endswith(".nii.gz") and temporary.parent == tmp_path
