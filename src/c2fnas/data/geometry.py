"""The voxel grid of a case: reorientation, resampling and cropping, and their one inverse.

Preprocessing moves a case from its file's grid to the network's grid in three steps:

1. reorient to the closest canonical (RAS+) voxel order: a permutation and flips of the axes,
   never an interpolation; an oblique rotation stays in the affine;
2. resample to the plan's spacing on the voxel-centre mapping
   ``source = (i + 0.5) * source_size / target_size - 0.5`` (images linear, labels nearest);
3. crop to a box (the non-zero voxels of the image, found by ``nonzero_box``).

``CaseGeometry`` records what these steps need (the file's shape and affine, the target spacing,
the crop box) and undoes them with ``restore``, for label maps and class probabilities alike.
For example a file of ``(40, 30, 12)`` voxels of 1 x 1 x 3 mm stored with its first two axes
swapped, at a spacing of 1 mm, crop box ``((2, 28), (5, 35), (0, 36))``::

    file (40, 30, 12) -> canonical (30, 40, 12) -> resampled (30, 40, 36) -> cropped (26, 30, 36)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from scipy import ndimage

CANONICAL = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)  # RAS+: axis i along +world axis i

Interpolation = Literal["nearest", "linear"]
"""``nearest`` for label maps; ``linear`` for intensities and class probabilities."""

Shape = tuple[int, int, int]
Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]
) -> Shape:
    """Grid size covering the same extent at the target spacing (at least 1 voxel per axis)."""
    return tuple(  # type: ignore[return-value]
        max(1, round(size * old / new))
        for size, old, new in zip(shape, spacing, target, strict=True)
    )


def nearest_indices(source: int, target: int) -> np.ndarray:
    """Source index of each target voxel under the voxel-centre mapping (nearest neighbour)."""
    positions = (np.arange(target) + 0.5) * (source / target)
    return np.minimum(np.floor(positions).astype(np.int64), source - 1)


def resample_nearest(volume: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resampling of the last three axes to ``shape`` (labels)."""
    if tuple(volume.shape[-3:]) == tuple(shape):
        return volume
    index = np.ix_(*(nearest_indices(s, t) for s, t in zip(volume.shape[-3:], shape, strict=True)))
    return volume[(..., *index)]


def resample_linear(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Trilinear resampling of ``(C, X, Y, Z)`` to ``(C, *shape)`` (voxel-centre mapping)."""
    if tuple(image.shape[1:]) == tuple(shape):
        return image
    zoom = [t / s for s, t in zip(image.shape[1:], shape, strict=True)]
    channels = [
        ndimage.zoom(channel, zoom, order=1, mode="nearest", grid_mode=True, prefilter=False)
        for channel in image
    ]
    out = np.stack(channels).astype(np.float32, copy=False)
    assert out.shape[1:] == tuple(shape), (out.shape, shape)
    return out


def resample(volume: np.ndarray, shape: Sequence[int], interpolation: Interpolation) -> np.ndarray:
    """``(..., X, Y, Z)`` -> ``(..., *shape)``; ``linear`` gives float32."""
    if interpolation == "nearest":
        return resample_nearest(volume, shape)
    leading = volume.shape[:-3]
    channels = np.ascontiguousarray(volume, dtype=np.float32).reshape(-1, *volume.shape[-3:])
    return resample_linear(channels, shape).reshape(*leading, *shape)


def reorient(volume: np.ndarray, orientation: np.ndarray) -> np.ndarray:
    """Permute and flip the last three axes of ``(..., X, Y, Z)`` (nibabel's ``orientation``)."""
    leading = volume.ndim - 3
    # apply_orientation works on the first three axes: move any leading (channel) axes last.
    spatial_first = volume.transpose(*range(leading, leading + 3), *range(leading))
    moved = apply_orientation(spatial_first, orientation)
    return moved.transpose(*range(3, 3 + leading), 0, 1, 2)


def nonzero_box(image: np.ndarray) -> Box:
    """``((start, stop), ...)`` per spatial axis of the voxels non-zero in any channel."""
    mask = np.any(image != 0, axis=0)
    if not mask.any():
        return tuple((0, size) for size in mask.shape)  # type: ignore[return-value]
    box = []
    for axis in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)  # type: ignore[return-value]


def canonical_spacing(affine: np.ndarray) -> list[float]:
    """Voxel size in mm along the canonical (RAS) axes, i.e. after reorientation."""
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    spacing = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(io_orientation(affine)):
        spacing[int(target)] = float(zooms[axis])
    return spacing


@dataclass(frozen=True)
class CaseGeometry:
    """What preprocessing did to a case's voxel grid: enough to undo it exactly.

    Attributes:
        original_shape: ``(X, Y, Z)`` of the image file.
        original_affine: the file's 4x4 voxel-to-world affine, row by row.
        spacing: the plan's voxel size in mm along the canonical axes (the target).
        crop_box: ``((start, stop), ...)`` per canonical axis, on the resampled grid.

    The other facts (orientation, shapes along the way, the preprocessed grid's affine) follow
    from these. ``properties``/``from_properties`` read and write the JSON form the
    preprocessed cache keeps in ``<case>.json``.
    """

    original_shape: Shape
    original_affine: tuple[tuple[float, ...], ...]
    spacing: tuple[float, float, float]
    crop_box: Box

    @classmethod
    def uncropped(
        cls, shape: Sequence[int], affine: np.ndarray, spacing: Sequence[float]
    ) -> CaseGeometry:
        """The geometry before a crop box is chosen: the box is the whole resampled grid."""
        whole = cls(
            tuple(int(size) for size in shape),  # type: ignore[arg-type]
            tuple(tuple(float(v) for v in row) for row in np.asarray(affine)),
            tuple(float(v) for v in spacing),  # type: ignore[arg-type]
            ((0, 0), (0, 0), (0, 0)),
        )
        full = tuple((0, size) for size in whole.resampled_shape)
        return dataclasses.replace(whole, crop_box=full)  # type: ignore[arg-type]

    def cropped_to(self, box: Sequence[Sequence[int]]) -> CaseGeometry:
        return dataclasses.replace(
            self,
            crop_box=tuple((int(start), int(stop)) for start, stop in box),  # type: ignore[arg-type]
        )

    # --- what follows from the record --------------------------------------------------------

    @cached_property
    def orientation(self) -> np.ndarray:
        """nibabel's ``(3, 2)`` orientation: file axis i -> canonical axis, direction."""
        return io_orientation(np.asarray(self.original_affine))

    @cached_property
    def canonical_affine(self) -> np.ndarray:
        return np.asarray(self.original_affine) @ inv_ornt_aff(
            self.orientation, self.original_shape
        )

    @property
    def canonical_shape(self) -> Shape:
        shape = [0, 0, 0]
        for axis, (target, _) in enumerate(self.orientation):
            shape[int(target)] = self.original_shape[axis]
        return tuple(shape)  # type: ignore[return-value]

    @property
    def original_spacing(self) -> list[float]:
        """The file's voxel size in mm along the canonical axes."""
        return [float(v) for v in np.sqrt((self.canonical_affine[:3, :3] ** 2).sum(axis=0))]

    @property
    def resampled_shape(self) -> Shape:
        return resampled_shape(self.canonical_shape, self.original_spacing, self.spacing)

    @property
    def shape(self) -> Shape:
        """The preprocessed (resampled, cropped) grid."""
        return tuple(stop - start for start, stop in self.crop_box)  # type: ignore[return-value]

    @property
    def affine(self) -> np.ndarray:
        """Voxel-to-world affine of the preprocessed grid."""
        scale = np.array(self.canonical_shape, dtype=float) / np.array(self.resampled_shape)
        to_canonical = np.eye(4)
        to_canonical[:3, :3] = np.diag(scale)
        # voxel i of the resampled grid sits at canonical index (i + 0.5) * scale - 0.5
        starts = np.array([start for start, _ in self.crop_box])
        to_canonical[:3, 3] = 0.5 * scale - 0.5 + scale * starts
        return self.canonical_affine @ to_canonical

    # --- forward and inverse -----------------------------------------------------------------

    def resample(self, volume: np.ndarray, interpolation: Interpolation) -> np.ndarray:
        """File grid ``(..., X, Y, Z)`` -> canonical order at the target spacing, uncropped."""
        canonical = reorient(volume, self.orientation)
        return resample(canonical, self.resampled_shape, interpolation)

    def crop(self, volume: np.ndarray) -> np.ndarray:
        """The crop box of ``(..., x, y, z)`` on the resampled grid (a view)."""
        return volume[(..., *(slice(start, stop) for start, stop in self.crop_box))]

    def restore(
        self,
        volume: np.ndarray,
        interpolation: Interpolation,
        outside: float | np.ndarray = 0,
    ) -> np.ndarray:
        """Bring ``(..., x, y, z)`` from the preprocessed grid back to the file's voxel grid.

        Undoes the crop (voxels outside the box take ``outside``), the resampling and the
        reorientation. Nearest neighbour on a label map is the exact inverse when the target
        spacing divides the file's (no voxel was dropped); linear on class probabilities keeps
        them summing to one (its weights do).

        Args:
            volume: leading axes (classes, ...) as they are, last three shaped like ``shape``.
            interpolation: ``nearest`` for labels, ``linear`` for probabilities.
            outside: the value outside the crop box, one per leading index (``volume.shape[:-3]``)
                or one for all: background, i.e. 0 for a label map and the one-hot vector of
                class 0 for probabilities.

        Returns:
            ``(..., X, Y, Z)`` in the file's shape and voxel order; the dtype of ``volume``
            (float32 with ``linear``).

        Raises:
            ValueError: ``volume``'s last three axes are not ``shape``.
        """
        if tuple(volume.shape[-3:]) != self.shape:
            raise ValueError(
                f"prediction shape {tuple(volume.shape[-3:])} differs from {self.shape}"
            )
        leading = volume.shape[:-3]
        full = np.empty((*leading, *self.resampled_shape), dtype=volume.dtype)
        full[...] = np.reshape(outside, (*np.shape(outside), 1, 1, 1))
        self.crop(full)[...] = volume
        full = resample(full, self.canonical_shape, interpolation)
        back = ornt_transform(CANONICAL, self.orientation)
        restored = np.ascontiguousarray(reorient(full, back))
        assert restored.shape[-3:] == self.original_shape, restored.shape
        return restored

    def restore_label(self, label: np.ndarray) -> np.ndarray:
        """A label map ``(x, y, z)`` back on the file's grid: background outside, nearest."""
        return self.restore(label, "nearest", 0)

    def restore_probabilities(self, probabilities: np.ndarray) -> np.ndarray:
        """Class probabilities ``(K, x, y, z)`` back on the file's grid as float32
        ``(K, X, Y, Z)``: class 0 (background) outside, linear in between."""
        background = np.eye(len(probabilities), dtype=np.float32)[0]
        return self.restore(np.asarray(probabilities, np.float32), "linear", background)

    # --- the JSON form ------------------------------------------------------------------------

    def properties(self) -> dict[str, Any]:
        """The JSON form (plain types); the derived facts are written too, for readers."""
        return {
            "original_shape": list(self.original_shape),
            "original_affine": [list(row) for row in self.original_affine],
            "orientation": self.orientation.astype(int).tolist(),
            "canonical_shape": list(self.canonical_shape),
            "original_spacing": self.original_spacing,
            "resampled_shape": list(self.resampled_shape),
            "crop_box": [list(pair) for pair in self.crop_box],
            "spacing": list(self.spacing),
            "affine": self.affine.tolist(),
            "shape": list(self.shape),
        }

    @classmethod
    def from_properties(cls, properties: dict[str, Any]) -> CaseGeometry:
        """Read ``properties()``'s form, as the cache's ``<case>.json`` holds it (other keys are
        ignored: the cache adds its own bookkeeping)."""
        affine = np.asarray(properties["original_affine"], dtype=float)
        whole = cls.uncropped(properties["original_shape"], affine, properties["spacing"])
        return whole.cropped_to(properties["crop_box"])
