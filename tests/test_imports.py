"""Dependencies between c2fnas modules are visible at the top of each module.

import-linter (the README's test command) checks the layers through every import, wherever it
is; this test keeps the imports hidden inside functions few: one per command-line command that
needs torch, so that ``c2fnas --help`` starts without it (``tests/cli/test_commands.py`` checks
that).
"""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src" / "c2fnas"
MOST_FUNCTION_LOCAL_IMPORTS = 10


def _imports_c2fnas(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "c2fnas"
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == "c2fnas" for alias in node.names)
    return False


def function_local_imports(source: str) -> list[int]:
    """Line numbers of the imports of c2fnas modules inside function bodies of ``source``."""
    lines: set[int] = set()
    for function in ast.walk(ast.parse(source)):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            lines.update(node.lineno for node in ast.walk(function) if _imports_c2fnas(node))
    return sorted(lines)


def test_the_counter_finds_imports_in_functions_and_not_at_the_top():
    source = (
        "import c2fnas.space\n"
        "from c2fnas.nn import C2FNet\n"
        "def f():\n"
        "    import torch\n"
        "    from c2fnas.data import io\n"
        "    def g():\n"
        "        from . import sibling\n"
        "class A:\n"
        "    def m(self):\n"
        "        import c2fnas.files.atomic\n"
    )
    assert function_local_imports(source) == [5, 7, 10]


def test_function_local_imports_of_c2fnas_modules_stay_few():
    assert (SOURCE / "cli" / "__init__.py").is_file(), SOURCE
    found = {
        f"{path.relative_to(SOURCE)}:{line}"
        for path in sorted(SOURCE.rglob("*.py"))
        for line in function_local_imports(path.read_text())
    }
    assert len(found) <= MOST_FUNCTION_LOCAL_IMPORTS, sorted(found)
