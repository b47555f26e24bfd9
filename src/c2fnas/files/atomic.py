"""Atomic file writes: a temporary sibling, ``fsync``, then ``os.replace`` onto the target.

A reader sees the old file or the new one, never half of one. When writing fails (a full disk,
a read-only folder) the temporary file is removed and the error names the target, not the
temporary name the user never chose.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temporary_path(path: Path) -> Path:
    """A hidden sibling ``.<stem>.tmp<pid><suffixes>`` (nibabel picks the format from them)."""
    suffix = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    return path.with_name(f".{stem}.tmp{os.getpid()}{suffix}")


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on failure it is removed.

    Raises:
        OSError: of the original kind, naming ``path`` and the reason (e.g. no space left).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            reason = error.strerror or str(error)
            raise type(error)(f"{path}: cannot write ({reason})") from error
        raise


def write_bytes_atomic(path: Path, payload: bytes) -> Path:
    with replacing(path) as temporary, open(temporary, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def write_text_atomic(path: Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode())


def write_json_atomic(path: Path, data: Any) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and prove a file can be written there, before any long work.

    Raises:
        OSError: naming the folder and the reason (read-only, no permission, not a folder).
    """
    probe = folder / f".write-test.tmp{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb"):
            pass
        probe.unlink()
    except OSError as error:
        reason = error.strerror or str(error)
        raise type(error)(f"{folder}: cannot write files there ({reason})") from error
