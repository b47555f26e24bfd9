"""Sliding-window class probabilities over a whole (preprocessed) volume, with MONAI's inferer."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.inferers import sliding_window_inference

from c2fnas.accel.precision import autocast, memory_format


def overlap_for_stride(patch: Sequence[int], stride: int) -> tuple[float, ...]:
    """MONAI's overlap fraction per axis for a step of ``stride`` voxels: 1 - stride / patch.

    A stride larger than a patch side is clipped to that side (no overlap, no gap).
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1 voxel, got {stride}")
    return tuple(1.0 - min(stride, side) / side for side in patch)


@torch.no_grad()
def predict_probabilities(
    model: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    patch: Sequence[int],
    stride: int,
    precision: str = "fp32",
    window_batch: int = 4,
) -> torch.Tensor:
    """Softmax probabilities of ``model`` over ``image`` by overlapping windows.

    Args:
        model: maps (B, C, *patch) to logits (B, K, *patch); called in eval mode by the caller.
        image: (1, C, X, Y, Z) on the model's device; any size (smaller sides are padded).
        patch: window size; each side a multiple of 16 for C2FNAS networks.
        stride: window step in voxels (paper: 16; fine search: 48).
        precision: ``fp32``, ``bf16`` or ``fp16`` (already resolved).
        window_batch: windows per forward pass.

    Returns:
        (1, K, X, Y, Z) float32 probabilities on ``image``'s device, windows blended by a
        constant weight.
    """
    device = image.device
    layout = memory_format(device)
    image = image.to(memory_format=layout)

    def predictor(windows: torch.Tensor) -> torch.Tensor:
        with autocast(precision, device):
            logits = model(windows.to(memory_format=layout))
        return torch.softmax(logits.float(), dim=1)

    probabilities = sliding_window_inference(
        image,
        roi_size=tuple(patch),
        sw_batch_size=window_batch,
        predictor=predictor,
        overlap=overlap_for_stride(patch, stride),
        mode="constant",
        padding_mode="constant",
    )
    assert isinstance(probabilities, torch.Tensor)
    return probabilities.float().contiguous()
