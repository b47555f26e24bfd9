from __future__ import annotations

import os
from pathlib import Path

import pytest

from c2fnas.space import Architecture

REPO = Path(__file__).resolve().parents[1]
HIPPOCAMPUS = Path(
    os.environ.get("C2FNAS_HIPPOCAMPUS", REPO.parent / "shared" / "data" / "Task04_Hippocampus")
)


@pytest.fixture
def panc_path() -> Path:
    return REPO / "architectures" / "c2fnas-panc.json"


@pytest.fixture
def mixed_architecture() -> Architecture:
    """A quarter-width network through all four levels, every op kind in turn."""
    return Architecture.coarse([0, 1, 2, 3, 2, 1, 0, 1, 0, 1, 0, 0], 0.25).with_ops(
        ["p3d", "2d", "3d"] * 4
    )


@pytest.fixture
def hippocampus() -> Path:
    if not (HIPPOCAMPUS / "dataset.json").is_file():
        pytest.skip(f"real data not found at {HIPPOCAMPUS}")
    return HIPPOCAMPUS
