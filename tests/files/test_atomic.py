"""``c2fnas.files.atomic``: the leftovers of killed writers, and only those, are cleared."""

import builtins
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from c2fnas.files.atomic import remove_leftovers, temporary_path, write_bytes_atomic


def dead_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_only_the_temporary_files_of_dead_writers_are_removed(tmp_path):
    pid = dead_pid()
    dead = [tmp_path / f".case.tmp{pid}.nii.gz", tmp_path / f".write-test.tmp{pid}"]
    kept = [
        tmp_path / f".other.tmp{os.getppid()}.nii.gz",  # a writer still at work
        temporary_path(tmp_path / "mine.nii.gz"),  # this process's own
        tmp_path / "case.nii.gz",
        tmp_path / f"case.tmp{pid}.nii.gz",  # not hidden: a user's file
        tmp_path / ".notes.tmp.txt",
        tmp_path / "._case.nii.gz",
    ]
    for path in dead + kept:
        path.write_bytes(b"")
    assert remove_leftovers(tmp_path) == sorted(dead)
    assert all(path.exists() for path in kept) and not any(path.exists() for path in dead)
    assert remove_leftovers(tmp_path / "absent") == []


def _no_space(*arguments):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _cannot_remove(*arguments, **options):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))


class _FullDisk:
    """A file that cannot be closed, whose writes fail too when ``failing == "write"``."""

    def __init__(self, handle, failing):
        self.handle, self.failing = handle, failing

    def write(self, data):
        if self.failing == "write":
            _no_space()
        return self.handle.write(data)

    def fileno(self):
        return self.handle.fileno()

    def close(self):
        self.handle.close()
        _no_space()


@pytest.mark.parametrize("failing", ["write", "fsync"])
def test_a_full_disk_is_the_error_reported_even_when_the_cleanup_fails(
    tmp_path, monkeypatch, failing
):
    """The first error (no space left) names the target and keeps its errno; the temporary
    file that could not be removed is a note, not the error."""
    target = tmp_path / "model.safetensors"
    real_open = builtins.open

    def opening(file, mode="r", *arguments, **options):
        handle = real_open(file, mode, *arguments, **options)
        return _FullDisk(handle, failing) if "w" in mode else handle

    with monkeypatch.context() as patch:
        patch.setattr(builtins, "open", opening)
        if failing == "fsync":
            patch.setattr(os, "fsync", _no_space)
        patch.setattr(Path, "unlink", _cannot_remove)
        with pytest.raises(OSError) as raised:
            write_bytes_atomic(target, b"weights" * 1000)
    error = raised.value
    assert error.errno == errno.ENOSPC and isinstance(error, OSError)
    assert str(target) in str(error) and "No space left on device" in str(error)
    notes = getattr(error, "__notes__", [])
    assert any(str(temporary_path(target)) in note and "Permission denied" in note
               for note in notes), notes  # fmt: skip
    temporary_path(target).unlink(missing_ok=True)
    assert not target.exists()
