"""What every wizard step shares: the StepScreen frame (title, explanation, body, Back / Next), the
F1 help modal, and each step's one-paragraph introduction and longer help.

Every step reads and writes the app's RunConfig (the wizard's answers live in that plain
dataclass, not in widgets). Slow work (torch import, tokenizer, data rendering) runs in thread
workers that post messages back; a worker that fails is reported by ReportsWorkerErrors.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Label, Static
from tunewiz.tui.worker_errors import ReportsWorkerErrors

if TYPE_CHECKING:
    from tunewiz.core.config import RunConfig
    from tunewiz.core.planning.hardware import Hardware

# One short paragraph on the screen (fits 80x24); the longer help is behind F1.
INTRO = {
    "Hardware": "What this machine can train. The GPU's memory decides which models and methods fit; "
    "without a GPU only very small models train in reasonable time.",
    "Model": "Pick the model to fine-tune. Fine-tuning changes behaviour (format, tone, a narrow task) more "
    "than it adds facts. LoRA trains small adapters; QLoRA also stores the model in 4 bits.",
    "Data": "Your examples, exactly as the model will see them. Highlighted tokens are the ones it learns to "
    "write; 10% are held out to compare with the base model.",
    "Preset": "How hard to train. Balanced suits most datasets; left/right to choose, Ctrl+A to change any "
    "setting. Watch the held-out loss: rising while training loss falls means overfitting.",
    "Review": "The record that will be written (run.toml, also a config to repeat the run). Training runs "
    "in its own process: detach or lose the connection and it carries on.",
}

HELP = {
    "Hardware": (
        "tunewiz looks at your GPU, CPU, memory and disk first, because they decide which models and "
        "methods fit. Rules of thumb: 8 GB of GPU memory runs QLoRA (4-bit) on models up to about 7B; "
        "16 GB runs 7B comfortably; 24 GB runs 13B with LoRA. Without a GPU only very small models, such "
        "as the bundled SmolLM2-135M, train in reasonable time."
    ),
    "Model": (
        "Fine-tuning changes behaviour - style, tone, a fixed output format, a narrow task - more "
        "reliably than it adds facts; to answer from documents, retrieval (RAG) is usually better, and "
        "for a simple format change try prompting first. LoRA trains small adapter matrices beside the "
        "frozen model (well under 1% of the parameters); QLoRA also stores the base model in 4 bits, "
        "about 4x less memory for a small quality cost. The list ranks the catalog for this machine: "
        "predicted peak memory for the balanced preset, a bar of the memory available, and whether it fits "
        "with 12% to spare; `tunewiz fit --model NAME` explains one estimate, `tunewiz probe` measures it."
    ),
    "Data": (
        "Quality beats quantity: below ~200 examples a model struggles to learn a pattern reliably; "
        "500-2,000 good examples is the sweet spot. 10% is held out to compare the fine-tuned model with "
        "its base on examples it never saw. The preview shows each example exactly as the model sees it, "
        "after its chat template; highlighted tokens are the ones it is trained to write.\n\n"
        "The list under the summary is what the checker found: E errors (they block Next: bad JSON, unknown "
        "roles, a conversation the template rejects), W warnings (duplicates, leakage into the held-out "
        "rows, examples cut by max_seq_len) and I notes. Tab from the example to the list and press Enter to "
        "see the row (with errors the list has the focus already). Ctrl+B browses for the file, Esc closes it. "
        "`tunewiz lint FILE` prints the same from the command line."
    ),
    "Preset": (
        "The presets trade speed of learning against the risk of overdoing it. LoRA rank is the adapter's "
        "capacity: 8-16 suits most tasks, 64 only hard or stylistic targets. Watch the loss: it should "
        "fall steadily; if the held-out loss rises while the training loss falls, the model is "
        "overfitting - use fewer epochs (3-5 is usually enough for small sets).\n\n"
        "Not sure? Ctrl+T queues all three on the same data and held-out rows, one after another, and "
        "opens their ranking by the held-out result (`tunewiz sweep --data FILE` does the same)."
    ),
    "Review": (
        "This is the run record that will be written (run.toml). It is also a config: "
        "`tunewiz train --config run.toml` repeats the run. Training runs in its own process: you can "
        "detach, close the terminal or lose the SSH connection, and it carries on."
    ),
}


class Wizard(Protocol):
    """What the steps use of the app (tunewiz.tui.app.TunewizApp), without importing it."""

    STEPS: list[type]
    home: Path
    cfg: RunConfig
    hardware: Hardware | None
    data_summary: dict
    data_shape: Any

    def next_step(self, current: type) -> None: ...


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 70; max-width: 95%; height: auto; max-height: 90%;
        border: thick $accent; background: $surface; padding: 1 2; }
    """

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text, self.text = title, text

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"[b]{escape(self.title_text)}[/b]")
            yield Static(self.text)
            yield Label("[dim]Esc closes this help[/dim]")


class StepScreen(ReportsWorkerErrors, Screen):
    """A wizard step: title, one-paragraph explanation, body, Back / Next."""

    STEP = ""
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+n", "next", "Next"),
        Binding("f1", "help", "Help"),
        Binding("ctrl+q", "app.quit", "Quit"),
    ]

    @property
    def wiz(self) -> Wizard:
        return cast(Wizard, self.app)

    def compose(self) -> ComposeResult:
        n = self.wiz.STEPS.index(type(self)) + 1 if type(self) in self.wiz.STEPS else 0
        yield Label(f"[b]Step {n} of {len(self.wiz.STEPS)}: {self.STEP}[/b]  [dim](F1 help)[/dim]", id="step-title")
        yield Static(INTRO.get(self.STEP, ""), id="explain")
        with Vertical(id="body"):
            yield from self.body()
        with Horizontal(id="nav"):
            yield Button("Back", id="back")
            yield Label("", id="nav-msg")
            yield Button("Next", id="next", variant="primary")
        yield Footer()

    def body(self) -> ComposeResult:
        yield from ()

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self.STEP, HELP.get(self.STEP, "")))

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()

    def can_continue(self) -> str | None:
        """None when Next may proceed, else the reason shown to the user."""
        return None

    def action_next(self) -> None:
        reason = self.can_continue()
        if reason:
            self.refuse(reason)
            return
        self.wiz.next_step(type(self))

    refusal = ""
    """Why Next (or another action) was refused, while the bar between the buttons says so."""

    def refuse(self, reason: str) -> None:
        """Say why Next cannot go on, between the buttons: the one place for it (no toast over the bar)."""
        self.say(reason)
        self.refusal = reason

    def update_refusal(self, reason: str | None) -> None:
        """After a change on the step: a refusal on the bar follows it (gone once the reason is), so it
        never says what is no longer true. Nothing happens while the bar says something else."""
        if not self.refusal or reason == self.refusal:
            return
        if reason:
            self.refuse(reason)
        else:
            self.say("", style="")

    def say(self, text: str, style: str = "red") -> None:
        """A short message between the buttons, where Next says why it cannot go on ("" clears it); at
        most NAV_LINES lines there, a longer one cut with an ellipsis."""
        self.refusal = ""
        label = self.query_one("#nav-msg", Label)
        text = clamp(text, (label.content_size.width or NAV_WIDTH) - 2)  # centred: a space by each button
        label.update(f"[{style}]{escape(text)}[/{style}]" if style else escape(text))

    @on(Button.Pressed, "#next")
    def _next(self) -> None:
        self.action_next()

    @on(Button.Pressed, "#back")
    def _back(self) -> None:
        self.action_back()


NAV_LINES = 3
NAV_WIDTH = 44
"""The message between the Back and Next buttons: its lines, and its width at 80 columns."""


def clamp(text: str, width: int, lines: int = NAV_LINES) -> str:
    """`text` wrapped to `width`, at most `lines` lines, the last one cut with an ellipsis if needed.

    >>> print(clamp("the data is not loaded yet, or has problems to fix", 20))
    the data is not
    loaded yet, or has
    problems to fix
    >>> print(clamp("one two three four five six seven eight nine", 10, lines=2))
    one two
    three fou…
    """
    wrapped = textwrap.wrap(text, max(width, 8))
    if len(wrapped) <= lines:
        return "\n".join(wrapped)
    last = " ".join([wrapped[lines - 1], *wrapped[lines:]])[: max(width, 8) - 1] + "…"
    return "\n".join([*wrapped[: lines - 1], last])
