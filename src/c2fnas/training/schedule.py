"""The learning-rate schedule as pure functions of the iteration (paper Sec. 4.1).

Linear warm-up from ``warmup_start_lr`` to ``learning_rate`` over ``warmup_iterations``, then the
rate is multiplied by ``gamma`` at each milestone. Paper (search): 0.0025 -> 0.02 over 1000
iterations, x0.5 at 8000 and 16000, 20000 iterations; deployment: x0.5 at 16000 and 32000, 40000.
"""

from __future__ import annotations

from collections.abc import Sequence


def warmup_rate(iteration: int, start: float, end: float, warmup_iterations: int) -> float:
    """The warm-up rate: ``start`` at iteration 0, ``end`` from ``warmup_iterations`` on."""
    if warmup_iterations <= 0 or iteration >= warmup_iterations:
        return end
    return start + (end - start) * iteration / warmup_iterations


def decay_factor(iteration: int, milestones: Sequence[int], gamma: float) -> float:
    """``gamma`` to the number of milestones already reached (a milestone counts from itself on)."""
    return float(gamma ** sum(1 for milestone in milestones if iteration >= milestone))


def learning_rate(
    iteration: int,
    learning_rate: float,
    warmup_start_lr: float,
    warmup_iterations: int,
    milestones: Sequence[int],
    gamma: float,
) -> float:
    """The rate for 0-based ``iteration``: warm-up, then step decay."""
    rate = warmup_rate(iteration, warmup_start_lr, learning_rate, warmup_iterations)
    return rate * decay_factor(iteration, milestones, gamma)
