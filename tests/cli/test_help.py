"""Every command's ``--help`` names its values in words (PATH, N, DURATION), not Python types."""

import typer.main
from typer.testing import CliRunner

from c2fnas.cli import app

runner = CliRunner()


def _commands(group, path=()):
    """Every command path of a click group, the group itself first."""
    yield path
    for name, command in getattr(group, "commands", {}).items():
        yield from _commands(command, (*path, name))


def test_every_help_names_values_without_python_type_names():
    """Typer writes a value's Python type (``<bool>``, ``<list[int]>``) unless given a metavar."""
    paths = list(_commands(typer.main.get_command(app)))
    assert ("run",) in paths and len(paths) > 10
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        for python in ("<bool>", "<int>", "<str>", "<float>", "<class", "Optional[", "list[",
                       "int]", "str]"):  # fmt: skip
            assert python not in result.output, (path, python, result.output)
    shown = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output
    assert "--time-budget" in shown and "DURATION" in shown and "DATASET" in shown
