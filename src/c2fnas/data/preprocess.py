"""Preprocessing of one case: the plan and the chain from an image file to the network's input.

The chain, in order (steps 1-3 recorded in a ``geometry.CaseGeometry`` so they can be undone):

1. reorient to the closest canonical (RAS+) voxel order (a permutation and flips of the axes);
2. resample to the plan's spacing: images trilinear, labels nearest neighbour;
3. crop to the bounding box of non-zero image voxels (any channel);
4. normalise each channel: ``ct`` clips to dataset-wide foreground percentiles then applies the
   dataset-wide mean and std; ``mr`` subtracts the case's mean and divides by its std, both taken
   over the non-zero voxels (SPEC section 5, as nnU-Net).

``CaseGeometry.restore`` undoes 3, 2 and 1 for a label map or class probabilities, giving the
original voxel grid.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from c2fnas.data.geometry import CaseGeometry, nonzero_box
from c2fnas.files.atomic import write_text_atomic
from c2fnas.files.run_folder import RunFolder

PLAN_VERSION = 1


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
) -> tuple[np.ndarray, np.ndarray | None, CaseGeometry]:
    """Run the whole chain on arrays already read from an image file.

    Args:
        image: ``(C, X, Y, Z)`` float32 in file voxel order.
        affine: the file's voxel-to-world affine.
        plan: target spacing and normalisation; ``plan.in_channels`` must equal ``C``.
        label: optional ``(X, Y, Z)`` uint8 on the same grid.

    Returns:
        image ``(C, x, y, z)`` float32, label ``(x, y, z)`` uint8 or None, and the geometry
        whose ``restore`` brings predictions back to the file's grid.
    """
    if image.shape[0] != plan.in_channels:
        raise ValueError(
            f"image has {image.shape[0]} channel(s), the plan expects {plan.in_channels}"
        )
    if not np.isfinite(image).all():
        raise ValueError("image has NaN or infinite intensities (see `c2fnas data check`)")
    uncropped = CaseGeometry.uncropped(image.shape[1:], affine, plan.spacing)
    resampled = uncropped.resample(image, "linear")
    geometry = uncropped.cropped_to(nonzero_box(resampled))
    image = np.array(geometry.crop(resampled), dtype=np.float32)  # a copy: normalise in place
    if label is not None:
        label = np.ascontiguousarray(geometry.crop(geometry.resample(label, "nearest")))
    normalize(image, plan)
    return image, label, geometry
