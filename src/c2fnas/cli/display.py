"""What the commands show: the consoles, one-line errors, progress bars, tables and the live view
of a search. Plain lines instead of bars and tables when the output is a log, not a terminal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from c2fnas.progress import bar_with
from c2fnas.search.colourings import colouring_text
from c2fnas.search.report import code_text, progress_table

console = Console()
err_console = Console(stderr=True)


class UserError(Exception):
    """A problem with the user's input: printed as one clear line, exit code 2."""


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr; returns the ``typer.Exit`` to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def progress_bar() -> tuple[Any, Any]:
    """A progress bar (plain lines in a log) and the ``progress(stage, done, total)`` callback
    that drives it."""
    bar = bar_with(err_console)
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total, info="")
        bar.update(tasks[stage], completed=done, total=total)

    return bar, update


def training_info(metrics: dict[str, float]) -> str:
    """``loss 0.4312  lr 2.00e-02  val Dice 0.812`` from a ``fit`` progress callback's metrics."""
    dice = f"{metrics['dice']:.3f}" if "dice" in metrics else "-"
    rate = f"  lr {metrics['lr']:.2e}" if "lr" in metrics else ""
    return f"loss {metrics['loss']:.4f}{rate}  val Dice {dice}"


def training_bar() -> tuple[Any, Any]:
    """A bar with loss, learning rate, last validation Dice and ETA (plain lines in a log), and
    the ``fit`` callback driving it."""
    bar = bar_with(err_console)
    task = bar.add_task("training", total=None, info="")

    def update(done: int, total: int, metrics: dict[str, float]) -> None:
        bar.update(task, completed=done, total=total, info=training_info(metrics))

    return bar, update


def pipeline_progress() -> tuple[Any, Callable[[str, str, int | None], Callable[..., None]]]:
    """One progress display for a whole run, and the factory of per-task callbacks
    (``Pipeline.progress``)."""
    bar = bar_with(err_console)

    def factory(kind: str, label: str, total: int | None) -> Callable[..., None]:
        task = bar.add_task(label, total=total, info="")

        def data(stage: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=f"{label}: {stage}")

        def training(done: int, total: int, metrics: dict[str, float]) -> None:
            bar.update(task, completed=done, total=total, info=training_info(metrics))

        def search(snapshot: Any) -> None:
            best = snapshot.best
            info = f"best Dice {best.score:.3f}" if best is not None else ""
            running = snapshot.count("running")
            bar.update(task, completed=snapshot.evaluated, info=f"{info}  {running} running")

        def cases(case: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, info=case)

        return {"data": data, "train": training, "search": search, "predict": cases}[kind]

    return bar, factory


def search_display(stage: str, budget: int) -> tuple[Any, Callable[[Any], None]]:
    """A live table of the search in a terminal, plain progress lines in a log; and the
    ``on_progress(snapshot)`` callback that drives it."""
    describe = code_text if stage == "coarse" else colouring_text
    if console.is_terminal:
        live = Live(console=console, refresh_per_second=1)

        def update_table(snapshot: Any) -> None:
            live.update(progress_table(snapshot, budget, stage=stage, describe=describe))

        return live, update_table
    bar = bar_with(console)
    task = bar.add_task(f"{stage} search", total=budget, info="")

    def update_lines(snapshot: Any) -> None:
        best = snapshot.best
        info = f"best Dice {best.score:.4f} ({describe(best.code)})" if best is not None else ""
        info += f"  {snapshot.count('running')} running"
        bar.update(task, completed=snapshot.evaluated, info=info)

    return bar, update_lines


def print_listing(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A table in a terminal; in a log (CI, batch jobs: no terminal, 80 columns) aligned plain
    lines that are never cut. The last column is a status, green when "ok"."""
    if not console.is_terminal:
        widths = [max(map(len, column)) for column in zip(columns, *rows, strict=True)]
        lines = [
            "  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip()
            for row in (columns, *rows)
        ]
        for line in (title, *lines):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column, no_wrap=column == columns[0], overflow="fold")
    for row in rows:
        table.add_row(*map(Text, row[:-1]), Text(row[-1], "green" if row[-1] == "ok" else "red"))
    console.print(table)
