import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from c2fnas.data.cache import load_case
from c2fnas.data.geometry import CaseGeometry, canonical_spacing
from c2fnas.data.io import load_image, load_images
from c2fnas.data.msd import read_dataset
from c2fnas.data.preprocess import ChannelNormalization, Plan, preprocess_arrays

from .conftest import save

LABELS = {0: "background", 1: "blob"}


def oblique_affine(spacing=(0.7, 1.3, 2.5)):
    """File axes (A, S, L)-like: permuted, one flipped, rotated 20 degrees, anisotropic, odd."""
    permute_flip = np.array([[0, 0, -1], [1, 0, 0], [0, 1, 0]], dtype=float)
    rotation = Rotation.from_euler("xyz", [20, -8, 5], degrees=True).as_matrix()
    affine = np.eye(4)
    affine[:3, :3] = rotation @ permute_flip @ np.diag(spacing)
    affine[:3, 3] = [12.0, -30.0, 7.5]
    return affine


def blob_case(shape=(15, 22, 9), margin=2, seed=0):
    """An image non-zero inside a margin and a label blob inside it, in file voxel order."""
    rng = np.random.default_rng(seed)
    image = np.zeros((1, *shape), dtype=np.float32)
    inner = tuple(slice(margin, size - margin) for size in shape)
    image[(0, *inner)] = rng.uniform(10, 20, size=[s - 2 * margin for s in shape])
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1)
    centre = np.array(shape) * np.array([0.6, 0.4, 0.5])
    radii = np.array(shape) * 0.22
    label = ((((grid - centre) / radii) ** 2).sum(-1) <= 1).astype(np.uint8)
    return image, label


def mr_plan(spacing):
    return Plan(
        spacing=tuple(spacing),
        normalization=[ChannelNormalization(scheme="mr")],
        modalities={0: "MR"},
        labels=LABELS,
    )


def world_centroid(label, affine):
    points = np.argwhere(label > 0).mean(axis=0)
    return affine[:3, :3] @ points + affine[:3, 3]


def test_restore_is_exact_at_the_original_spacing():
    image, label = blob_case()
    affine = oblique_affine()
    plan = mr_plan(canonical_spacing(affine))
    pre_image, pre_label, geometry = preprocess_arrays(image, affine, plan, label)
    assert geometry.resampled_shape == geometry.canonical_shape
    assert pre_image.shape[1:] == pre_label.shape == geometry.shape
    assert sorted(geometry.canonical_shape) == sorted(image.shape[1:])
    assert pre_label.shape != label.shape  # cropped and reoriented, so the inverse has work
    restored = geometry.restore_label(pre_label)
    assert restored.dtype == pre_label.dtype
    np.testing.assert_array_equal(restored, label)


def test_geometry_with_resampling_is_right():
    image, label = blob_case(shape=(31, 27, 11), margin=1)
    affine = oblique_affine()
    pre_image, pre_label, geometry = preprocess_arrays(image, affine, mr_plan((1, 1, 1)), label)
    grid = geometry.affine
    # canonical RAS voxel order: each grid axis runs mostly along +world axis i
    assert np.all(np.argmax(np.abs(grid[:3, :3]), axis=0) == [0, 1, 2])
    assert np.all(np.diag(grid[:3, :3]) > 0)
    np.testing.assert_allclose(np.linalg.norm(grid[:3, :3], axis=0), 1.0, atol=0.06)
    # the label sits at the same place in the world, within a voxel
    distance = np.linalg.norm(world_centroid(pre_label, grid) - world_centroid(label, affine))
    assert distance < 0.5
    # the original extent in mm is kept: 31 * 0.7, 27 * 1.3, 11 * 2.5 in some canonical order
    extents = sorted(np.array(geometry.resampled_shape, dtype=float))
    np.testing.assert_allclose(extents, sorted([31 * 0.7, 27 * 1.3, 11 * 2.5]), atol=0.6)
    restored = geometry.restore_label(pre_label)
    assert restored.shape == label.shape
    dice = 2 * np.sum((restored > 0) & (label > 0)) / (np.sum(restored > 0) + np.sum(label > 0))
    assert dice > 0.85


def test_restore_rejects_a_wrong_shape():
    image, label = blob_case()
    _, _, geometry = preprocess_arrays(image, oblique_affine(), mr_plan((1, 1, 1)))
    with pytest.raises(ValueError, match="prediction shape"):
        geometry.restore_label(np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="prediction shape"):
        geometry.restore_probabilities(np.zeros((2, 3, 3, 3), np.float32))


def test_non_finite_images_are_refused():
    image, _ = blob_case()
    image[0, 5, 5, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        preprocess_arrays(image, np.eye(4), mr_plan((1, 1, 1)))


def test_crop_to_nonzero_and_mr_zscore():
    image, label = blob_case(margin=3)
    pre_image, _, geometry = preprocess_arrays(image, np.eye(4), mr_plan((1, 1, 1)), label)
    assert geometry.crop_box == ((3, 12), (3, 19), (3, 6))
    inside = pre_image[0][image[0, 3:12, 3:19, 3:6] != 0]
    assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1) < 1e-4


def test_ct_normalisation_clips_then_standardises():
    image = np.linspace(-1000, 1000, 8**3, dtype=np.float32).reshape(1, 8, 8, 8)
    plan = Plan(
        spacing=(1, 1, 1),
        normalization=[ChannelNormalization(scheme="ct", clip=(-100, 300), mean=50, std=20)],
        modalities={0: "CT"},
        labels=LABELS,
    )
    pre_image, _, _ = preprocess_arrays(image, np.eye(4), plan)
    assert pre_image.min() == pytest.approx((-100 - 50) / 20)
    assert pre_image.max() == pytest.approx((300 - 50) / 20)


def test_four_d_image_and_channel_mismatch(tmp_path):
    data = np.random.default_rng(0).uniform(1, 2, size=(5, 6, 7, 2)).astype(np.float32)
    path = save(tmp_path / "four.nii.gz", data)
    image, _ = load_image(path)
    assert image.shape == (2, 5, 6, 7)
    np.testing.assert_array_equal(image[1], data[..., 1])
    two = Plan(
        spacing=(1, 1, 1),
        normalization=[ChannelNormalization(scheme="mr")] * 2,
        modalities={0: "T1", 1: "T2"},
        labels=LABELS,
    )
    pre, _, geometry = preprocess_arrays(image, np.eye(4), two)
    assert pre.shape == (2, 5, 6, 7) and geometry.original_shape == (5, 6, 7)
    with pytest.raises(ValueError, match="2 channel"):
        preprocess_arrays(image, np.eye(4), mr_plan((1, 1, 1)))


def test_prediction_time_preprocessing_matches_the_cache(synthetic, run_dir):
    case = read_dataset(synthetic).training[2]
    data, reference = load_images(case.images)
    image, _, geometry = preprocess_arrays(data, reference.affine, Plan.load(run_dir))
    cached, label, properties = load_case(run_dir, case.case_id)
    np.testing.assert_array_equal(image, cached)
    assert CaseGeometry.from_properties(properties) == geometry
    assert geometry.restore_label(label).shape == geometry.original_shape


def test_plan_round_trip_and_digest(tmp_path):
    plan = mr_plan((1.0, 1.0, 2.0))
    plan.save(tmp_path)
    loaded = Plan.load(tmp_path)
    assert loaded == plan and loaded.digest() == plan.digest()
    assert mr_plan((1, 1, 1)).digest() != plan.digest()
    assert loaded.in_channels == 1 and loaded.num_classes == 2
    with pytest.raises(FileNotFoundError, match="plan.json"):
        Plan.load(tmp_path / "nowhere")


def test_a_plan_never_holds_nan_statistics_and_a_damaged_one_is_named(tmp_path):
    with pytest.raises(ValueError, match="finite clip, mean and std"):
        ChannelNormalization(scheme="ct", clip=(float("nan"), 1.0), mean=0.0, std=1.0)
    with pytest.raises(ValueError, match="finite clip, mean and std"):
        ChannelNormalization(scheme="ct", clip=(0.0, 1.0), mean=None, std=1.0)
    (tmp_path / "plan.json").write_text('{"spacing": [1, 1')
    with pytest.raises(ValueError, match=f"{tmp_path / 'plan.json'}: damaged"):
        Plan.load(tmp_path)
