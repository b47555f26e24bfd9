"""Validation Dice per foreground class on whole cases (sliding window, argmax)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from monai.metrics import compute_dice
from torch.nn.functional import one_hot

from c2fnas.inference.sliding_window import predict_probabilities

ValidationCase = tuple[str, torch.Tensor, torch.Tensor]
"""(case id, image (1, C, X, Y, Z) float32, label (1, 1, X, Y, Z) int)."""


def dice_per_class(prediction: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Dice of each foreground class for one case; both empty counts as 1, one empty as 0.

    Args:
        prediction, label: integer label maps of the same shape (X, Y, Z).

    Returns:
        (num_classes - 1,) float64.
    """
    as_one_hot = [
        one_hot(volume.long(), num_classes).movedim(-1, 0)[None].float()
        for volume in (prediction, label)
    ]
    dice = compute_dice(*as_one_hot, include_background=False, ignore_empty=False)
    return dice[0].double().cpu()


def validate(
    model: Callable[[torch.Tensor], torch.Tensor],
    cases: Iterable[ValidationCase],
    num_classes: int,
    patch: Sequence[int],
    stride: int | Sequence[int],
    precision: str,
    device: torch.device,
    window_batch: int,
) -> tuple[torch.Tensor, int]:
    """Sum of per-case Dice per foreground class over ``cases``, and the number of cases."""
    total = torch.zeros(num_classes - 1, dtype=torch.float64)
    count = 0
    for _, image, label in cases:
        probabilities = predict_probabilities(
            model, image.to(device), patch, stride, precision, window_batch
        )
        prediction = probabilities[0].argmax(0)
        total += dice_per_class(prediction, label[0, 0].to(prediction.device), num_classes)
        count += 1
    return total, count
