"""``c2fnas.files.atomic``: the leftovers of killed writers, and only those, are cleared."""

import os
import subprocess
import sys

from c2fnas.files.atomic import remove_leftovers, temporary_path


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
