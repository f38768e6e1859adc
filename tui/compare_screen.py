"""Two runs side by side: the settings that differ, then every result."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label
from tunewiz.core import runs
from tunewiz.tui.record_text import flatten


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
        fa, fb = flatten(ra.get("results", {}), "results."), flatten(rb.get("results", {}), "results.")
        for key in sorted(set(fa) | set(fb)):
            if not key.endswith("seconds"):
                table.add_row(key, str(fa.get(key, "-"))[:28], str(fb.get(key, "-"))[:28])
        table.focus()
