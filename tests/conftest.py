from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HIPPOCAMPUS = Path(
    os.environ.get("C2FNAS_HIPPOCAMPUS", REPO.parent / "shared" / "data" / "Task04_Hippocampus")
)


@pytest.fixture
def panc_path() -> Path:
    return REPO / "architectures" / "c2fnas-panc.json"


@pytest.fixture
def hippocampus() -> Path:
    if not (HIPPOCAMPUS / "dataset.json").is_file():
        pytest.skip(f"real data not found at {HIPPOCAMPUS}")
    return HIPPOCAMPUS
