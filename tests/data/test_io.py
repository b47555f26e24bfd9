import gzip
import json

import nibabel as nib
import numpy as np
import pytest

from c2fnas.data.check import _crashed, check_dataset
from c2fnas.data.io import (
    NiftiError,
    image_files_in,
    load_image,
    load_label,
    load_volume,
    write_like,
)
from c2fnas.files.atomic import temporary_path

from .conftest import save


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
    out = write_like(label, load_volume(path), tmp_path / "out" / "pred.nii.gz")
    written = nib.load(str(out))
    assert written.shape == (5, 6, 7) and written.get_data_dtype() == np.uint8
    np.testing.assert_allclose(written.affine, affine)
    assert int(written.header["sform_code"]) == 2 and int(written.header["qform_code"]) == 1
    np.testing.assert_array_equal(load_label(out)[0], label)  # no intensity scaling applied
    assert not list((tmp_path / "out").glob(".*"))


def test_write_like_rejects_a_wrong_shape(tmp_path):
    path, _ = reference(tmp_path)
    with pytest.raises(NiftiError, match="differs"):
        write_like(np.zeros((5, 6, 8), np.uint8), load_volume(path), tmp_path / "pred.nii.gz")


def test_temporary_path_keeps_the_suffixes(tmp_path):
    temporary = temporary_path(tmp_path / "case.nii.gz")
    assert temporary.name.endswith(".nii.gz") and temporary.parent == tmp_path


def claiming(path, shape, dtype, data_bytes=1_000_000):
    """A NIfTI file whose header claims ``shape`` voxels but holds ``data_bytes`` of data."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_data_offset(352)
    payload = header.binaryblock + b"\0" * 4 + bytes(data_bytes)
    path.write_bytes(gzip.compress(payload) if path.name.endswith(".gz") else payload)
    return path


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_a_header_beyond_the_voxel_limit_is_refused_before_reading(tmp_path, name, dtype):
    path = claiming(tmp_path / name, (2000, 2000, 2000), dtype)
    with pytest.raises(NiftiError, match="MAX_VOXELS") as error:
        load_image(path)
    assert str(path) in str(error.value) and "8,000,000,000 voxels" in str(error.value)


@pytest.mark.parametrize("name", ["short.nii", "short.nii.gz"])
def test_a_header_claiming_more_data_than_the_file_holds_is_refused(tmp_path, name):
    path = claiming(tmp_path / name, (300, 300, 300), np.float32)
    with pytest.raises(NiftiError) as error:
        load_label(path)
    text = str(error.value)
    assert str(path) in text and "108,000,352 bytes" in text and "holds 1,000,352" in text


def test_a_gzip_file_of_several_members_is_counted(tmp_path):
    path = tmp_path / "members.nii.gz"
    image = nib.Nifti1Image(np.arange(1000, dtype=np.float32).reshape(10, 10, 10), np.eye(4))
    payload = image.to_bytes()
    path.write_bytes(gzip.compress(payload[:500]) + gzip.compress(payload[500:]))
    np.testing.assert_array_equal(load_image(path)[0][0], image.get_fdata())


def test_check_names_the_file_and_sizes_of_a_claiming_header(tmp_path):
    (tmp_path / "imagesTs").mkdir()
    claiming(tmp_path / "imagesTs" / "bomb.nii.gz", (2000, 2000, 2000), np.float32)
    description = {"modality": {"0": "MR"}, "labels": {"0": "background"}}
    save(tmp_path / "imagesTr" / "a.nii.gz", np.ones((4, 4, 4), np.float32))
    save(tmp_path / "labelsTr" / "a.nii.gz", np.zeros((4, 4, 4), np.uint8))
    description |= {"training": [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}]}
    description |= {"test": ["imagesTs/bomb.nii.gz"]}
    (tmp_path / "dataset.json").write_text(json.dumps(description))
    bomb = check_dataset(tmp_path).cases[1]
    assert bomb.case_id == "bomb" and len(bomb.problems) == 1
    assert "bomb.nii.gz" in bomb.problems[0] and "2000x2000x2000" in bomb.problems[0]


def test_an_unexpected_error_without_a_message_still_says_what_it_was():
    report = _crashed(("a", "training"), MemoryError())
    assert report.problems == ["cannot check: MemoryError"]


def test_image_files_in_leaves_out_hidden_files_and_other_files(tmp_path):
    for name in ("b.nii.gz", "a.nrrd", "._b.nii.gz", ".b.tmp12.nii.gz", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "folder.nii.gz").mkdir()
    assert [path.name for path in image_files_in(tmp_path)] == ["a.nrrd", "b.nii.gz"]
