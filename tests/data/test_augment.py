import math
from typing import get_args

import numpy as np
import pytest
import torch
from scipy import ndimage

from c2fnas.data import augment as nnunet
from c2fnas.data.loader import (
    AUGMENTATIONS,
    augment,
    cut,
    patch_start,
    sample_patch,
    train_batches,
)
from c2fnas.training.config import Augmentation

IDS = [f"synth_{i:03d}" for i in range(6)]
TRANSFORMS = {name: transform for name, _, transform in nnunet.INTENSITY}


def blobs(shape=(20, 24, 16), seed=0):
    """A label of a few large boxes with values 1..3 on background 0, and the arrays of its case."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    for value in (1, 2, 3):
        corner = [int(rng.integers(0, size // 2)) for size in shape]
        label[tuple(slice(c, c + size // 2) for c, size in zip(corner, shape, strict=True))] = value
    image = np.stack([label * 10.0, (label == 2) * -7.0]).astype(np.float32)
    rows = np.argwhere(label > 0)
    locations = np.concatenate([label[tuple(rows.T)][:, None], rows], axis=1)
    return {"image": image, "label": label, "locations": locations}


def test_augmentation_names_are_the_configs():
    assert set(AUGMENTATIONS) == set(get_args(Augmentation))


@pytest.mark.parametrize("start", [(0, 0, 0), (-3, 5, 2), (12, 20, -4)])
def test_identity_resampling_is_cut(start):
    arrays = blobs()
    image = arrays["image"] + np.random.default_rng(1).random(arrays["image"].shape, np.float32)
    patch = (10, 12, 8)
    new_image, new_label = nnunet.resample(image, arrays["label"], start, patch, np.eye(3))
    np.testing.assert_array_equal(new_image, cut(image, start, patch))
    np.testing.assert_array_equal(new_label, cut(arrays["label"], start, patch))
    assert new_image.dtype == np.float32 and new_label.dtype == np.uint8


def test_quarter_turn_about_the_patch_centre_is_rot90():
    arrays = blobs()
    image = arrays["image"] + np.random.default_rng(1).random(arrays["image"].shape, np.float32)
    start, patch = (3, 5, 2), (12, 12, 8)
    turned_image, turned_label = nnunet.resample(
        image, arrays["label"], start, patch, nnunet.rotation(2, math.pi / 2)
    )
    plain_image, plain_label = cut(image, start, patch), cut(arrays["label"], start, patch)
    matches = [
        k
        for k in (1, 3)
        if np.array_equal(turned_label, np.rot90(plain_label, k, axes=(0, 1)))
        and np.allclose(turned_image, np.rot90(plain_image, k, axes=(1, 2)), atol=1e-5)
    ]
    assert len(matches) == 1


def test_scaling_below_one_enlarges_objects():
    label = np.zeros((40, 40, 40), np.uint8)
    grid = np.indices(label.shape) - 19.5
    label[(grid**2).sum(0) <= 5.0**2] = 1
    image = label[None].astype(np.float32)
    start, patch = (10, 10, 10), (20, 20, 20)
    _, zoomed = nnunet.resample(image, label, start, patch, np.eye(3) * 0.5)
    assert 6 < zoomed.sum() / label.sum() < 10  # radius doubled: volume about 8 times


@pytest.mark.parametrize("seed", range(6))
def test_spatial_transform_keeps_image_and_label_together(seed):
    arrays = blobs(shape=(40, 48, 32), seed=seed)
    rng = np.random.default_rng(seed)
    angles = rng.uniform(-0.5, 0.5, size=3)
    matrix = nnunet.rotation(2, angles[2]) @ nnunet.rotation(1, angles[1])
    matrix = matrix @ nnunet.rotation(0, angles[0]) * rng.uniform(0.7, 1.4)
    start, patch = (8, 6, 4), (24, 32, 20)
    image, label = nnunet.resample(arrays["image"], arrays["label"], start, patch, matrix)
    assert image.shape == (2, *patch) and label.shape == patch and label.dtype == np.uint8
    assert set(np.unique(label)) <= set(np.unique(arrays["label"]))
    # linear image and nearest label differ only at the boxes' borders
    inside = ndimage.maximum_filter(label, 3) == ndimage.minimum_filter(label, 3)
    assert inside.mean() > 0.5
    assert np.mean(np.abs(image[0] - 10.0 * label)[inside] < 1e-3) > 0.98
    assert np.mean(np.abs(image[1] + 7.0 * (label == 2))[inside] < 1e-3) > 0.98
    assert np.mean(np.abs(image[0] - 10.0 * label) < 5) > 0.85
    assert not np.array_equal(label, cut(arrays["label"], start, patch))


def test_random_affine():
    rng = np.random.default_rng(0)
    draws = [nnunet.random_affine(rng, (48, 64, 48)) for _ in range(2000)]
    matrices = [m for m in draws if m is not None]
    assert 0.3 < len(matrices) / len(draws) < 0.42  # 1 - 0.8 * 0.8
    determinants = np.array([np.linalg.det(m) for m in matrices])
    assert determinants.min() >= 0.7**3 - 1e-9 and determinants.max() <= 1.4**3 + 1e-9
    assert any(abs(m[2, 2] - 1) > 0.05 for m in matrices)  # Z rotates too
    flat = [nnunet.random_affine(rng, (64, 64, 8)) for _ in range(500)]
    for matrix in (m for m in flat if m is not None):
        np.testing.assert_allclose(matrix[2], [0, 0, 1], atol=1e-12)
        np.testing.assert_allclose(matrix[:, 2], [0, 0, 1], atol=1e-12)


def intensity_image(seed=0, shape=(3, 12, 10, 8)):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 2 + 1).astype(np.float32)


def applied(name, seed=0):
    """The image and its transform by ``name``, for a seed that changes every channel."""
    image = intensity_image(seed)
    before = image.copy()
    for attempt in range(50):
        out = TRANSFORMS[name](image, np.random.default_rng([seed, attempt]))
        np.testing.assert_array_equal(image, before)  # the input is never changed
        assert out.shape == image.shape and out.dtype == np.float32
        if all(not np.array_equal(a, b) for a, b in zip(image, out, strict=True)):
            return image, out
    raise AssertionError(f"{name} never changed every channel")


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_intensity_transforms_keep_shape_and_type(name):
    applied(name)


def test_gaussian_noise():
    image, out = applied("gaussian noise")
    noise = out - image
    assert np.allclose(noise, noise[0], atol=1e-5) and noise.std() <= 0.1 * 1.3


def test_gaussian_blur_smooths():
    image, out = applied("gaussian blur")
    assert (out.std(axis=(1, 2, 3)) < image.std(axis=(1, 2, 3))).all()


def test_brightness_multiplies_each_channel():
    image, out = applied("brightness")
    ratios = (out / image).reshape(len(image), -1)
    np.testing.assert_allclose(ratios, ratios[:, :1] * np.ones_like(ratios), rtol=1e-5)
    assert ((ratios[:, 0] >= 0.75) & (ratios[:, 0] <= 1.25)).all()


@pytest.mark.parametrize("name", ["contrast", "gamma", "inverted gamma"])
def test_monotonic_transforms_keep_the_order_of_values(name):
    image, out = applied(name)
    for before, after in zip(image, out, strict=True):
        order = np.argsort(before, axis=None)
        assert (np.diff(after.ravel()[order]) >= -1e-5).all()


def test_contrast_keeps_the_range():
    image, out = applied("contrast")
    assert (out.min(axis=(1, 2, 3)) >= image.min(axis=(1, 2, 3))).all()
    assert (out.max(axis=(1, 2, 3)) <= image.max(axis=(1, 2, 3))).all()


@pytest.mark.parametrize("name", ["gamma", "inverted gamma"])
def test_gamma_keeps_mean_and_standard_deviation(name):
    image, out = applied(name)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), image.mean(axis=(1, 2, 3)), atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(1, 2, 3)), image.std(axis=(1, 2, 3)), rtol=1e-4)


def test_low_resolution_keeps_the_range_and_z_of_flat_patches():
    image, out = applied("low resolution")
    assert (out.min(axis=(1, 2, 3)) >= image.min(axis=(1, 2, 3)) - 1e-5).all()
    assert (out.max(axis=(1, 2, 3)) <= image.max(axis=(1, 2, 3)) + 1e-5).all()
    along_z = np.broadcast_to(np.arange(4, dtype=np.float32), (2, 32, 32, 4)).copy()
    for seed in range(20):  # flat: Z keeps its resolution
        flat_out = nnunet.low_resolution(along_z, np.random.default_rng(seed))
        np.testing.assert_allclose(flat_out, along_z, atol=1e-5)
    cube = np.broadcast_to(np.arange(16, dtype=np.float32), (1, 16, 16, 16)).copy()
    assert any(
        not np.allclose(nnunet.low_resolution(cube, np.random.default_rng(seed)), cube)
        for seed in range(20)
    )


def test_nnunet_patches_are_deterministic_and_consistent():
    arrays = blobs(shape=(24, 28, 20))
    patch = (12, 16, 10)
    for seed in range(20):
        image, label = sample_patch(arrays, patch, np.random.default_rng(seed), True, "nnunet")
        again = sample_patch(arrays, patch, np.random.default_rng(seed), True, "nnunet")
        np.testing.assert_array_equal(image, again[0])
        np.testing.assert_array_equal(label, again[1])
        assert image.shape == (2, *patch) and image.dtype == np.float32
        assert label.shape == patch and label.dtype == np.uint8
        assert set(np.unique(label)) <= {0, 1, 2, 3}


def test_paper_is_the_old_stream():
    arrays = blobs(shape=(24, 28, 20))
    patch = (12, 16, 10)
    for seed in range(10):
        image, label = sample_patch(arrays, patch, np.random.default_rng(seed), seed % 2 == 0)
        # the code path before the augmentation setting existed
        rng = np.random.default_rng(seed)
        centre = None
        if seed % 2 == 0:
            locations = arrays["locations"]
            rows = locations[locations[:, 0] == rng.choice(np.unique(locations[:, 0]))]
            centre = rows[rng.integers(len(rows)), 1:]
        start = patch_start(rng, arrays["label"].shape, patch, centre)
        old = augment(cut(arrays["image"], start, patch), cut(arrays["label"], start, patch), rng)
        np.testing.assert_array_equal(image, old[0])
        np.testing.assert_array_equal(label, old[1])


def test_train_batches_with_nnunet(run_dir):
    first = next(train_batches(run_dir, IDS, (16, 16, 8), 3, seed=2, augmentation="nnunet"))
    again = next(train_batches(run_dir, IDS, (16, 16, 8), 3, seed=2, augmentation="nnunet"))
    paper = next(train_batches(run_dir, IDS, (16, 16, 8), 3, seed=2))
    explicit = next(train_batches(run_dir, IDS, (16, 16, 8), 3, seed=2, augmentation="paper"))
    assert first["image"].shape == (3, 1, 16, 16, 8) and first["label"].dtype == torch.int64
    assert set(first["label"].unique().tolist()) <= {0, 1, 2}
    assert torch.equal(first["image"], again["image"])
    assert torch.equal(paper["image"], explicit["image"])
    assert torch.equal(paper["label"], explicit["label"])


def test_unknown_augmentation_is_refused(run_dir):
    with pytest.raises(ValueError, match="paper, nnunet"):
        train_batches(run_dir, IDS, (8, 8, 8), 2, seed=0, augmentation="elastic")
    with pytest.raises(ValueError, match="elastic"):
        sample_patch(blobs(), (8, 8, 8), np.random.default_rng(0), False, "elastic")
