"""In-memory data for training tests: a bright ball (class 1) and a dim box (class 2) in noise."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from c2fnas.space import Architecture

TINY = Architecture.coarse([0, 1, 2, 3, 2, 1, 0, 0, 0, 0, 0, 0], width=0.125)


def case(
    seed: int, shape: tuple[int, int, int] = (32, 32, 16)
) -> tuple[torch.Tensor, torch.Tensor]:
    """(image (1, X, Y, Z) float32, label (1, X, Y, Z) int64), deterministic for ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(side) for side in shape], indexing="ij"))
    centre = torch.tensor([side / 2 for side in shape]).view(3, 1, 1, 1)
    centre = centre + torch.randint(-3, 4, (3, 1, 1, 1), generator=generator)
    label = torch.zeros(shape, dtype=torch.int64)
    label[((grid - centre) ** 2).sum(0) < 64] = 1
    label[:8, :8, :] = 2
    image = label.float() + 0.3 * torch.randn(shape, generator=generator)
    return image[None], label[None]


def batches(seed: int, batch_size: int = 2, rank: int = 0, world: int = 1):
    """A ``BatchSource``: the global batch is drawn, this rank keeps its contiguous share."""

    def source(start: int) -> Iterator[dict[str, torch.Tensor]]:
        draw = start
        while True:
            pairs = [case(seed * 100003 + draw * 31 + index) for index in range(batch_size)]
            share = pairs[rank * batch_size // world : (rank + 1) * batch_size // world]
            yield {
                "image": torch.stack([image for image, _ in share]),
                "label": torch.stack([label for _, label in share]),
            }
            draw += 1

    return source


def validation(seeds=(1000, 1001)):
    def source():
        for seed in seeds:
            image, label = case(seed)
            yield f"case_{seed}", image[None], label[None]

    return source
