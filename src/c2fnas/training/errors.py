"""The errors a training run ends with, importable without torch: the command line catches them
before it has loaded the training stack."""

from __future__ import annotations


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message gives the iteration and the value."""


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (allocators and compilers write pages), or its type."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class OutOfMemory(RuntimeError):
    """A training step ran out of memory with ``micro_batch`` samples per pass through the
    network (on the GPU or the CPU); the original error is its ``__cause__``."""

    def __init__(self, micro_batch: int, iteration: int, cause: BaseException) -> None:
        super().__init__(
            f"out of memory at iteration {iteration} with micro-batch {micro_batch}: "
            f"{first_line(cause)}"
        )
        self.micro_batch = micro_batch
        self.iteration = iteration
