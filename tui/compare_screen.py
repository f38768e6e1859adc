"""Two runs side by side: the settings that differ, then every result."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label
from tunewiz.core import runs
from tunewiz.tui.record_text import DETAIL_KEYS, figures, flatten


class CompareScreen(Screen):
    """Two runs side by side: the settings that differ, then the results."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, a: Path, b: Path) -> None:
        super().__init__()
        self.a, self.b = Path(a), Path(b)

    def compose(self) -> ComposeResult:
        yield Label(f"[b]Compare[/b] {escape(self.a.name)} vs {escape(self.b.name)}")
        yield DataTable(id="compare", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        ra, rb = runs.read_record(self.a), runs.read_record(self.b)
        table = self.query_one(DataTable)
        table.add_columns("setting / result", "A", "B")
        for section in ("model", "data", "preset", "training"):
            fa, fb = flatten(ra.get(section, {}), f"{section}."), flatten(rb.get(section, {}), f"{section}.")
            for key in sorted(set(fa) | set(fb)):
                if fa.get(key) != fb.get(key) and not key.startswith(("training.reasons", "plan.reasons", "data.sha")):
                    table.add_row(key, str(fa.get(key, "-"))[:28], str(fb.get(key, "-"))[:28])
        res_a, res_b = ra.get("results", {}), rb.get("results", {})
        fa, fb = flatten(res_a, "results."), flatten(res_b, "results.")
        for key in sorted(set(fa) | set(fb)):
            # per label / per field come next, in words; raw they are dozens of rows and a matrix
            if not key.endswith("seconds") and not any(f".{k}" in key for k in DETAIL_KEYS):
                table.add_row(key, str(fa.get(key, "-"))[:28], str(fb.get(key, "-"))[:28])
        for which in ("finetuned", "base"):
            ga, gb = figures(res_a.get(which) or {}), figures(res_b.get(which) or {})
            for name in dict.fromkeys([*ga, *gb]):  # A's order, then what only B has
                table.add_row(Text(f"{which}: {name}"), ga.get(name, "-"), gb.get(name, "-"))
        table.focus()
