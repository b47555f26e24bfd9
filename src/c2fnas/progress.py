"""Progress of long work on the command line: rich bars in a terminal, plain lines in a log.

Under ``nohup``, a batch scheduler or CI, standard error is a file and rich draws nothing until
the end. There, ``LogProgress`` stands in for the bar with the same calls and prints one plain
line per task about every ``interval`` seconds (and when a task finishes): count, rate,
estimated time left and the task's fields (loss, learning rate, validation Dice, ...). The rate
counts from the task's first update, so a resumed training's first count (iteration 712 of a
fold stopped before) is not taken for work done in this start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

INTERVAL_SECONDS = 30.0


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclass
class _Task:
    description: str
    total: float | None
    fields: dict[str, Any]
    started: float
    completed: float = 0.0
    printed: float = 0.0
    finished: bool = False
    first: tuple[float, float] | None = None
    """The count and the time of the first update: the rate counts from there."""


@dataclass
class LogProgress:
    """The subset of ``rich.progress.Progress`` c2fnas uses, printing plain timed lines."""

    console: Console
    interval: float = INTERVAL_SECONDS
    clock: Callable[[], float] = time.monotonic
    _tasks: dict[int, _Task] = field(default_factory=dict)

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        for task_id, task in self._tasks.items():
            if not task.finished and task.completed:
                self._print(task_id)

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        now = self.clock()
        task_id = len(self._tasks)
        self._tasks[task_id] = _Task(description, total, dict(fields), started=now, printed=now)
        return task_id

    def update(
        self,
        task_id: int,
        *,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
        **fields: Any,
    ) -> None:
        task = self._tasks[task_id]
        if completed is not None:
            task.completed = completed
            if task.first is None:
                task.first = (completed, self.clock())
        if total is not None:
            task.total = total
        if description is not None:
            task.description = description
        task.fields.update(fields)
        done = task.total is not None and task.completed >= task.total
        if done and not task.finished:
            task.finished = True
            self._print(task_id)
        elif self.clock() - task.printed >= self.interval:
            self._print(task_id)

    def line(self, task_id: int) -> str:
        """The plain line of a task as it stands."""
        task = self._tasks[task_id]
        now = self.clock()
        elapsed = now - task.started
        count = f"{task.completed:g}"
        if task.total:
            count += f"/{task.total:g} ({100 * task.completed / task.total:.0f}%)"
        parts = [f"{task.description}: {count}"]
        rate = 0.0
        if task.first is not None and now > task.first[1]:
            rate = (task.completed - task.first[0]) / (now - task.first[1])
        parts.append(f"{rate:.3g}/s" if rate >= 1 else f"{1 / rate:.3g} s each" if rate else "")
        if task.total and rate and not task.finished:
            parts.append(f"ETA {duration((task.total - task.completed) / rate)}")
        parts.append(f"elapsed {duration(elapsed)}")
        parts.append(str(task.fields.get("info", "")))
        return "  ".join(part for part in parts if part)

    def _print(self, task_id: int) -> None:
        self._tasks[task_id].printed = self.clock()
        self.console.print(self.line(task_id), highlight=False, markup=False, soft_wrap=True)


def bar_with(console: Console) -> Progress | LogProgress:
    """A bar on ``console``: description, bar, count, the task's ``info`` field (e.g. ``loss
    0.4312  lr 2.0e-02  val Dice 0.812``), elapsed and remaining time; plain timed lines where
    ``console`` is not a terminal. Tasks are added with an ``info`` field."""
    if not console.is_terminal:
        return LogProgress(console)
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
