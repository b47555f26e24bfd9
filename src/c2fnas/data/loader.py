"""Training patches and validation volumes from a run's preprocessed cache.

Each draw picks ``ceil(batch_size / 2)`` cases and cuts **2 random patches per case** (paper).
A patch is centred on a foreground voxel with probability ``foreground_oversample`` (the class
chosen uniformly among those present), otherwise placed uniformly. A volume smaller than the patch
is zero-padded at a random offset (zero is the mean intensity after normalisation).

Augmentation (paper): a random flip of each axis and a rotation by 0/90/180/270 degrees in the
**X-Y plane** (axes 0 and 1 of the canonical RAS grid, the axial plane). That plane, not the other
two, because it is the in-plane plane of most acquisitions: rotating there never mixes the thick
slice axis Z into the plane, matches the ``2d`` ops' 3x3x1 kernels, and leaves a patch such as
128x128x32 with its shape. When the patch's X and Y sizes differ only 0 and 180 degrees are used.

``augmentation="nnunet"`` (``data.augment``) adds nnU-Net-like rotation and scaling before these
flips and turns, and intensity changes after them.

Rotations and flips are ``numpy`` views; MONAI's ``RandRotate90d``/``RandFlipd`` do the same with
per-call metadata overhead that costs more than the patch cutting itself at these sizes.

Deterministic for a seed: worker ``w`` draws from ``numpy.random.default_rng([seed, w])`` and the
DataLoader hands batches round-robin, so a given ``(seed, workers)`` always gives the same stream
(``workers=0`` and ``workers=1`` give the same stream).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from c2fnas.data.augment import random_affine, random_intensity, resample
from c2fnas.data.cache import load_arrays

PATCHES_PER_VOLUME = 2
AUGMENTATIONS = ("paper", "nnunet")
"""``paper``: ``augment`` only; ``nnunet``: ``data.augment``'s rotation and scaling, ``augment``,
then its intensity transforms (the choices of ``DataConfig.augmentation``)."""
MEMORY_BUDGET = 4 * 2**30  # bytes of cached cases kept in memory, shared by the workers


class CaseStore:
    """Cached cases kept in memory, least recently used dropped beyond a byte budget."""

    def __init__(self, run_dir: str | Path, budget_bytes: int = MEMORY_BUDGET) -> None:
        self.run_dir = Path(run_dir)
        self.budget = budget_bytes
        self.cases: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        self.bytes = 0

    def get(self, case_id: str) -> dict[str, np.ndarray]:
        if case_id in self.cases:
            self.cases.move_to_end(case_id)
            return self.cases[case_id]
        arrays = load_arrays(self.run_dir, case_id)
        self.cases[case_id] = arrays
        self.bytes += sum(a.nbytes for a in arrays.values())
        while self.bytes > self.budget and len(self.cases) > 1:
            _, dropped = self.cases.popitem(last=False)
            self.bytes -= sum(a.nbytes for a in dropped.values())
        return arrays


def patch_start(
    rng: np.random.Generator,
    shape: Sequence[int],
    patch: Sequence[int],
    centre: Sequence[int] | None = None,
) -> list[int]:
    """Corner of a patch; negative or beyond-the-end values mean zero padding.

    The corner ranges over ``[min(0, S - P), max(0, S - P)]`` per axis: inside the volume when it
    is larger than the patch, a random placement of the volume inside the patch otherwise.
    """
    starts = []
    for axis, (size, length) in enumerate(zip(shape, patch, strict=True)):
        low, high = min(0, size - length), max(0, size - length)
        if centre is None:
            starts.append(int(rng.integers(low, high + 1)))
        else:
            starts.append(int(np.clip(centre[axis] - length // 2, low, high)))
    return starts


def cut(volume: np.ndarray, start: Sequence[int], patch: Sequence[int]) -> np.ndarray:
    """The patch of the last three axes at ``start``, zero outside the volume."""
    out = np.zeros(volume.shape[:-3] + tuple(patch), dtype=volume.dtype)
    source, target = [], []
    for begin, length, size in zip(start, patch, volume.shape[-3:], strict=True):
        low, high = max(begin, 0), min(begin + length, size)
        source.append(slice(low, high))
        target.append(slice(low - begin, high - begin))
    out[(..., *target)] = volume[(..., *source)]
    return out


FLIP_AXES = (0, 1, 2)
"""Spatial axes training flips at random (so test-time mirroring may flip them too)."""


def augment(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random flips of each axis and a rotation by a multiple of 90 degrees in the X-Y plane.

    Args:
        image: ``(C, X, Y, Z)``; label: ``(X, Y, Z)``. Shapes are kept.
    """
    square = image.shape[1] == image.shape[2]
    quarter_turns = int(rng.integers(4)) if square else 2 * int(rng.integers(2))
    image = np.rot90(image, quarter_turns, axes=(1, 2))
    label = np.rot90(label, quarter_turns, axes=(0, 1))
    for axis in FLIP_AXES:
        if rng.random() < 0.5:
            image = np.flip(image, axis + 1)
            label = np.flip(label, axis)
    return image, label


def check_augmentation(augmentation: str) -> None:
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"augmentation {augmentation!r}: choose one of {', '.join(AUGMENTATIONS)}")


def sample_patch(
    arrays: dict[str, np.ndarray],
    patch: Sequence[int],
    rng: np.random.Generator,
    foreground: bool,
    augmentation: str = "paper",
) -> tuple[np.ndarray, np.ndarray]:
    """One augmented patch ``(C, *patch)`` float32 and ``(*patch)`` uint8 from a cached case.

    ``augmentation`` is one of ``AUGMENTATIONS``; ``nnunet`` resamples from the whole case when
    it rotates or scales, so the patch has no empty borders.
    """
    check_augmentation(augmentation)
    image, label, locations = arrays["image"], arrays["label"], arrays["locations"]
    centre = None
    if foreground and len(locations):
        values = np.unique(locations[:, 0])
        rows = locations[locations[:, 0] == rng.choice(values)]
        centre = rows[rng.integers(len(rows)), 1:]
    start = patch_start(rng, label.shape, patch, centre)
    if augmentation == "paper":
        return augment(cut(image, start, patch), cut(label, start, patch), rng)
    matrix = random_affine(rng, patch)
    if matrix is None:
        image, label = cut(image, start, patch), cut(label, start, patch)
    else:
        image, label = resample(image, label, start, patch, matrix)
    image, label = augment(image, label, rng)
    return random_intensity(image, rng), label


class PatchBatches(IterableDataset):  # type: ignore[type-arg]
    """An endless stream of training batches (numpy in the workers, torch at the end)."""

    def __init__(
        self,
        run_dir: str | Path,
        case_ids: Sequence[str],
        patch: Sequence[int],
        batch_size: int,
        seed: int,
        foreground_oversample: float,
        memory_budget: int = MEMORY_BUDGET,
        augmentation: str = "paper",
    ) -> None:
        check_augmentation(augmentation)
        if not case_ids:
            raise ValueError("train_batches needs at least one case")
        if batch_size < 1 or len(patch) != 3 or min(patch) < 1:
            raise ValueError(f"bad batch size {batch_size} or patch {tuple(patch)}")
        self.run_dir = Path(run_dir)
        self.case_ids = list(case_ids)
        self.patch = tuple(int(p) for p in patch)
        self.batch_size = batch_size
        self.seed = seed
        self.foreground_oversample = foreground_oversample
        self.memory_budget = memory_budget
        self.augmentation = augmentation

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        rng = np.random.default_rng([self.seed, worker])
        store = CaseStore(self.run_dir, self.memory_budget // workers)
        while True:
            yield self.draw(rng, store)

    def draw(self, rng: np.random.Generator, store: CaseStore) -> dict[str, torch.Tensor]:
        volumes = math.ceil(self.batch_size / PATCHES_PER_VOLUME)
        chosen = rng.choice(len(self.case_ids), volumes, replace=volumes > len(self.case_ids))
        images, labels = [], []
        for index in chosen:
            arrays = store.get(self.case_ids[index])
            for _ in range(PATCHES_PER_VOLUME):
                foreground = rng.random() < self.foreground_oversample
                image, label = sample_patch(arrays, self.patch, rng, foreground, self.augmentation)
                images.append(image)
                labels.append(label)
        image_batch = np.stack(images[: self.batch_size]).astype(np.float32, copy=False)
        label_batch = np.stack(labels[: self.batch_size])[:, None].astype(np.int64)
        return {"image": torch.from_numpy(image_batch), "label": torch.from_numpy(label_batch)}


def train_batches(
    run_dir: str | Path,
    case_ids: Sequence[str],
    patch: Sequence[int],
    batch_size: int,
    seed: int,
    foreground_oversample: float = 0.33,
    workers: int = 0,
    augmentation: str = "paper",
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches ``{"image": float32 (B, C, *patch), "label": int64 (B, 1, *patch)}``.

    Args:
        run_dir: a preprocessed run folder.
        case_ids: the training cases (e.g. ``fold.train``).
        patch: patch size ``(X, Y, Z)`` in voxels of the preprocessed grid.
        batch_size: patches per batch (2 per case, so ``ceil(B / 2)`` cases per batch).
        seed: the stream is a function of ``(seed, workers)``.
        foreground_oversample: probability that a patch is centred on a foreground voxel.
        workers: DataLoader worker processes (0: in this process). On a CPU-only machine 0 is
            usually best: cutting a batch takes milliseconds, a training step seconds, and
            workers add inter-process copies (see ``benchmarks/data_pipeline.py``).
        augmentation: one of ``AUGMENTATIONS`` (``DataConfig.augmentation``).

    Raises:
        ValueError: no cases, a bad batch size or patch, an unknown augmentation.
    """
    dataset = PatchBatches(
        run_dir, case_ids, patch, batch_size, seed, foreground_oversample, augmentation=augmentation
    )
    if workers <= 0:
        return iter(dataset)
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4,
        pin_memory=torch.cuda.is_available(),  # faster host-to-GPU copies
    )
    return iter(loader)


def validation_cases(
    run_dir: str | Path, case_ids: Sequence[str]
) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """Whole preprocessed cases: ``(case_id, image (1, C, X, Y, Z) float32, label (1, 1, X, Y, Z)
    int64)``, loaded one at a time in the given order."""
    for case_id in case_ids:
        arrays: dict[str, Any] = load_arrays(run_dir, case_id)
        image = torch.from_numpy(np.ascontiguousarray(arrays["image"]))[None]
        label = torch.from_numpy(arrays["label"].astype(np.int64))[None, None]
        yield case_id, image, label
