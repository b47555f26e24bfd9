"""Spacing, patch and stride rules on fingerprint figures (no data, no torch)."""

import itertools

import pytest

from c2fnas.planning import geometry


@pytest.mark.parametrize(
    ("median", "expected"),
    [
        ((0.8, 0.8, 0.8), (1.0, 1.0, 1.0)),  # finer than the paper's 1 mm: 1 mm
        ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0)),  # Hippocampus
        ((1.5, 1.5, 2.0), (1.5, 1.5, 2.0)),  # coarser: kept, not up-sampled
        ((0.9, 0.9, 1.8), (1.0, 1.0, 1.8)),  # 2 x: still near-isotropic
        ((0.6, 0.6, 3.6), (1.0, 1.0, 3.6)),  # Prostate: the coarse axis is kept
        ((4.0, 0.7, 0.7), (4.0, 1.0, 1.0)),  # whichever axis is coarse
    ],
)
def test_target_spacing(median, expected):
    spacing, reason = geometry.target_spacing(median)
    assert spacing == pytest.approx(expected)
    assert ("anisotropic" in reason) == geometry.is_anisotropic(median)


def test_small_volumes_train_whole():
    assert geometry.plan_patch((35, 50, 36), (1, 1, 1)) == (48, 64, 48)  # Hippocampus
    assert geometry.plan_patch((10, 12, 5), (1, 1, 1)) == (32, 32, 32)  # level 3 keeps 2 voxels


def test_large_anisotropic_volume_gets_an_anisotropic_patch_within_the_paper_voxels():
    patch = geometry.plan_patch((192, 192, 20), (1.0, 1.0, 3.6))  # Prostate at 1 x 1 x 3.6 mm
    assert patch == (160, 160, 32)
    assert geometry.plan_stride(patch) == (16, 16, 3)
    assert geometry.plan_stride((128, 128, 32)) == (16, 16, 4)  # the paper's Prostate stride
    assert geometry.plan_stride((96, 96, 96)) == (16, 16, 16)


@pytest.mark.parametrize("shape", list(itertools.product((7, 33, 100, 400), repeat=3)))
def test_every_patch_is_accepted_by_the_network(shape):
    patch = geometry.plan_patch(shape, (1.0, 1.0, 2.5))
    assert all(side % 16 == 0 and side > 16 for side in patch)
    needed = [geometry.round_up(size) for size in shape]
    assert all(side <= need for side, need in zip(patch, needed, strict=True))
    assert sum(patch) == sum(needed) or patch[0] * patch[1] * patch[2] <= 96**3


def test_median_resampled_shape_uses_each_cases_own_spacing():
    cases = {
        "a": {"shape": [100, 100, 10], "spacing": [0.5, 0.5, 4.0]},
        "b": {"shape": [50, 50, 40], "spacing": [1.0, 1.0, 1.0]},
        "c": {"shape": [60, 60, 20], "spacing": [1.0, 1.0, 2.0]},
    }
    assert geometry.median_resampled_shape(cases, (1.0, 1.0, 1.0)) == (50, 50, 40)
