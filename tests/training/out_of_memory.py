"""A network that runs out of memory above a batch size, for the micro-batch tests."""

from __future__ import annotations

import torch

from c2fnas.nn import C2FNet
from tests.training.synthetic import TINY


class RunsOutOfMemory(C2FNet):
    """``C2FNet(TINY, 1, 3)`` whose training passes of more than ``limit`` samples raise
    ``error`` as the allocator would (CUDA's, or the CPU's ``RuntimeError``)."""

    def __init__(
        self, limit: int, error: type[RuntimeError] = torch.OutOfMemoryError, seed: int = 0
    ) -> None:
        torch.manual_seed(seed)
        super().__init__(TINY, 1, 3)
        self.limit, self.error = limit, error

    def forward(self, x: torch.Tensor, *args: object) -> torch.Tensor:
        if self.training and len(x) > self.limit:
            if self.error is torch.OutOfMemoryError:
                raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB\nmore advice")
            raise self.error("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8")
        return super().forward(x, *args)
