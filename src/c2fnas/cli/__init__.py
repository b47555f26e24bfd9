"""The ``c2fnas`` command line: thin commands over the library, with tables and progress.

One module per group of commands (``data``, ``plan_run``, ``train``, ``search``, ``predict``,
``tools``), each with its own ``typer.Typer`` merged into ``app`` here; what they show lives in
``display``, what several of them parse in ``options``.

Commands import the parts of the library that load torch inside their bodies, one import each:
importing torch and MONAI takes 5-15 s on a small CPU, which ``c2fnas --help``, ``c2fnas data
check`` and a mistyped option should not wait for (a test keeps this module torch-free).
Everything else is imported at the top.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from c2fnas.accel.process import keep_freed_memory, use_threads
from c2fnas.cli import data, plan_run, predict, search, tools, train
from c2fnas.cli.options import NamedValuesGroup

app = typer.Typer(
    name="c2fnas",
    cls=NamedValuesGroup,
    help="Coarse-to-fine neural architecture search for 3D medical image segmentation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
for commands in (tools.app, data.app, plan_run.app, train.app, predict.app, search.app):
    app.add_typer(commands)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Fix the CPU threads (default: OMP_NUM_THREADS, or the cores this process "
            "may use, leaving cores to other jobs that load them while training).",
        ),
    ] = None,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    keep_freed_memory()  # this process trains or predicts: keep its activation buffers mapped
    use_threads(threads)


def main() -> None:
    app()
