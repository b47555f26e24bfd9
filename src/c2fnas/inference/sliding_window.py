"""Sliding-window class probabilities over a whole (preprocessed) volume, with MONAI's inferer.

Test-time augmentation mirrors each window along the given axes, as nnU-Net does: the
probabilities of every combination of mirrored axes (the plain window included) are flipped
back and averaged, so a window costs ``2 ** len(mirror_axes)`` forward passes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from monai.inferers import sliding_window_inference

from c2fnas.accel.precision import autocast, memory_format

Stride = tuple[int, int, int]
"""Window step in voxels along X, Y and Z."""


def per_axis(stride: int | Sequence[int]) -> Stride:
    """One step per spatial axis: a single number applies to all three.

    Raises:
        ValueError: not one or three values, or a step below 1 voxel.
    """
    steps = (stride,) if isinstance(stride, int) else tuple(int(s) for s in stride)
    steps = steps * 3 if len(steps) == 1 else steps
    if len(steps) != 3:
        raise ValueError(f"stride: expected 1 or 3 values (X Y Z), got {len(steps)}")
    if min(steps) < 1:
        raise ValueError(f"stride must be >= 1 voxel, got {stride}")
    return steps  # type: ignore[return-value]


def overlap_for_stride(patch: Sequence[int], stride: int | Sequence[int]) -> tuple[float, ...]:
    """MONAI's overlap fraction per axis for a step of ``stride`` voxels: 1 - stride / patch.

    A stride larger than a patch side is clipped to that side (no overlap, no gap).
    """
    return tuple(
        1.0 - min(step, side) / side for side, step in zip(patch, per_axis(stride), strict=True)
    )


def window_count(shape: Sequence[int], patch: Sequence[int], stride: int | Sequence[int]) -> int:
    """Windows ``predict_probabilities`` runs over a volume of spatial ``shape``.

    Mirrors MONAI's scan (a volume smaller than the patch is padded to it; the last window of an
    axis is moved back to end at the border); tests pin it to the calls a network receives.
    """
    count = 1
    for size, side, overlap in zip(shape, patch, overlap_for_stride(patch, stride), strict=True):
        padded = max(size, side)
        interval = side if side == padded else max(1, int(side * (1 - overlap)))
        count *= 1 + math.ceil((padded - side) / interval)
    return count


def mirrored(
    probabilities_of: Callable[[torch.Tensor], torch.Tensor], mirror_axes: Sequence[int]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``probabilities_of`` averaged over every combination of flips of ``mirror_axes``.

    Args:
        probabilities_of: maps windows (B, C, X, Y, Z) to probabilities (B, K, X, Y, Z).
        mirror_axes: spatial axes, 0 = X, 1 = Y, 2 = Z.
    """
    if any(axis not in (0, 1, 2) for axis in mirror_axes):
        raise ValueError(f"mirror axes must be spatial axes 0, 1 or 2, got {tuple(mirror_axes)}")
    dims = [2 + axis for axis in sorted(set(mirror_axes))]
    flips = [
        combination for count in range(len(dims) + 1)
        for combination in itertools.combinations(dims, count)
    ]  # fmt: skip

    def averaged(windows: torch.Tensor) -> torch.Tensor:
        total = probabilities_of(windows)
        for flip in flips[1:]:
            total = total + probabilities_of(windows.flip(flip)).flip(flip)
        return total / len(flips)

    return averaged


@torch.no_grad()
def predict_probabilities(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    patch: Sequence[int],
    stride: int | Sequence[int],
    precision: str = "fp32",
    window_batch: int = 4,
    mirror_axes: Sequence[int] = (),
) -> torch.Tensor:
    """Softmax probabilities of ``model`` over ``image`` by overlapping windows.

    Args:
        model: maps (B, C, *patch) to logits (B, K, *patch); called in eval mode by the caller.
        image: (1, C, X, Y, Z) on the model's device; any size (smaller sides are padded).
        patch: window size; each side a multiple of 16 for C2FNAS networks.
        stride: window step in voxels, one for all axes or one per axis (paper: 16).
        precision: ``fp32``, ``bf16`` or ``fp16`` (already resolved).
        window_batch: windows per forward pass.
        mirror_axes: test-time mirroring along these spatial axes (0 = X); empty: none.

    Returns:
        (1, K, X, Y, Z) float32 probabilities on ``image``'s device, windows blended by a
        constant weight.
    """
    device = image.device
    layout = memory_format(device)
    image = image.to(memory_format=layout)

    def probabilities_of(windows: torch.Tensor) -> torch.Tensor:
        with autocast(precision, device):
            logits = model(windows.to(memory_format=layout))
        return torch.softmax(logits.float(), dim=1)

    probabilities = sliding_window_inference(
        image,
        roi_size=tuple(patch),
        sw_batch_size=window_batch,
        predictor=mirrored(probabilities_of, mirror_axes),
        overlap=overlap_for_stride(patch, stride),
        mode="constant",
        padding_mode="constant",
    )
    assert isinstance(probabilities, torch.Tensor)
    return probabilities.float().contiguous()
