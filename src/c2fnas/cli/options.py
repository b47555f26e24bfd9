"""What several commands parse the same way: folders with numbers after them, search modes and
search settings, the GPUs visible, and holding a folder's lock while a command writes into it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from c2fnas.cli.display import UserError, fail
from c2fnas.files.lock import FolderBusy, folder_lock

if TYPE_CHECKING:
    from c2fnas.training.config import RunConfig, SearchMode

DatasetFolder = Annotated[Path, typer.Argument(help="Dataset folder (MSD or nnU-Net v2).")]
PresetOption = Annotated[str, typer.Option(help="Configuration preset: paper, cpu, smoke.")]
ConfigOption = Annotated[Path | None, typer.Option(help="YAML file overriding the preset.")]

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
    from typing import get_args

    from c2fnas.training.config import SearchMode  # heavy: see the package docstring

    if search is None:
        return None
    modes = get_args(SearchMode)
    if search not in modes:
        raise UserError(f"--search {search}: choose {', '.join(modes)}")
    return search  # type: ignore[return-value]


def search_config(preset: str, config: Path | None, **search: Any) -> RunConfig:
    """The run configuration, with the search fields given on the command line (None: keep)."""
    from c2fnas.training.config import load_config  # heavy: see the package docstring

    run_config = load_config(preset, config)
    given = {key: value for key, value in search.items() if value is not None}
    return run_config.with_fields("search", **given) if given else run_config


def gpu_count() -> int:
    import torch  # heavy: see the package docstring

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
