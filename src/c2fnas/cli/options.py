"""What several commands parse the same way: folders with numbers after them, search modes and
search settings, the GPUs visible, and holding a folder's lock while a command writes into it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, get_args

import typer

from c2fnas.cli.display import UserError, fail
from c2fnas.files.lock import FolderBusy, folder_lock
from c2fnas.training.config import RunConfig, SearchMode, load_config

DatasetFolder = Annotated[
    Path, typer.Argument(metavar="DATASET", help="Dataset folder (MSD or nnU-Net v2).")
]
PresetOption = Annotated[
    str, typer.Option(metavar="NAME", help="Configuration preset: paper, cpu, smoke.")
]
ConfigOption = Annotated[
    Path | None, typer.Option(metavar="YAML", help="YAML file overriding the preset.")
]

SEARCH_HELP = (
    "coarse (both stages), fine (the fine stage alone on C2FNAS-Panc's topology) or none "
    "(C2FNAS-Panc trained as it is), whatever the budget buys; default: under --time-budget, "
    "what can pay (see `c2fnas plan`), the paper's search without one."
)


@contextlib.contextmanager
def holding(lock: Path, shared: bool = False) -> Iterator[None]:
    """Hold a folder's lock (``c2fnas.files.lock``) while the command writes into it; when
    another process holds it, one line naming that process and exit code 1. Under torchrun,
    rank 0 holds it for every rank of the job."""
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(folder_lock(lock, shared))
        except FolderBusy as error:
            raise fail(str(error), code=1) from None
        yield


def folder_and_numbers(
    folder: Path, extra: list[str], option: str, given: bool
) -> tuple[Path, list[str]]:
    """Click gives an option one value per flag: of ``--spacing 0.8 0.8 2.5`` or ``--folds 0 2``
    the values after the first arrive as extra positional arguments, before or after the folder
    argument. Returns the one folder and those numbers, in order.

    Raises:
        UserError: not exactly one folder, or numbers although ``option`` was not ``given``.
    """
    tokens = [str(folder), *extra]
    numbers = [token for token in tokens if is_number(token)]
    folders = [token for token in tokens if not is_number(token)]
    if len(folders) != 1 or (numbers and not given):
        raise UserError(f"expected one dataset folder and {option} values, got {' '.join(tokens)}")
    return Path(folders[0]), numbers


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def search_mode(search: str | None) -> SearchMode | None:
    """``--search``: one of the configuration's search modes, or None when not given."""
    if search is None:
        return None
    modes = get_args(SearchMode)
    if search not in modes:
        raise UserError(f"--search {search}: choose {', '.join(modes)}")
    return search  # type: ignore[return-value]


def search_config(preset: str, config: Path | None, **search: Any) -> RunConfig:
    """The run configuration, with the search fields given on the command line (None: keep)."""
    run_config = load_config(preset, config)
    given = {key: value for key, value in search.items() if value is not None}
    return run_config.with_fields("search", **given) if given else run_config


def gpu_count() -> int:
    import torch  # heavy: see the package docstring

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


VALUE_NAMES = {
    "int": "N", "int range": "N", "float": "X", "float range": "X", "str": "TEXT",
    "path": "PATH", "file": "FILE", "directory": "FOLDER", "datetime": "TIME",
}  # fmt: skip
"""What ``--help`` calls a value of each type typer names; choices (``a|b``) stay as they are."""


def name_values(command: Any) -> None:
    """Give every option and argument of ``command`` and its subcommands that has no metavar one
    from its type (PATH, N, X, TEXT; none for a flag), ``--help`` included: without one, typer
    shows the Python type (``<bool>``, ``<list[int]>``)."""
    context = typer.Context(command)
    help_option = command.get_help_option(context)
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        _name_value(param, context)
    for subcommand in getattr(command, "commands", {}).values():
        name_values(subcommand)


def _name_value(param: Any, context: typer.Context) -> None:
    if param.metavar is None:
        flag = getattr(param, "is_flag", False) or getattr(param, "count", False)
        param.metavar = "" if flag else _value_name(param.display_type(context))


def _value_name(shown: str) -> str:
    """``<list[int]>`` -> N, ``<float,float,float>`` -> X X X, ``<a|b>`` -> a|b."""
    label = shown.strip("<>").removeprefix("list[").removesuffix("]")
    names = [VALUE_NAMES.get(part.strip(), part.strip()) for part in label.split(",")]
    return " ".join(name if name.replace("|", "").isalnum() else "TEXT" for name in names)


class NamedValuesGroup(typer.core.TyperGroup):
    """The ``c2fnas`` group: every value in ``--help`` named in words (``name_values``)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        name_values(self)

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:  # typer adds --install-completion after __init__
            _name_value(param, ctx)
        return params
