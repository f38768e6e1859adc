"""Widgets and modals more than one screen uses: the loss plot (train and run screens) and the
yes / no confirmation (history's delete and re-run). Each carries its own DEFAULT_CSS where it needs layout.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static
from textual_plotext import PlotextPlot


class LossPlot(PlotextPlot):
    """Train and held-out loss against the step, with axes (and a title, when given one)."""

    def __init__(self, *args, title: str = "", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.plot_title = title
        self.train: list[tuple[int, float]] = []
        self.evals: list[tuple[int, float]] = []

    def on_mount(self) -> None:
        self.draw()

    def show(self, train: list[tuple[int, float]], evals: list[tuple[int, float]]) -> None:
        """Replace both curves ((step, loss) each) and draw again."""
        self.train, self.evals = list(train), list(evals)
        self.draw()

    def add(self, events: list[dict]) -> None:
        for e in events:
            if e.get("event") == "step" and e.get("loss") is not None:
                self.train.append((e["step"], e["loss"]))
            elif e.get("event") == "eval" and e.get("eval_loss") is not None:
                self.evals.append((e["step"], e["eval_loss"]))
        self.draw()

    def draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.theme("pro")
        plt.xlabel("step")
        if self.plot_title:
            plt.title(self.plot_title)
        if self.train:
            plt.plot([s for s, _ in self.train], [v for _, v in self.train], label="train", marker="braille")
        if self.evals:
            plt.scatter([s for s, _ in self.evals], [v for _, v in self.evals], label="held-out", marker="o")
        self.refresh()


class ConfirmScreen(ModalScreen[bool]):
    """A question answered with y (yes) or n / Esc (no). Enter presses the focused button, and No has the
    focus: a slip of the hand never deletes a run or starts a long training."""

    AUTO_FOCUS = "#no"
    BINDINGS = [Binding("y", "yes", "Yes"), Binding("n,escape", "no", "No")]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 60; height: auto; border: thick $error; background: $surface; padding: 1 2; }
    ConfirmScreen.-start > Vertical { border: thick $primary; }
    ConfirmScreen Horizontal { height: auto; margin-top: 1; }
    ConfirmScreen Button { margin-right: 2; }
    """

    def __init__(self, question: str, yes: str = "Yes", start: bool = False) -> None:
        """`yes` names what y does ("Re-run"); `start` is for a question that starts work rather than
        destroys it (a calmer frame and button)."""
        super().__init__(classes="-start" if start else "")
        self.question, self.yes, self.starts_work = question, yes, start

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question)
            with Horizontal():
                yield Button(f"{self.yes} (y)", id="yes", variant="primary" if self.starts_work else "error")
                yield Button("No (n)", id="no")

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")
