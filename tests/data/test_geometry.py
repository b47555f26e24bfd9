import json

import numpy as np
import pytest

from c2fnas.data.geometry import CaseGeometry, canonical_spacing, nonzero_box

from .test_preprocess import blob_case, oblique_affine

# The geometry keys of ``preprocessed/<case>.json``, in the order caches have always held them.
CACHED_KEYS = [
    "original_shape", "original_affine", "orientation", "canonical_shape", "original_spacing",
    "resampled_shape", "crop_box", "spacing", "affine", "shape",
]  # fmt: skip


def upsampled_geometry(shape=(15, 22, 9)):
    """A case whose file axes are permuted, flipped and rotated, brought to half its spacing
    (2x as many voxels per axis, so nearest neighbour drops no voxel) and cropped."""
    image, label = blob_case(shape=shape)
    affine = oblique_affine()
    half = [size / 2 for size in canonical_spacing(affine)]
    uncropped = CaseGeometry.uncropped(shape, affine, half)
    geometry = uncropped.cropped_to(nonzero_box(uncropped.resample(image, "linear")))
    return geometry, label


def test_the_inverse_undoes_reorientation_resampling_and_crop_exactly():
    geometry, label = upsampled_geometry()
    assert geometry.resampled_shape == tuple(2 * size for size in geometry.canonical_shape)
    assert geometry.canonical_shape != geometry.original_shape  # a transposition to undo
    assert geometry.shape != geometry.resampled_shape  # a crop to undo
    assert (geometry.orientation[:, 1] < 0).any()  # a flip to undo
    preprocessed = geometry.crop(geometry.resample(label, "nearest"))
    restored = geometry.restore_label(preprocessed)
    assert restored.dtype == label.dtype
    np.testing.assert_array_equal(restored, label)


def test_probabilities_come_back_through_the_same_inverse():
    geometry, label = upsampled_geometry()
    preprocessed = geometry.crop(geometry.resample(label, "nearest"))
    one_hot = np.eye(2, dtype=np.float32)[preprocessed].transpose(3, 0, 1, 2)
    restored = geometry.restore_probabilities(one_hot)
    assert restored.shape == (2, *label.shape) and restored.dtype == np.float32
    np.testing.assert_allclose(restored.sum(0), 1.0, atol=1e-6)
    np.testing.assert_array_equal(restored.argmax(0), label)


def test_outside_the_crop_box_is_background():
    geometry, label = upsampled_geometry()
    inside = np.ones(geometry.shape, np.uint8)
    restored = geometry.restore(inside, "nearest", outside=0)
    assert restored.min() == 0 and restored.max() == 1  # the crop left out the image's margin
    assert restored[0, 0, 0] == restored[-1, -1, -1] == 0
    class_one = np.zeros((3, *geometry.shape), np.float32)
    class_one[1] = 1
    probabilities = geometry.restore_probabilities(class_one)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-6)
    np.testing.assert_array_equal(probabilities[:, 0, 0, 0], [1, 0, 0])
    np.testing.assert_array_equal(probabilities.argmax(0)[label > 0], 1)


def test_the_json_form_is_the_cache_format_and_reads_back():
    geometry, _ = upsampled_geometry()
    properties = json.loads(json.dumps(geometry.properties()))
    assert list(properties) == CACHED_KEYS
    assert CaseGeometry.from_properties(properties) == geometry
    assert properties["shape"] == list(geometry.shape)
    np.testing.assert_array_equal(properties["affine"], geometry.affine)


def test_a_wrong_shape_is_refused():
    geometry, _ = upsampled_geometry()
    with pytest.raises(ValueError, match="prediction shape"):
        geometry.restore(np.zeros((2, 3, 4)), "nearest")
