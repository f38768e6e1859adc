"""One finished or running run: its record in words (record_text), its loss curve, and the way to its
evaluation or to following it live.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Label, Static
from tunewiz.core.bookkeeping import runs
from tunewiz.core.bookkeeping.events import read_events
from tunewiz.tui.eval_screen import EvalScreen
from tunewiz.tui.record_text import record_summary_lines
from tunewiz.tui.train_screen import TrainScreen
from tunewiz.tui.widgets import LossPlot


class RunScreen(Screen):
    """One run: its record, its loss curve and its evaluation.

    At 80 columns the record (whose lines fit 78) takes the whole width and scrolls, over the loss
    curve; a terminal wide enough for both puts them side by side (the `-wide` class, app.tcss).
    """

    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (130, "-wide")]
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("e", "evaluate", "Evaluation"),
        Binding("a", "attach", "Follow"),
    ]

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)

    def compose(self) -> ComposeResult:
        yield Label(f"[b]Run[/b] {escape(self.run_dir.name)}")
        with Container(id="run-main"):
            with VerticalScroll(id="run-record"):
                yield Static("", id="record")
            yield LossPlot(id="run-plot")
        yield Footer()

    def on_mount(self) -> None:
        rec = runs.observe(self.run_dir)
        self.status = rec.run.status
        self.query_one("#record", Static).update(escape("\n".join(record_summary_lines(rec))))
        self.query_one("#run-plot", LossPlot).add(read_events(self.run_dir)[0])
        self.query_one("#run-record").focus()  # the arrow keys and page keys scroll the record

    def action_evaluate(self) -> None:
        if (self.run_dir / "eval" / "predictions.jsonl").is_file():
            self.app.push_screen(EvalScreen(self.run_dir))
        else:
            self.notify("This run has no evaluation.", severity="warning")

    def action_attach(self) -> None:
        self.app.push_screen(TrainScreen(self.run_dir))
