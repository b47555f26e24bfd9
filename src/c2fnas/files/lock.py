"""Folder locks: one command at a time writes a run folder, or a training folder inside it.

A lock is ``fcntl.flock`` on a ``.lock`` file in the folder (``RunFolder.lock``,
``TrainingFolder.lock``, ``ScaleFolder.lock``). The operating system releases it when the
holder's last descriptor closes, so a process killed by ``SIGKILL`` or a power cut leaves no
stale lock to clean by hand. The file names the holders (pid, host, command; one JSON object a
line) so that a refused command can say who to wait for.

Exclusive locks are for commands that rewrite what every other command reads (``c2fnas run``,
``plan``, ``preprocess``); shared ones for commands built to run side by side on one folder:
coarse search workers (their claims are atomic in the trial store), fine search scorers, and
``train`` of different folds, ``search scale`` and the supernet's training, each of which also
locks the folder it trains into exclusively.

Nested calls in one process reuse the lock it holds, as it holds it (the pipeline's stages
inside ``run``; a shared lock is not upgraded). Worker
processes never take it: spawned search workers hold no descriptor of it and work under their
parent's lock; forked data-loading workers share the parent's descriptor, so the lock stays
held until they end too. ``flock`` on a network file system is only as good as its server's
support (NFSv4 maps it to a byte-range lock; some older mounts ignore it).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_held: dict[Path, int] = {}
"""This process's locks: lock file -> nesting depth."""


class FolderBusy(Exception):
    """Another process holds the folder's lock; the message names it."""


@contextmanager
def folder_lock(path: Path, shared: bool = False) -> Iterator[None]:
    """Hold the lock file ``path`` while the block runs. An exclusive lock creates the folder
    (the commands that make a run folder take one); a shared lock of a missing folder holds
    nothing and creates nothing: the command reading the folder fails on its own error without
    leaving an empty folder behind (a mistyped run folder, say).

    Args:
        path: the folder's ``.lock`` file, e.g. ``RunFolder(run_dir).lock``.
        shared: share it with other shared holders (exclusive holders are still refused).

    Raises:
        FolderBusy: another process holds it (exclusively, or ``shared`` is False), naming the
            holders' pid, host and command. Never waits: a second run would only queue behind
            a search that lasts days.
    """
    if shared and not path.parent.is_dir():
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    key = path.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    descriptor = os.open(key, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        holders = _describe(_holders(descriptor))
        os.close(descriptor)
        raise FolderBusy(
            f"{path.parent} is in use by {holders}; wait for it to finish or stop it (the lock "
            "goes with the process)"
        ) from None
    me = _me()
    others = [record for record in _holders(descriptor) if shared and _alive(record)]
    _write_holders(descriptor, [*others, me])
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        if shared:  # best effort: a name the next holder prunes, never the lock itself
            _write_holders(descriptor, [r for r in _holders(descriptor) if r != me])
        os.close(descriptor)  # releases the lock


def _me() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
    }


def _alive(record: dict[str, object]) -> bool:
    """Whether the holder may still run (another host's processes cannot be checked)."""
    pid = record.get("pid")
    if record.get("host") != socket.gethostname() or not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _holders(descriptor: int) -> list[dict[str, object]]:
    """The holders the lock file names, one JSON object a line (unreadable lines skipped)."""
    text = os.pread(descriptor, 1 << 16, 0).decode(errors="replace")
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _write_holders(descriptor: int, records: list[dict[str, object]]) -> None:
    text = "".join(json.dumps(record) + "\n" for record in records)
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, text.encode(), 0)


def _describe(records: list[dict[str, object]]) -> str:
    # A killed holder's forked children keep its lock: name it even though it is gone.
    shown = [record for record in records if _alive(record)] or records[-1:]
    if not shown:
        return "another process"
    return ", ".join(
        f"pid {record.get('pid')} on {record.get('host')} ({record.get('command')})"
        for record in shown
    )
