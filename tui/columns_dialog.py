"""The data step's column dialog: for a table (CSV, Parquet, JSONL with keys of its own), which column
is the prompt, which the answer, and the instruction and system prompt for every row.

It opens with tunewiz's proposal (core.data.columns.propose) and the focus on "Use these columns", so
one Enter accepts it; Tab reaches each role's picker to change it. It returns the Mapping chosen, the
string "text" for "train the text column as plain text", or None (Esc: nothing changes).
"""

from __future__ import annotations

from rich.markup import escape
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static
from tunewiz.core.data.columns import Column, Mapping

PLAIN_TEXT = "text"
"""What the dialog returns for "train the 'text' column as plain text"."""


class ColumnsScreen(ModalScreen["Mapping | str | None"]):
    AUTO_FOCUS = "#use"
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+t", "plain", "Plain text", show=False)]
    DEFAULT_CSS = """
    ColumnsScreen { align: center middle; }
    ColumnsScreen > Vertical { width: 78; height: auto; max-height: 24; border: thick $primary;
                               background: $surface; padding: 0 1; }
    ColumnsScreen #columns-about { height: auto; max-height: 7; color: $text-muted; }
    ColumnsScreen .role { height: 3; }
    ColumnsScreen .role Label { width: 14; padding-top: 1; }
    ColumnsScreen .role Select { width: 1fr; }
    ColumnsScreen .role Input { width: 1fr; }
    ColumnsScreen #columns-buttons { height: 3; }
    ColumnsScreen Button { margin-right: 1; min-width: 10; }
    """

    def __init__(self, columns: list[Column], mapping: Mapping, can_be_text: bool) -> None:
        super().__init__()
        self.columns, self.mapping, self.can_be_text = columns, mapping, can_be_text

    def compose(self) -> ComposeResult:
        names = [(c.name, c.name) for c in self.columns]
        about = "\n".join(f"  {escape(c.name[:18]):<18} {escape(c.words())}" for c in self.columns[:5])
        more = f"\n  ... and {len(self.columns) - 5} more columns" if len(self.columns) > 5 else ""
        with Vertical():
            yield Static(
                "[b]A table: which column is which?[/b] The model learns to write the answer from the prompt.\n"
                + about
                + more,
                id="columns-about",
            )
            with Horizontal(classes="role"):
                yield Label("Prompt")
                yield Select(names, value=self.mapping.prompt or Select.BLANK, id="prompt", prompt="column")
            with Horizontal(classes="role"):
                yield Label("Answer")
                yield Select(names, value=self.mapping.answer or Select.BLANK, id="answer", prompt="column")
            with Horizontal(classes="role"):
                yield Label("Instruction")
                yield Input(self.mapping.instruction, placeholder="optional: put before every prompt", id="instruction")
            with Horizontal(classes="role"):
                yield Label("System")
                yield Input(self.mapping.system, placeholder="optional: a system prompt for every row", id="system")
            with Horizontal(id="columns-buttons"):
                yield Button("Use these columns (Enter)", id="use", variant="primary")
                if self.can_be_text:
                    yield Button("Plain text (^t)", id="plain")
                yield Button("Cancel (Esc)", id="cancel")
            yield Static("", id="columns-problem")

    @property
    def focus_chain(self):
        """Tab from "Use these columns" goes to the roles first (what a user changes), then the other
        buttons: one Tab never lands on "Plain text", where Enter would drop the mapping."""
        chain = super().focus_chain
        try:
            use = self.query_one("#use")
        except Exception:  # noqa: BLE001 - asked before compose
            return chain
        if use in chain:
            chain.remove(use)
            chain.insert(0, use)
        return chain

    def chosen(self) -> Mapping:
        def value(widget_id: str) -> str:
            v = self.query_one(f"#{widget_id}", Select).value
            return v if isinstance(v, str) else ""

        return Mapping(
            value("prompt"),
            value("answer"),
            self.query_one("#instruction", Input).value.strip(),
            self.query_one("#system", Input).value.strip(),
        )

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_plain(self) -> None:
        if self.can_be_text:
            self.dismiss(PLAIN_TEXT)

    def action_use(self) -> None:
        m = self.chosen()
        problem = ""
        if not m.prompt or not m.answer:
            problem = "choose a prompt column and an answer column (Tab to each, Enter to open it)"
        elif m.prompt == m.answer:
            problem = "the prompt and the answer are the same column: choose two different columns"
        if problem:
            self.query_one("#columns-problem", Static).update(f"[red]{escape(problem)}[/red]")
            return
        self.dismiss(m)

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self.action_use()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        {"use": self.action_use, "plain": self.action_plain, "cancel": self.action_cancel}[event.button.id or ""]()
