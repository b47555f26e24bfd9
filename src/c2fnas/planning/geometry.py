"""Target spacing, patch and sliding-window stride from a dataset's fingerprint: pure functions.

Axes are canonical X, Y, Z throughout (the order of ``fingerprint.json``). A worked example, MSD
Prostate (median spacing 0.6 x 0.6 x 3.6 mm, 320 x 320 x 20 voxels): strongly anisotropic, so the
target spacing is 1 x 1 x 3.6 mm, the median volume 192 x 192 x 20 voxels there, the patch
160 x 160 x 32 and the stride 16 x 16 x 3.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

PAPER_SPACING = 1.0  # mm, isotropic (paper Sec. 4.1)
ANISOTROPY_RATIO = 3.0
"""Coarsest over finest median spacing above which the coarse axis is kept (nnU-Net's rule)."""
DIVISOR = 16
"""The network halves the grid four times (stem, then levels 1..3): sides are multiples of 16."""
MIN_SIDE = 2 * DIVISOR  # level 3 (1/16) keeps more than one voxel, which instance norm needs
PAPER_PATCH_VOXELS = 96**3
"""The paper's patch volume: the most a patch holds unless the device's memory allows less."""
PAPER_STRIDE = 16  # voxels, on the patch's longest side (paper: 96^3 -> 16; Prostate [16, 16, 4])

Spacing = tuple[float, float, float]
Shape = tuple[int, int, int]


def target_spacing(median_spacing: Sequence[float]) -> tuple[Spacing, str]:
    """The spacing to resample to, and why.

    Near-isotropic data go to the paper's 1 mm on every axis, or the median where that is
    coarser (up-sampling adds voxels, not information). Strongly anisotropic data (coarsest /
    finest median > ``ANISOTROPY_RATIO``) keep the median of their coarse axis, as nnU-Net does:
    resampling 3.6 mm slices to 1 mm would multiply the voxels by 3.6 and invent the slices
    between; the fine axes follow the near-isotropic rule.
    """
    median = [float(value) for value in median_spacing]
    finest, coarsest = min(median), max(median)
    coarse_axis = median.index(coarsest)
    anisotropic = coarsest / finest > ANISOTROPY_RATIO
    spacing = [max(PAPER_SPACING, value) for value in median]
    if anisotropic:
        spacing[coarse_axis] = coarsest
        reason = (
            f"median spacing {_mm(median)}: anisotropic ({coarsest / finest:.1f} x > "
            f"{ANISOTROPY_RATIO:g} x), so axis {'XYZ'[coarse_axis]} keeps its {coarsest:g} mm "
            f"(nnU-Net's rule) and the others go to {PAPER_SPACING:g} mm or their median if coarser"
        )
    else:
        reason = (
            f"median spacing {_mm(median)}: near-isotropic, so the paper's {PAPER_SPACING:g} mm "
            "(or the median where coarser)"
        )
    return (spacing[0], spacing[1], spacing[2]), reason


def is_anisotropic(spacing: Sequence[float]) -> bool:
    return max(spacing) / min(spacing) > ANISOTROPY_RATIO


def median_resampled_shape(
    cases: Mapping[str, Mapping[str, Any]], spacing: Sequence[float]
) -> tuple[float, float, float]:
    """Median grid of the fingerprinted cases at ``spacing`` (before the crop to non-zero voxels,
    so an upper bound of what training sees)."""
    sizes = [
        sorted(
            entry["shape"][axis] * entry["spacing"][axis] / spacing[axis]
            for entry in cases.values()
        )
        for axis in range(3)
    ]
    middle = len(sizes[0]) // 2
    return (
        _median(sizes[0], middle),
        _median(sizes[1], middle),
        _median(sizes[2], middle),
    )


def _median(values: Sequence[float], middle: int) -> float:
    if len(values) % 2:
        return values[middle]
    return (values[middle - 1] + values[middle]) / 2


def round_up(size: float) -> int:
    """The smallest side the network accepts that holds ``size`` voxels."""
    return max(MIN_SIDE, DIVISOR * math.ceil(size / DIVISOR - 1e-9))


def plan_patch(
    median_shape: Sequence[float], spacing: Sequence[float], max_voxels: int = PAPER_PATCH_VOXELS
) -> Shape:
    """A patch the network accepts, no larger than the data need and holding at most
    ``max_voxels`` (when ``max_voxels`` allows ``MIN_SIDE`` on every axis).

    It starts from the median volume, each side rounded up to a multiple of 16 (so a small volume
    such as Hippocampus's 35 x 50 x 36 is trained whole, in a 48 x 64 x 48 patch), then takes 16
    voxels at a time from the side that is longest in millimetres until it fits: anisotropic data
    keep an anisotropic patch that covers about the same extent in every direction.
    """
    patch = [round_up(size) for size in median_shape]
    while math.prod(patch) > max_voxels:
        shrinkable = [axis for axis in range(3) if patch[axis] > MIN_SIDE]
        if not shrinkable:
            break
        axis = max(shrinkable, key=lambda a: (patch[a] * spacing[a], patch[a]))
        patch[axis] -= DIVISOR
    return (patch[0], patch[1], patch[2])


def plan_stride(patch: Sequence[int]) -> Shape:
    """Sliding-window step per axis: the paper's 16 voxels on the patch's longest side and the
    same overlap on the others (96^3 -> 16, 16, 16; Prostate's 128 x 128 x 32 -> 16, 16, 4)."""
    longest = max(patch)
    steps = [max(1, round(PAPER_STRIDE * side / longest)) for side in patch]
    return (steps[0], steps[1], steps[2])


def _mm(values: Sequence[float]) -> str:
    return " x ".join(f"{value:.3g}" for value in values) + " mm"
