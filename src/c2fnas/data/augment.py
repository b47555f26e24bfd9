"""nnU-Net-like augmentation of a training patch (``DataConfig.augmentation = "nnunet"``).

``loader.sample_patch`` applies, in this order, with the probability per patch and the range:

=================  ===========  ==============================================================
step               probability  range
=================  ===========  ==============================================================
rotation           0.2          each of 3 angles in [-30, 30] degrees, composed Z.Y.X;
                                in-plane only, one angle in [-180, 180], for a flat patch
scaling            0.2          one factor in [0.7, 1.4] for all axes (X and Y for a flat
                                patch); above 1 samples a larger region: objects get smaller
flips, turns       --           the paper's ``loader.augment`` (each axis flipped with 0.5,
                                nnU-Net's mirroring, plus quarter turns in the X-Y plane)
Gaussian noise     0.1          standard deviation in [0, 0.1]; one noise field for all channels
Gaussian blur      0.2          each channel with 0.5; sigma per axis in [0.5, 1] voxels
brightness         0.15         multiplier per channel in [0.75, 1.25]
contrast           0.15         factor per channel in [0.75, 1.25] about the channel's mean,
                                clipped to the channel's range before
low resolution     0.25         each channel with 0.5: zoom in [0.5, 1] (Z kept for a flat
                                patch), nearest-neighbour down, linear back up
inverted gamma     0.1          gamma per channel in [0.7, 1.5] on the negated channel
gamma              0.3          gamma per channel in [0.7, 1.5]
=================  ===========  ==============================================================

The probabilities and ranges are nnU-Net v2's defaults for a 3D configuration (the default
trainer's ``get_training_transforms`` with batchgeneratorsv2's transforms); its noise range is
named a variance there but used as the standard deviation, and so here. Multipliers around 1
(brightness, contrast, gamma) pick the side below or above 1 with equal probability, then a value
uniformly on that side, as nnU-Net does. Gamma maps the channel's [min, max] to [0, 1], raises it
to the power and maps it back, then restores the channel's mean and standard deviation (nnU-Net's
``retain_stats``), so it keeps the order of the values but not the minimum and maximum.

A patch is **flat** when ``max(X, Y) > 3 Z`` (nnU-Net's anisotropy threshold, Z being the thick
slice axis of the canonical grid): like nnU-Net's "dummy 2D" augmentation, it is then rotated
and scaled in the X-Y plane only and Z keeps its resolution, so slices are never mixed.

Where this differs from nnU-Net, for speed on a CPU core (a 48 x 64 x 48 patch, one channel, on
one shared AMD EPYC core: the image about 17 ms to resample linearly, 75 ms with cubic splines;
the label 8 ms by nearest neighbour; ``benchmarks/data_pipeline.py`` measures whole batches):

- rotation and scaling are one ``scipy.ndimage.affine_transform`` per channel, sampled straight
  from the case arrays about the patch centre (zero outside the volume, as ``loader.cut`` pads),
  so the patch has real context at its borders. Rotation is rigid in voxels.
- the image is interpolated linearly (order 1; nnU-Net v2 also samples bilinearly), the label by
  nearest neighbour (order 0; nnU-Net interpolates each label's mask), so labels stay integral.
- when neither rotation nor scaling fires (64 % of patches) nothing is resampled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
from scipy import ndimage

ANISOTROPY = 3.0
"""A patch with ``max(X, Y) > ANISOTROPY * Z`` is flat: augmented in the X-Y plane only."""

ROTATION_PROBABILITY = 0.2
ROTATION = math.radians(30)  # per axis, either way
FLAT_ROTATION = math.pi  # in the X-Y plane of a flat patch
SCALING_PROBABILITY = 0.2
SCALING = (0.7, 1.4)

NOISE = (0.0, 0.1)  # standard deviation
BLUR = (0.5, 1.0)  # sigma in voxels
BRIGHTNESS = (0.75, 1.25)
CONTRAST = (0.75, 1.25)
LOW_RESOLUTION = (0.5, 1.0)  # zoom
GAMMA = (0.7, 1.5)
PER_CHANNEL = 0.5  # blur and low resolution pick each channel with this probability


def flat(patch: Sequence[int]) -> bool:
    """Whether the patch ``(X, Y, Z)`` is thin along Z (see the module docstring)."""
    return max(patch[0], patch[1]) > ANISOTROPY * patch[2]


def rotation(axis: int, angle: float) -> np.ndarray:
    """3x3 rotation by ``angle`` radians about ``axis`` (in the plane of the other two axes)."""
    first, second = (a for a in range(3) if a != axis)
    matrix = np.eye(3)
    matrix[first, first] = matrix[second, second] = math.cos(angle)
    matrix[first, second] = -math.sin(angle)
    matrix[second, first] = math.sin(angle)
    return matrix


def random_affine(rng: np.random.Generator, patch: Sequence[int]) -> np.ndarray | None:
    """A random rotation and scaling ``(3, 3)`` of patch offsets, or None when neither fires."""
    rotate = rng.random() < ROTATION_PROBABILITY
    scale = rng.random() < SCALING_PROBABILITY
    if not (rotate or scale):
        return None
    thin = flat(patch)
    matrix = np.eye(3)
    if rotate and thin:
        matrix = rotation(2, rng.uniform(-FLAT_ROTATION, FLAT_ROTATION))
    elif rotate:
        x, y, z = rng.uniform(-ROTATION, ROTATION, size=3)
        matrix = rotation(2, z) @ rotation(1, y) @ rotation(0, x)
    if scale:
        factor = rng.uniform(*SCALING)
        matrix = matrix @ np.diag([factor, factor, 1.0 if thin else factor])
    return matrix


def resample(
    image: np.ndarray,
    label: np.ndarray,
    start: Sequence[int],
    patch: Sequence[int],
    matrix: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The patch at ``start`` of a case, its sampling grid turned by ``matrix`` about its centre.

    Patch voxel ``o`` samples the case at ``centre + matrix @ (o - (patch - 1) / 2)`` with
    ``centre = start + (patch - 1) / 2``; zero outside the case. ``matrix = I`` gives
    ``loader.cut`` exactly.

    Args:
        image: the case ``(C, X, Y, Z)`` float32, sampled linearly.
        label: the case ``(X, Y, Z)`` uint8, sampled by nearest neighbour.
        start: the patch's corner in the case (may be negative, as from ``patch_start``).
        patch: the output size ``(X, Y, Z)``.
        matrix: ``(3, 3)``, e.g. from ``random_affine``.
    """
    half = (np.asarray(patch, dtype=float) - 1) / 2
    offset = np.asarray(start, dtype=float) + half - matrix @ half
    shape = tuple(int(p) for p in patch)

    def sample(volume: np.ndarray, order: int) -> np.ndarray:
        sampled: np.ndarray = ndimage.affine_transform(
            volume, matrix, offset, output_shape=shape, order=order, mode="grid-constant"
        )
        return sampled

    # one call per channel: a 4D call interpolates along the channel axis too (twice the time)
    return np.stack([sample(channel, 1) for channel in image]), sample(label, 0)


def around_one(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """A factor in ``bounds``, below or above 1 with equal probability (when both are possible)."""
    low, high = bounds
    if low < 1 and rng.random() < 0.5:
        return float(rng.uniform(low, 1.0))
    return float(rng.uniform(max(low, 1.0), high))


def gaussian_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigma = np.float32(rng.uniform(*NOISE))
    noisy: np.ndarray = image + sigma * rng.standard_normal(image.shape[1:], dtype=np.float32)
    return noisy


def gaussian_blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = image.copy()
    for index, channel in enumerate(image):
        if rng.random() < PER_CHANNEL:
            out[index] = ndimage.gaussian_filter(channel, rng.uniform(*BLUR, size=3))
    return out


def brightness(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    factors = np.array([around_one(rng, BRIGHTNESS) for _ in image], dtype=np.float32)
    return image * factors[:, None, None, None]


def contrast(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = np.empty_like(image)
    for index, channel in enumerate(image):
        factor = np.float32(around_one(rng, CONTRAST))
        mean = channel.mean()
        out[index] = np.clip((channel - mean) * factor + mean, channel.min(), channel.max())
    return out


def low_resolution(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    shape = image.shape[1:]
    keep_z = flat(shape)
    out = image.copy()
    for index, channel in enumerate(image):
        if rng.random() >= PER_CHANNEL:
            continue
        zoom = rng.uniform(*LOW_RESOLUTION)
        small = [max(1, round(size * zoom)) for size in shape]
        if keep_z:
            small[2] = shape[2]
        # nearest neighbour down: the voxel whose centre is nearest each coarse voxel's centre
        nearest = [
            np.minimum(((np.arange(n) + 0.5) * size / n).astype(int), size - 1)
            for n, size in zip(small, shape, strict=True)
        ]
        coarse = channel[np.ix_(*nearest)]
        factors = [size / n for n, size in zip(small, shape, strict=True)]
        out[index] = ndimage.zoom(coarse, factors, order=1, mode="nearest", grid_mode=True)
    return out


def gamma(image: np.ndarray, rng: np.random.Generator, invert: bool = False) -> np.ndarray:
    out = np.empty_like(image)
    for index, channel in enumerate(image):
        power = around_one(rng, GAMMA)
        values = -channel if invert else channel
        mean, std = values.mean(), values.std()
        low = values.min()
        span = max(values.max() - low, 1e-7)
        values = ((values - low) / span) ** power * span + low
        values = (values - values.mean()) * (std / max(values.std(), 1e-7)) + mean
        out[index] = -values if invert else values
    return out


Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]

INTENSITY: tuple[tuple[str, float, Transform], ...] = (
    ("gaussian noise", 0.1, gaussian_noise),
    ("gaussian blur", 0.2, gaussian_blur),
    ("brightness", 0.15, brightness),
    ("contrast", 0.15, contrast),
    ("low resolution", 0.25, low_resolution),
    ("inverted gamma", 0.1, partial(gamma, invert=True)),
    ("gamma", 0.3, gamma),
)
"""The intensity transforms in the order applied: ``(name, probability, transform)``. Each
transform maps an image ``(C, X, Y, Z)`` float32 to a new one of the same shape and type."""


def random_intensity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The image ``(C, X, Y, Z)`` after each intensity transform, each with its probability."""
    for _, probability, transform in INTENSITY:
        if rng.random() < probability:
            image = transform(image, rng)
    return image
