"""Stopping a long command cleanly: SIGTERM (a scheduler, ``kill``) and Ctrl-C end it with two
lines, what was kept and the command that resumes it, and the exit code a shell gives a process
stopped by that signal (128 + the signal's number: 143 for SIGTERM, 130 for Ctrl-C).

SIGTERM is turned into ``SystemExit(143)`` in the main thread, as Ctrl-C raises
``KeyboardInterrupt``: either way ``finally`` blocks and context managers run (worker processes
terminated, locks released) before the command says it stopped.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import threading
from collections.abc import Iterator

import typer

from c2fnas.cli.display import err_console
from c2fnas.signals import exit_again_when_swallowed, exit_on_signal

SIGINT_EXIT = 128 + signal.SIGINT
SIGTERM_EXIT = 128 + signal.SIGTERM


@contextlib.contextmanager
def stoppable() -> Iterator[None]:
    """Inside: SIGTERM raises ``SystemExit(143)``, once more if a finaliser swallowed it
    (``exit_again_when_swallowed``); outside the main thread nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, exit_on_signal)
    previous_hook, sys.unraisablehook = sys.unraisablehook, exit_again_when_swallowed
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = previous_hook


def stop_code(error: BaseException) -> int | None:
    """130 for Ctrl-C, 143 for SIGTERM (as ``stoppable`` raises it), None for anything else."""
    if isinstance(error, KeyboardInterrupt):
        return SIGINT_EXIT
    if isinstance(error, SystemExit) and error.code == SIGTERM_EXIT:
        return SIGTERM_EXIT
    return None


def stopped(code: int, kept: str) -> typer.Exit:
    """Say that the command was stopped, what ``kept`` and how to resume (the same command);
    returns the ``typer.Exit`` with ``code`` to raise."""
    signal_name = "Ctrl-C" if code == SIGINT_EXIT else "SIGTERM"
    command = shlex.join(["c2fnas", *sys.argv[1:]])
    err_console.print(f"stopped by {signal_name}: {kept}", highlight=False, soft_wrap=True)
    err_console.print(f"resume with: {command}", highlight=False, soft_wrap=True)
    return typer.Exit(code)
