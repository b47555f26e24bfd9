"""Atomic file writes: a temporary sibling, ``fsync``, then ``os.replace`` onto the target.

A reader sees the old file or the new one, never half of one. When writing fails (a full disk,
a read-only folder) the temporary file is removed and the error names the target, not the
temporary name the user never chose; it is the first error, with its ``errno`` (``ENOSPC``),
even when closing or removing the temporary file fails too (those failures become notes). A
process killed outright (``SIGKILL``, a power cut) leaves its temporary file behind: hidden, so
no listing of images takes it for one, and ``remove_leftovers`` clears those of dead processes
when the next run starts.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The names ``temporary_path`` and ``check_writable`` make: ``.<stem>.tmp<pid><suffixes>``.
_TEMPORARY_NAME = re.compile(r"\..*\.tmp(?P<pid>\d+)(?:\.[^.]+)*")


def temporary_path(path: Path) -> Path:
    """A hidden sibling ``.<stem>.tmp<pid><suffixes>`` (nibabel picks the format from them)."""
    suffix = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    return path.with_name(f".{stem}.tmp{os.getpid()}{suffix}")


def remove_leftovers(folder: Path) -> list[Path]:
    """Remove the temporary files that killed writers left in ``folder``; return them.

    Only names of this module's pattern (``.CASE.tmp4242.nii.gz``) are touched, never a user's
    file, and only those whose process no longer runs on this machine: a second writer busy in
    the same folder keeps its file. (A writer on another machine of a shared file system cannot
    be told from a dead one by its pid; its temporary name is hidden and ignored either way.)
    """
    removed = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = _TEMPORARY_NAME.fullmatch(path.name)
        if match and path.is_file() and not _running(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except (ProcessLookupError, OverflowError):  # none with that pid, or no pid at all
        return False
    except PermissionError:  # it runs, under another user
        pass
    return True


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
        try:
            temporary.unlink(missing_ok=True)
        except OSError as cleanup:  # the write's error is the one to report
            error.add_note(f"{temporary}: not removed ({cleanup.strerror or cleanup})")
        if isinstance(error, OSError):
            raise naming(error, f"{path}: cannot write") from error
        raise


def naming(error: OSError, what: str) -> OSError:
    """``error`` as ``what (reason)``: the same type and ``errno`` (``ENOSPC`` stays
    ``ENOSPC``), its notes kept."""
    named = type(error)(f"{what} ({error.strerror or error})")
    named.errno = error.errno  # without strerror, str() stays the message above
    for note in getattr(error, "__notes__", []):
        named.add_note(note)
    return named


def write_bytes_atomic(path: Path, payload: bytes) -> Path:
    # unbuffered: a failed write leaves nothing for close() to flush and fail on a second time
    with replacing(path) as temporary:
        handle = open(temporary, "wb", buffering=0)  # noqa: SIM115 (closed below, noting errors)
        try:
            view = memoryview(payload)
            while view:
                view = view[handle.write(view) :]
            os.fsync(handle.fileno())
        except BaseException as error:
            try:
                handle.close()
            except OSError as closing:
                error.add_note(f"{temporary}: not closed ({closing.strerror or closing})")
            raise
        handle.close()
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
        raise naming(error, f"{folder}: cannot write files there") from error
