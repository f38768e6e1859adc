"""Try all three presets: the sweep's ranking by the held-out result, with each run's training time, peak
memory and loss curves side by side, the best marked, and the overfitting advice where it applies.

The ranking is core.sweep's; the words are record_text's. The screen reads the runs again every two
seconds in a thread worker, so it follows a sweep whose runs are still waiting or training.
"""

from __future__ import annotations

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, Static
from tunewiz.core.bookkeeping import runs
from tunewiz.core.planning import presets
from tunewiz.core.units import fmt_duration
from tunewiz.tui.record_text import HEADLINE_WORDS, num, overfit_text, peak_text, sweep_figure
from tunewiz.tui.worker_errors import ReportsWorkerErrors

POLL_S = 2.0


def ranked_by(sweep) -> str:
    """What ranks the runs, short enough for the title at 80 columns."""
    if sweep.basis == "eval_loss":
        return "eval loss (no comparison of answers)"
    return f"{HEADLINE_WORDS.get(sweep.kind, sweep.basis)}, then eval loss"


class SweepScreen(ReportsWorkerErrors, Screen):
    """Three runs of one sweep, ranked; Enter opens the highlighted run."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("enter", "open", "Open run"),
    ]
    DEFAULT_CSS = """
    SweepScreen #sweep-table { height: auto; max-height: 6; }
    SweepScreen #sweep-plots { height: 1fr; min-height: 7; }
    SweepScreen .sweep-plot { width: 1fr; }
    SweepScreen #sweep-advice { height: auto; max-height: 6; padding: 0 1; }
    """

    def __init__(self, sweep_id: str) -> None:
        super().__init__()
        self.sweep_id = sweep_id
        self.sweep = None

    def compose(self) -> ComposeResult:
        yield Label(f"[b]Sweep[/b] {escape(self.sweep_id)}", id="sweep-title")
        yield DataTable(id="sweep-table", cursor_type="row")
        with Horizontal(id="sweep-plots"):
            for name in presets.PRESETS:
                yield self.plot(name)
        yield Static("", id="sweep-advice")
        yield Footer()

    @staticmethod
    def plot(name: str):
        from tunewiz.tui.widgets import LossPlot

        return LossPlot(id=f"plot-{name}", classes="sweep-plot", title=name)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        # Fixed widths: the table fits 80 columns and does not jump when it reloads.
        for label, width in (
            ("#", 2),
            ("preset", 12),
            ("status", 12),
            ("result", 13),
            ("eval", 6),
            ("time", 6),
            ("peak", 7),
        ):
            table.add_column(label, width=width)
        table.focus()
        self.reload()
        self.set_interval(POLL_S, self.reload)

    @work(thread=True, exclusive=True, exit_on_error=False, group="sweep")
    def reload(self) -> None:
        from tunewiz.core.training import sweep

        loaded = sweep.load(self.app.home, self.sweep_id)  # type: ignore[attr-defined]
        self.app.call_from_thread(self.show, loaded)

    def show(self, sweep) -> None:
        self.sweep = sweep
        self.query_one("#sweep-title", Label).update(f"[b]Sweep[/b] {escape(sweep.id)} - ranked by {ranked_by(sweep)}")
        table = self.query_one(DataTable)
        cursor = table.cursor_row
        table.clear()
        for e in sweep.entries:
            colour = runs.COLOURS.get(e.status, "") if e.status in ("completed", "failed", "crashed", "running") else ""
            label = f"[{colour}]{escape(e.label)}[/{colour}]" if colour else escape(e.label)
            table.add_row(
                f"[b]*{e.rank}[/b]" if e.best else f" {e.rank}",
                f"[b]{e.preset}[/b]" if e.best else e.preset,
                label,
                sweep_figure(sweep, e),
                num(e.eval_loss)[:6],
                fmt_duration(e.time_s) if e.time_s else "-",
                peak_text(e.peak_mb),
                key=e.run_id,
            )
        if sweep.entries:
            table.move_cursor(row=min(cursor, len(sweep.entries) - 1))
        for e in sweep.entries:
            for node in self.query(f"#plot-{e.preset}"):
                node.plot_title = f"{e.preset}{' (best)' if e.best else ''}"
                node.show(e.train, e.evals)
        lines = [escape(overfit_text(e.preset, e.overfit)) for e in sweep.entries if e.overfit is not None]
        best = sweep.best
        if best is not None:
            lines.insert(0, f"[b]* best: {escape(best.preset)}[/b] ({escape(best.run_id)}); Enter opens a run")
        elif not sweep.done:
            lines.insert(0, "The runs train one after another; this screen follows them.")
        self.query_one("#sweep-advice", Static).update("\n".join(lines))

    def current(self):
        table = self.query_one(DataTable)
        if self.sweep is None or table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((e for e in self.sweep.entries if e.run_id == key), None)

    def action_open(self) -> None:
        from tunewiz.tui.run_screen import RunScreen

        e = self.current()
        if e is not None:
            self.app.push_screen(RunScreen(e.path))

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def worker_failed(self, group: str, text: str) -> None:
        if group == "sweep":
            self.query_one("#sweep-title", Label).update(
                f"[b]Sweep[/b] {escape(self.sweep_id)} - [red]cannot read its runs[/red]"
            )
