"""No function in core/ or tui/ is over 80 lines (def line to last line, docstring included): a unit a
reader can hold in mind, as the style guide's anchors (TRL's data utilities, litgpt's recipes) keep them."""

from __future__ import annotations

import ast
from pathlib import Path

LIMIT = 80
REPO = Path(__file__).resolve().parent.parent


def long_functions(source: str, limit: int = LIMIT) -> list[tuple[str, int]]:
    """(name, lines) of every function or method of `source` longer than `limit` lines.

    >>> long_functions("def f():\\n" + "    x = 1\\n" * 3, limit=3)
    [('f', 4)]
    """
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                out.append((node.name, lines))
    return out


def test_no_function_is_over_80_lines():
    found = [
        f"{path.relative_to(REPO)}: {name} ({lines} lines)"
        for root in ("core", "tui")
        for path in sorted((REPO / root).rglob("*.py"))
        for name, lines in long_functions(path.read_text(encoding="utf-8"))
    ]
    assert not found, f"split these into named steps of at most {LIMIT} lines:\n  " + "\n  ".join(found)
