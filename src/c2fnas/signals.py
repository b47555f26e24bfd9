"""Leaving on a signal as on Ctrl-C: for the entry points and worker processes that own their
process (a library function never installs a handler behind its caller's back).

``exit_on_signal`` turns a signal (SIGTERM from a scheduler or ``kill``) into
``SystemExit(128 + signal)``, so that ``finally`` blocks and context managers run and the exit
code is the one a shell reports for that signal; ``exit_again_when_swallowed`` makes sure such an
exit is not lost inside a finaliser.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any


def exit_on_signal(signum: int, frame: object) -> None:
    """A signal handler: leave as on Ctrl-C, with exit code 128 + the signal's number."""
    raise SystemExit(128 + signum)


def exit_again_when_swallowed(unraisable: Any) -> None:
    """``sys.unraisablehook`` for processes that stop by ``exit_on_signal`` or Ctrl-C.

    A signal that arrives while a finaliser or a weak-reference callback runs (SQLAlchemy has
    many) raises its ``SystemExit`` or ``KeyboardInterrupt`` there, where Python prints it and
    carries on: the process would ignore the signal. This hook sends the signal once more
    instead, so that the process leaves at its next step; anything else goes to the default
    hook.
    """
    error = unraisable.exc_value
    code = getattr(error, "code", None)
    if isinstance(error, SystemExit) and isinstance(code, int) and code > 128:
        os.kill(os.getpid(), code - 128)
    elif isinstance(error, KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
    else:
        sys.__unraisablehook__(unraisable)
