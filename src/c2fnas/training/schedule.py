"""The learning-rate schedule as pure functions of the iteration (paper Sec. 4.1).

Linear warm-up from ``warmup_start_lr`` to ``learning_rate`` over ``warmup_iterations``, then the
rate is multiplied by ``gamma`` at each milestone. Paper (search): 0.0025 -> 0.02 over 1000
iterations, x0.5 at 8000 and 16000, 20000 iterations; deployment: x0.5 at 16000 and 32000, 40000.
The alternative ``poly`` decay (nnU-Net's) replaces the milestones: after the warm-up the rate
falls smoothly to 0 at the last iteration.
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


def poly_factor(iteration: int, warmup_iterations: int, iterations: int, exponent: float) -> float:
    """``(1 - t) ** exponent`` of the fraction ``t`` of the post-warm-up iterations done: 1 when
    the warm-up ends, falling to 0 after the last iteration (``iterations``)."""
    if iteration < warmup_iterations:
        return 1.0
    span = max(iterations - warmup_iterations, 1)
    done = min(iteration - warmup_iterations, span)
    return float((1.0 - done / span) ** exponent)


def learning_rate(
    iteration: int,
    learning_rate: float,
    warmup_start_lr: float,
    warmup_iterations: int,
    milestones: Sequence[int],
    gamma: float,
    *,
    decay: str = "step",
    iterations: int = 0,
    poly_exponent: float = 0.9,
) -> float:
    """The rate for 0-based ``iteration``: warm-up, then step decay (``decay="step"``) or the
    polynomial decay to 0 over ``iterations`` (``decay="poly"``; milestones and gamma unused)."""
    rate = warmup_rate(iteration, warmup_start_lr, learning_rate, warmup_iterations)
    if decay == "poly":
        return rate * poly_factor(iteration, warmup_iterations, iterations, poly_exponent)
    if decay != "step":
        raise ValueError(f"learning-rate decay {decay!r}: choose 'step' or 'poly'")
    return rate * decay_factor(iteration, milestones, gamma)
