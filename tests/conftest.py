from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from c2fnas.space import Architecture

# Tests compare training runs bit for bit: no thread-count changes under a busy CI machine
# (ThreadGovernor is tested on its own, in tests/accel/test_accel_process.py).
os.environ.setdefault("C2FNAS_ADAPT_THREADS", "0")

if os.environ.get("C2FNAS_TEST_AS_BF16_CPU") == "1":
    # Take the precision choices of a CPU with native bf16 (AVX512-BF16, AMX) on one without:
    # ``auto`` resolves to bf16 in this process. On a CPU without bf16 that is emulated, so the
    # suite takes about 3.5x as long (2 AMD EPYC cores); worker and CLI subprocesses still see
    # the real CPU.
    import c2fnas.accel.precision

    c2fnas.accel.precision.cpu_supports_bf16 = lambda: True

REPO = Path(__file__).resolve().parents[1]
POSTGRES = os.environ.get("C2FNAS_TEST_POSTGRES", "")
"""A PostgreSQL database URL for the trial-store tests (``.ci/run`` starts a server and sets it)."""
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


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL of an empty schema of the test database, dropped afterwards; skips without one."""
    if not POSTGRES:
        pytest.skip("no PostgreSQL server: set C2FNAS_TEST_POSTGRES (as .ci/run does)")
    import sqlalchemy  # only the PostgreSQL tests need it

    schema = f"test_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(POSTGRES)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in POSTGRES else "?"
    # Every connection (workers and commands in other processes too) finds its tables there.
    yield f"{POSTGRES}{separator}options=-csearch_path%3D{schema}"
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("SET lock_timeout = '20s'"))
        connection.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()
