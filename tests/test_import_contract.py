"""The import rules of tunewiz, read from the source with `ast` (nothing is imported or run):

* no import cycle among the tunewiz.tui modules, nor (once they are removed) among tunewiz.core's;
* tunewiz.core never imports the UI: no tunewiz.tui, no textual;
* the screens get a record's words from tunewiz.tui.record_text; only the parser uses the commands.

Every `import` and `from ... import` counts: at the top of a module, inside a function, under
`if TYPE_CHECKING:`. `from pkg import name` counts as importing `pkg.name` where that is a module,
and every import also counts as importing the packages above it (their __init__ runs first).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

PACKAGES = ("tunewiz.core", "tunewiz.tui")


def module_files(packages=PACKAGES) -> dict[str, Path]:
    """Module name -> source file, for every module of the installed packages."""
    out: dict[str, Path] = {}
    for pkg in packages:
        spec = importlib.util.find_spec(pkg)
        assert spec is not None and spec.submodule_search_locations, f"{pkg} is not installed"
        for location in spec.submodule_search_locations:
            for path in sorted(Path(location).rglob("*.py")):
                parts = list(path.relative_to(location).with_suffix("").parts)
                if parts[-1] == "__init__":
                    parts.pop()
                out[".".join([pkg, *parts])] = path
    return out


def imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name `module` imports, wherever the import statement is."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from ..core import y
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the tunewiz modules it imports (packages above an imported module included)."""
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        edges = set()
        for name in imported_names(module, path):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                target = ".".join(parts[:i])
                if target in files and target != module:
                    edges.add(target)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]], within: str) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected group of modules under `within`."""
    nodes = sorted(m for m in graph if m == within or m.startswith(within + "."))
    sub = {m: sorted(t for t in graph[m] if t in nodes) for m in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sub[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in nodes:
        if v not in index:
            visit(v)
    return [path_round(sub, group) for group in groups]


def path_round(sub: dict[str, list[str]], group: list[str]) -> list[str]:
    """The shortest way from the group's first module back to itself (breadth first, inside the group)."""
    start = group[0]
    parent: dict[str, str | None] = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sub[v]:
                if w == start:
                    path = [v]
                    while (up := parent[path[-1]]) is not None:
                        path.append(up)
                    return [*reversed(path), start]
                if w in group and w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    return group


def said(found: list[list[str]]) -> str:
    return "import cycles:\n" + "\n".join("  " + " -> ".join(c) for c in found)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(module_files())


def test_the_walker_sees_imports_at_the_top_inside_functions_and_from_packages(graph):
    """The contract tests below mean something only if the edges they check are found."""
    assert "tunewiz.tui.step_base" in graph["tunewiz.tui.hardware_step"]  # at the top
    assert "tunewiz.tui.app" in graph["tunewiz.tui.commands.screens"]  # inside run_app
    assert "tunewiz.core.bookkeeping.runs" in graph["tunewiz.tui.app"]  # from tunewiz.core import runs
    assert "tunewiz.core" in graph["tunewiz.tui.cli"]  # from tunewiz.core import __version__
    toy = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert cycles(toy, "p") == [["p.a", "p.b", "p.c", "p.a"]]


def test_no_import_cycle_among_the_tui_modules(graph):
    found = cycles(graph, "tunewiz.tui")
    assert not found, said(found)


def test_no_import_cycle_among_the_core_modules(graph):
    found = cycles(graph, "tunewiz.core")
    assert not found, said(found)


def is_ui(name: str) -> bool:
    return name.split(".")[0].startswith("textual") or name == "tunewiz.tui" or name.startswith("tunewiz.tui.")


def test_core_never_imports_the_ui():
    files = module_files(("tunewiz.core",))
    bad = {module: sorted(filter(is_ui, imported_names(module, path))) for module, path in files.items()}
    bad = {module: names for module, names in bad.items() if names}
    assert not bad, f"core modules importing the UI: {bad}"


def test_the_screens_use_record_text_and_only_the_parser_uses_the_commands(graph):
    users_of_commands = sorted(
        m for m, edges in graph.items() if "tunewiz.tui.commands" in edges and not m.startswith("tunewiz.tui.commands.")
    )
    assert users_of_commands == ["tunewiz.tui.cli"]
    assert not [m for m, edges in graph.items() if "tunewiz.tui.cli" in edges]
    assert "tunewiz.tui.record_text" in graph["tunewiz.tui.run_screen"]


@pytest.mark.parametrize("module", ["tunewiz.tui.figures", "tunewiz.tui.record_text"])
def test_the_plain_text_modules_import_no_textual(module):
    files = module_files(("tunewiz.tui",))
    assert not [n for n in imported_names(module, files[module]) if n.split(".")[0].startswith("textual")]


# -- the rooms of tunewiz.core ------------------------------------------------------------------------------

ROOMS = ("models", "planning", "data", "bookkeeping", "judging", "training", "shipping")
"""Lowest first (core/__init__.py): a room imports only the rooms before it; the shared modules
(core/*.py) import no room."""
EXCEPTIONS = {
    ("tunewiz.core.bookkeeping.notify", "tunewiz.core.judging.metrics"): "a run's end told in its headline's words",
    ("tunewiz.core.config", "tunewiz.core.models.catalog"): "a catalog name given as the model is the id it stands for",
}


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[2] if len(parts) > 3 and parts[2] in ROOMS else ""


def test_every_core_module_lives_in_a_room_or_is_shared(graph):
    shared = {m for m in graph if m.startswith("tunewiz.core.") and not room_of(m) and m.split(".")[2] not in ROOMS}
    assert shared == {f"tunewiz.core.{m}" for m in ("config", "errors", "toml", "units", "detach")}


def test_each_room_imports_only_the_rooms_below_it(graph):
    bad = []
    for module, edges in graph.items():
        if not module.startswith("tunewiz.core"):
            continue
        mine = room_of(module)
        for target in edges:
            theirs = room_of(target)
            if not theirs or theirs == mine or (module, target) in EXCEPTIONS:
                continue
            if not mine or ROOMS.index(theirs) > ROOMS.index(mine):
                bad.append(f"{module} -> {target}")
    assert not bad, "imports against the rooms' order " + ", ".join(ROOMS) + ":\n  " + "\n  ".join(sorted(bad))


def test_the_room_rule_catches_an_import_upward():
    toy = {"tunewiz.core.planning.planner": {"tunewiz.core.bookkeeping.runs"}}
    with pytest.raises(AssertionError, match="planner -> tunewiz.core.bookkeeping.runs"):
        test_each_room_imports_only_the_rooms_below_it(toy)
