"""Two runs side by side: the settings that differ, then every result."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label
from tunewiz.core.bookkeeping import runs
from tunewiz.tui.record_text import DETAIL_KEYS, figures, flatten


class CompareScreen(Screen):
    """Two runs side by side: the settings that differ, then the results."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]
    DEFAULT_CSS = "CompareScreen #compare { height: 1fr; }"  # the table scrolls; the A / B legend stays
    KEY_W, VALUE_W = 34, 18
    """Cut to fit 80 columns: the setting, then A's and B's value (the full values: `tunewiz show`)."""

    def __init__(self, a: Path, b: Path) -> None:
        super().__init__()
        self.a, self.b = Path(a), Path(b)

    def compose(self) -> ComposeResult:
        yield Label(f"[b]Compare[/b]  A: {escape(self.a.name)}\n          B: {escape(self.b.name)}")
        yield DataTable(id="compare", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        rec_a, rec_b = runs.read_record(self.a), runs.read_record(self.b)
        ra, rb = rec_a.to_dict(), rec_b.to_dict()  # compared table by table, setting by setting
        table = self.query_one(DataTable)
        table.add_columns("setting / result", "A", "B")
        for section in ("model", "data", "preset", "training"):
            fa, fb = flatten(ra.get(section, {}), f"{section}."), flatten(rb.get(section, {}), f"{section}.")
            for key in sorted(set(fa) | set(fb)):
                if fa.get(key) != fb.get(key) and not key.startswith(("training.reasons", "plan.reasons", "data.sha")):
                    table.add_row(*self.cells(key, fa.get(key, "-"), fb.get(key, "-")))
        res_a, res_b = rec_a.results.to_dict(), rec_b.results.to_dict()
        fa, fb = flatten(res_a, "results."), flatten(res_b, "results.")
        for key in sorted(set(fa) | set(fb)):
            # per label / per field come next, in words; raw they are dozens of rows and a matrix
            if not key.endswith("seconds") and not any(f".{k}" in key for k in DETAIL_KEYS):
                table.add_row(*self.cells(key, fa.get(key, "-"), fb.get(key, "-")))
        for which in ("finetuned", "base"):
            ga, gb = figures(res_a.get(which) or {}), figures(res_b.get(which) or {})
            for name in dict.fromkeys([*ga, *gb]):  # A's order, then what only B has
                table.add_row(*self.cells(f"{which}: {name}", ga.get(name, "-"), gb.get(name, "-")))
        table.focus()

    def cells(self, key: str, a: object, b: object) -> tuple[str, str, str]:
        """One row, each cell cut to its width with '…' so the three fit 80 columns."""

        def cut(x: object, width: int) -> str:
            text = str(x)
            return text if len(text) <= width else text[: width - 1] + "…"

        return escape(cut(key, self.KEY_W)), escape(cut(a, self.VALUE_W)), escape(cut(b, self.VALUE_W))
