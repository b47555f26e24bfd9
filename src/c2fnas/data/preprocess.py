"""Preprocessing of one case and its exact inverse for predictions.

The chain, in order (each step recorded in a ``properties`` dict so it can be undone):

1. reorient to the closest canonical (RAS+) voxel order: a permutation and flips of the axes,
   never an interpolation; an oblique rotation stays in the affine;
2. resample to the plan's spacing: images trilinear, labels nearest neighbour, both on the same
   voxel-centre mapping ``source = (i + 0.5) * source_size / target_size - 0.5``;
3. crop to the bounding box of non-zero image voxels (any channel);
4. normalise each channel: ``ct`` clips to dataset-wide foreground percentiles then applies the
   dataset-wide mean and std; ``mr`` subtracts the case's mean and divides by its std, both taken
   over the non-zero voxels (SPEC section 5, as nnU-Net).

``restore_prediction`` undoes 3, 2 and 1 for a label map, giving the original voxel grid.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from scipy import ndimage

from c2fnas.data.io import load_images
from c2fnas.files.atomic import write_text_atomic
from c2fnas.files.run_folder import RunFolder

PLAN_VERSION = 1
CANONICAL = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)  # RAS+: axis i along +world axis i


class ChannelNormalization(BaseModel):
    """How one image channel is normalised.

    ``ct``: ``(clip(x, *clip) - mean) / std`` with dataset-wide foreground statistics.
    ``mr``: per-case z-score over the non-zero voxels (``clip``, ``mean``, ``std`` unused).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheme: Literal["ct", "mr"]
    clip: tuple[float, float] | None = None
    mean: float | None = None
    std: float | None = None

    @model_validator(mode="after")
    def _finite_ct_statistics(self) -> ChannelNormalization:
        # A NaN here would turn every normalised voxel into NaN (JSON writes it as null).
        if self.scheme == "ct":
            values = [*(self.clip or ()), self.mean, self.std]
            if len(values) != 4 or not all(v is not None and math.isfinite(v) for v in values):
                raise ValueError(
                    f"ct normalisation needs finite clip, mean and std, got clip={self.clip}, "
                    f"mean={self.mean}, std={self.std}"
                )
        return self


class Plan(BaseModel):
    """The preprocessing plan of a run (``RUN_DIR/plan.json``).

    Attributes:
        spacing: target voxel size in mm along the canonical (RAS) axes X, Y, Z.
        normalization: one entry per image channel.
        modalities: channel index -> modality name from ``dataset.json``.
        labels: label value -> class name, background included; ``len(labels)`` is the number
            of network outputs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = PLAN_VERSION
    spacing: tuple[float, float, float]
    normalization: list[ChannelNormalization]
    modalities: dict[int, str]
    labels: dict[int, str]
    dataset: str = ""

    @property
    def in_channels(self) -> int:
        return len(self.modalities)

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def digest(self) -> str:
        """A short hash of everything that changes the preprocessed data."""
        payload = self.model_dump(mode="json", exclude={"dataset"})
        text = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def save(self, run_dir: str | Path) -> Path:
        return write_text_atomic(RunFolder(run_dir).plan, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, run_dir: str | Path) -> Plan:
        """Read ``RUN_DIR/plan.json``.

        Raises:
            FileNotFoundError: it is absent; ValueError: it is damaged (both name the file).
        """
        path = RunFolder(run_dir).plan
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; run `c2fnas preprocess` first")
        try:
            return cls.model_validate_json(path.read_text())
        except (UnicodeDecodeError, ValidationError) as error:
            raise ValueError(f"{path}: damaged ({error}); rerun `c2fnas preprocess`") from None


# --- geometry -------------------------------------------------------------------------------


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]
) -> tuple[int, int, int]:
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


def nonzero_box(image: np.ndarray) -> list[list[int]]:
    """``[[start, stop], ...]`` per spatial axis of the voxels non-zero in any channel."""
    mask = np.any(image != 0, axis=0)
    if not mask.any():
        return [[0, size] for size in mask.shape]
    box = []
    for axis in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append([int(hits[0]), int(hits[-1]) + 1])
    return box


def _crop(volume: np.ndarray, box: Sequence[Sequence[int]]) -> np.ndarray:
    return volume[(..., *(slice(start, stop) for start, stop in box))]


def grid_affine(
    canonical_affine: np.ndarray,
    canonical_shape: Sequence[int],
    resampled: Sequence[int],
    box: Sequence[Sequence[int]],
) -> np.ndarray:
    """Voxel-to-world affine of the preprocessed (resampled, cropped) grid."""
    scale = np.array(canonical_shape, dtype=float) / np.array(resampled, dtype=float)
    to_canonical = np.eye(4)
    to_canonical[:3, :3] = np.diag(scale)
    # voxel i of the resampled grid sits at canonical index (i + 0.5) * scale - 0.5
    to_canonical[:3, 3] = 0.5 * scale - 0.5 + scale * np.array([start for start, _ in box])
    return canonical_affine @ to_canonical


# --- intensities ----------------------------------------------------------------------------


def normalize(image: np.ndarray, plan: Plan) -> np.ndarray:
    """Normalise ``(C, X, Y, Z)`` in place per the plan; returns the same array."""
    for channel, rule in zip(image, plan.normalization, strict=True):
        if rule.scheme == "ct":
            assert rule.clip is not None and rule.mean is not None and rule.std is not None
            np.clip(channel, rule.clip[0], rule.clip[1], out=channel)
            channel -= rule.mean
            channel /= max(rule.std, 1e-8)
        else:
            inside = channel[channel != 0]
            values = inside if inside.size > 1 else channel
            mean, std = float(values.mean()), float(values.std())
            channel -= mean
            channel /= max(std, 1e-8)
    return image


# --- the chain ------------------------------------------------------------------------------


def preprocess_arrays(
    image: np.ndarray,
    affine: np.ndarray,
    plan: Plan,
    label: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Run the whole chain on arrays already read from NIfTI.

    Args:
        image: ``(C, X, Y, Z)`` float32 in file voxel order.
        affine: the file's voxel-to-world affine.
        plan: target spacing and normalisation; ``plan.in_channels`` must equal ``C``.
        label: optional ``(X, Y, Z)`` uint8 on the same grid.

    Returns:
        image ``(C, x, y, z)`` float32, label ``(x, y, z)`` uint8 or None, and the properties
        ``restore_prediction`` needs (plain JSON types).
    """
    if image.shape[0] != plan.in_channels:
        raise ValueError(
            f"image has {image.shape[0]} channel(s), the plan expects {plan.in_channels}"
        )
    if not np.isfinite(image).all():
        raise ValueError("image has NaN or infinite intensities (see `c2fnas data check`)")
    original_shape = list(image.shape[1:])
    orientation = io_orientation(affine)
    canonical_affine = affine @ inv_ornt_aff(orientation, original_shape)
    image = apply_orientation(image.transpose(1, 2, 3, 0), orientation).transpose(3, 0, 1, 2)
    if label is not None:
        label = apply_orientation(label, orientation)
    canonical_shape = list(image.shape[1:])
    spacing = [float(v) for v in np.sqrt((canonical_affine[:3, :3] ** 2).sum(axis=0))]
    target_shape = resampled_shape(canonical_shape, spacing, plan.spacing)
    image = resample_linear(np.ascontiguousarray(image, dtype=np.float32), target_shape)
    box = nonzero_box(image)
    image = np.array(_crop(image, box), dtype=np.float32)  # a copy: normalise in place
    if label is not None:
        label = np.ascontiguousarray(_crop(resample_nearest(label, target_shape), box))
    normalize(image, plan)
    properties = {
        "original_shape": original_shape,
        "original_affine": np.asarray(affine, dtype=float).tolist(),
        "orientation": orientation.astype(int).tolist(),
        "canonical_shape": canonical_shape,
        "original_spacing": spacing,
        "resampled_shape": list(target_shape),
        "crop_box": box,
        "spacing": list(plan.spacing),
        "affine": grid_affine(canonical_affine, canonical_shape, target_shape, box).tolist(),
        "shape": list(image.shape[1:]),
    }
    return image, label, properties


def preprocess_images(
    image_path: str | Path, plan: Plan, *, more_channels: Sequence[str | Path] = ()
) -> tuple[np.ndarray, dict[str, Any]]:
    """Preprocess a new image file exactly as the cache did (prediction time).

    Args:
        more_channels: the case's further channel files (nnU-Net's ``CASE_0001``, ...), stacked
            after ``image_path``'s channels.

    Returns:
        image ``(C, x, y, z)`` float32 and its properties for ``restore_prediction``.
    """
    data, nifti = load_images([image_path, *more_channels])
    image, _, properties = preprocess_arrays(data, nifti.affine, plan)
    properties["image"] = str(image_path)
    return image, properties


def restore_prediction(label: np.ndarray, properties: dict[str, Any]) -> np.ndarray:
    """Bring a label map from the preprocessed grid back to the original image's voxel grid.

    Undoes the crop (outside is background 0), the resampling (nearest neighbour) and the
    reorientation. With a target spacing equal to the image's, this is the exact inverse.

    Args:
        label: ``(x, y, z)`` integer array, shaped like the preprocessed image.
        properties: from ``preprocess_images`` or ``cache.load_case``.

    Returns:
        ``(X, Y, Z)`` array (same dtype) with the original image's spatial shape and voxel order.
    """
    box = properties["crop_box"]
    expected = tuple(stop - start for start, stop in box)
    if tuple(label.shape) != expected:
        raise ValueError(f"prediction shape {tuple(label.shape)} differs from {expected}")
    full = np.zeros(properties["resampled_shape"], dtype=label.dtype)
    full[tuple(slice(start, stop) for start, stop in box)] = label
    full = resample_nearest(full, properties["canonical_shape"])
    orientation = np.asarray(properties["orientation"], dtype=float)
    back = ornt_transform(CANONICAL, orientation)
    restored = np.ascontiguousarray(apply_orientation(full, back))
    assert list(restored.shape) == list(properties["original_shape"]), restored.shape
    return restored


def canonical_spacing(affine: np.ndarray) -> list[float]:
    """Voxel size in mm along the canonical (RAS) axes, i.e. after reorientation."""
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    spacing = [0.0, 0.0, 0.0]
    for axis, (target, _) in enumerate(io_orientation(affine)):
        spacing[int(target)] = float(zooms[axis])
    return spacing
