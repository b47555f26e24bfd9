import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from c2fnas.data.check import check_dataset
from c2fnas.data.synth import make_synthetic_dataset


def load(root, folder, index):
    return nib.load(str(root / folder / f"synth_{index:03d}.nii.gz"))


def test_anatomy_geometry_and_variety(synthetic):
    description = json.loads((synthetic / "dataset.json").read_text())
    assert description["labels"] == {"0": "background", "1": "organ", "2": "lesion"}
    shapes = set()
    for index in range(6):
        image, label = load(synthetic, "imagesTr", index), load(synthetic, "labelsTr", index)
        data, labels = image.get_fdata(), np.asarray(label.dataobj)
        shapes.add(image.shape)
        assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2}
        # the lesion lies inside the organ: its one-voxel rim is (almost) all organ
        organ = labels > 0
        rim = ndimage.binary_dilation(labels == 2) & (labels != 2)
        assert (labels[rim] == 1).mean() > 0.95
        assert (labels == 2).sum() >= 10 and (labels == 1).sum() > 5 * (labels == 2).sum()
        # body non-zero, outside exactly zero (MR), organ brighter than body
        assert (data == 0).any() and data[labels == 1].mean() > data[(data != 0) & ~organ].mean()
        zooms = image.header.get_zooms()
        assert zooms[2] > 1.5 * zooms[0]  # anisotropic
        rotation = image.affine[:3, :3] / np.array(zooms)
        assert not np.allclose(np.abs(rotation), np.eye(3), atol=1e-3)  # oblique
        np.testing.assert_allclose(label.affine, image.affine)
    assert len(shapes) > 3


def test_seeded_and_checks_clean(synthetic, tmp_path):
    again = make_synthetic_dataset(tmp_path / "again", cases=6, shape=(24, 24, 12), seed=3)
    for index in (0, 5):
        np.testing.assert_array_equal(
            load(synthetic, "imagesTr", index).get_fdata(),
            load(again, "imagesTr", index).get_fdata(),
        )
    other = make_synthetic_dataset(tmp_path / "other", cases=1, shape=(24, 24, 12), seed=4)
    assert load(other, "imagesTr", 0).shape != load(
        synthetic, "imagesTr", 0
    ).shape or not np.array_equal(
        load(other, "imagesTr", 0).get_fdata(), load(synthetic, "imagesTr", 0).get_fdata()
    )
    assert check_dataset(synthetic).ok


def test_multimodal_ct_and_test_cases(tmp_path):
    root = make_synthetic_dataset(
        tmp_path, cases=2, shape=(16, 16, 8), modalities=["CT", "T2"], test_cases=1
    )
    image = load(root, "imagesTr", 0)
    assert image.ndim == 4 and image.shape[3] == 2
    ct = image.get_fdata()[..., 0]
    assert ct.min() < -800  # air
    assert (root / "imagesTs" / "synth_002.nii.gz").is_file()
    report = check_dataset(root)
    assert report.ok and [c.kind for c in report.cases] == ["training", "training", "test"]


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        make_synthetic_dataset(tmp_path, cases=0)
    with pytest.raises(ValueError):
        make_synthetic_dataset(tmp_path, shape=(4, 4, 4))
