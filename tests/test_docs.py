"""The commands in README.md and docs/*.md exist: every `c2fnas` command line in a code block or
in inline code names a real subcommand and only options it has, as the CLI itself parses them.

The command tree is read from the typer app (``typer.main.get_command``), so a renamed or removed
option fails here rather than in a user's terminal.
"""

import re
import shlex
from pathlib import Path

import pytest
import typer

from c2fnas.cli import app

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
INLINE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)*)`")  # inline code may wrap across lines
SEPARATORS = {"&&", "||", "|", ";"}
OPTION = re.compile(r"^--?[A-Za-z][\w-]*")
ROOT = typer.main.get_command(app)  # the click command tree the CLI parses with


def _options(command) -> dict[str, bool]:
    """Every option spelling of ``command`` -> whether it takes a value."""
    found = {"--help": False}
    for param in command.params:
        spellings = [*param.opts, *getattr(param, "secondary_opts", [])]
        for spelling in spellings:
            if spelling.startswith("-"):
                found[spelling] = not (param.is_flag or param.count)
    return found


def command_lines(text: str) -> list[str]:
    """The code of fenced blocks (continuation lines joined) and of inline code spans."""
    lines = []
    for block in FENCE.findall(text):
        lines += block.replace("\\\n", " ").splitlines()
    prose = FENCE.sub("", text)
    lines += [" ".join(span.split()) for span in INLINE.findall(prose)]
    return lines


def _tokens(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:  # an unmatched quote in prose: plain words are enough here
        return line.split("#")[0].split()


def invocations(line: str) -> list[list[str]]:
    """The arguments after each ``c2fnas`` (or ``-m c2fnas``) in ``line``, one list per
    command of a ``&&`` chain; placeholder brackets (``[--arch JSON]``) are dropped."""
    found, current, depth = [], None, 0
    for token in _tokens(line):
        word = token.strip("[]()")
        depth += token.count("[") - token.count("]")
        if word in SEPARATORS and not (word == "|" and depth > 0):  # [A | B]: alternatives
            current = None
        elif word in SEPARATORS:
            continue
        elif current is not None:
            current.append(word)
        elif word == "c2fnas" or word.endswith("/c2fnas"):
            current = []
            found.append(current)
    return found


def problems(arguments: list[str]) -> list[str]:
    """What does not exist in one command line's ``arguments`` (empty when all is well)."""
    command, path, rest = ROOT, ["c2fnas"], list(arguments)
    while rest:
        word = rest[0]
        if OPTION.match(word):  # an option of the group (e.g. c2fnas --threads 2 run ...)
            known = _options(command)
            name = word.split("=")[0]
            if name not in known:
                return [f"{' '.join(path)}: no option {name}"]
            rest = rest[2 if known[name] and "=" not in word else 1 :]
            continue
        subcommands = getattr(command, "commands", None)
        if not subcommands:
            break
        if not re.fullmatch(r"[a-z][a-z-]*", word):  # a placeholder such as RUN_DIR, or prose
            return []
        if word not in subcommands:
            return [f"{' '.join(path)}: no subcommand {word!r}"]
        command, path, rest = subcommands[word], [*path, word], rest[1:]
    known = _options(command)
    return [
        f"{' '.join(path)}: no option {word.split('=')[0]}"
        for word in rest
        if OPTION.match(word) and word.split("=")[0] not in known
    ]


def _cases() -> list[tuple[str, str]]:
    cases = []
    for path in DOCS:
        for line in command_lines(path.read_text()):
            for arguments in invocations(line):
                cases.append((path.relative_to(REPO).as_posix(), " ".join(arguments)))
    return cases


CASES = _cases()


def test_the_docs_name_commands():
    assert len(CASES) > 40  # the extraction finds the docs' commands at all
    named = {(doc, arguments.split()[0]) for doc, arguments in CASES if arguments}
    assert ("README.md", "run") in named and ("docs/search.md", "search") in named


@pytest.mark.parametrize(("doc", "arguments"), CASES, ids=[f"{d}: {a}"[:80] for d, a in CASES])
def test_a_documented_command_exists(doc, arguments):
    assert not problems(shlex.split(arguments)), f"{doc}: c2fnas {arguments}"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("c2fnas run DATA --run RUN --preset cpu", []),
        ("c2fnas --threads 2 search coarse RUN --workers 2", []),
        ("c2fnas run DATA --run RUN --no-such 3", ["c2fnas run: no option --no-such"]),
        ("c2fnas search sideways RUN", ["c2fnas search: no subcommand 'sideways'"]),
        ("torchrun -m c2fnas train RUN --fold 0 --bogus", ["c2fnas train: no option --bogus"]),
        ("c2fnas plan D [--time-budget 45m | --gpus N] [--odd]", ["c2fnas plan: no option --odd"]),
        ("c2fnas data check D && c2fnas predict -m M --odd", ["c2fnas predict: no option --odd"]),
    ],
)  # fmt: skip
def test_a_wrong_option_or_subcommand_is_found(line, expected):
    assert [p for arguments in invocations(line) for p in problems(arguments)] == expected
