"""Chatting with a finished run's model: type a question, read the answer as it is written, and put
the same question to the base model (the adapter off) with one key.

The model loads in a thread worker (seconds: "loading the model..." meanwhile, and a question typed
then is sent once it is ready); each answer streams from another thread worker, one ChatPiece
message per piece of text (core.chat.ChatSession does the generating). Nothing here touches a
widget from a thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Static
from tunewiz.tui.messages import ChatDone, ChatPiece, ChatReady
from tunewiz.tui.worker_errors import ReportsWorkerErrors

# Who said it: the label at the start of a turn and its colour (256 colours read well over SSH).
SPEAKERS = {
    "system": ("System", "dim"),
    "user": ("You", "bold cyan"),
    "tuned": ("Fine-tuned", "bold green"),
    "base": ("Base", "bold yellow"),
    "note": ("", "dim italic"),
}


@dataclass
class Turn:
    """One entry of the log as the user reads it (the session keeps what the model sees)."""

    who: str  # a SPEAKERS key
    text: str = ""
    after: str = ""  # dim words after an answer: its tokens and time, or why it ended

    def render(self) -> Text:
        label, style = SPEAKERS[self.who]
        out = Text()
        if label:
            out.append(f"{label}: ", style=style)
        out.append(self.text, style=style if self.who in ("system", "note") else "")
        if self.after:
            out.append(f"  ({self.after})", style="dim")
        return out

    def plain(self) -> str:
        return str(self.render())


class ChatScreen(ReportsWorkerErrors, Screen):
    """A multi-turn chat with the run's fine-tuned model, or its base with the adapter off (ctrl+b)."""

    BINDINGS = [
        Binding("escape", "leave", "Back / stop"),
        Binding("ctrl+b", "toggle_adapter", "Base/tuned"),
        Binding("ctrl+r", "ask_other", "Ask other"),
        Binding("ctrl+l", "clear", "Clear"),
        Binding("pageup", "scroll_log(-1)", "Scroll up", show=False),
        Binding("pagedown", "scroll_log(1)", "Scroll down", show=False),
    ]
    DEFAULT_CSS = """
    ChatScreen #chat-title { height: 1; padding: 0 1; background: $primary-background; width: 100%; }
    ChatScreen #chat-status { height: 1; padding: 0 1; }
    ChatScreen #chat-log { height: 1fr; padding: 0 1; border-top: solid $panel; }
    ChatScreen .turn { margin-bottom: 1; }
    ChatScreen #chat-input { height: 3; }
    """

    def __init__(self, run_dir: Path, options=None) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.options = options  # core.chat.ChatOptions; None: the defaults (greedy, 256 tokens)
        self.session = None
        self.adapter = True  # the next question goes to the fine-tuned model
        self.busy = False  # an answer is being written
        self.pending: str | None = None  # asked while the model was loading
        self.turns: list[Turn] = []
        self.widgets: list[Static] = []
        self.answering: Turn | None = None
        self.last_adapter = True  # which model answered the last question
        self.dropped = 0

    def compose(self) -> ComposeResult:
        yield Label(f"[b]Chat[/b] {escape(self.run_dir.name)}", id="chat-title")
        yield Static("", id="chat-status")
        yield VerticalScroll(id="chat-log")
        yield Input(placeholder=self.placeholder(), id="chat-input")
        yield Footer()

    def on_mount(self) -> None:
        self.say("[yellow]loading the model...[/yellow] (seconds; you can type meanwhile)")
        self.add(
            Turn(
                "note",
                "Enter sends. ^b: ask the base model (adapter off) or the fine-tuned one; ^r: the last "
                "question again with the other model; ^l: clear; Esc: stop an answer, or back.",
            )
        )
        self.query_one(Input).focus()
        self.load()

    # -- the model ----------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="chat-load")
    def load(self) -> None:
        """torch, transformers and the weights: seconds, never on the event loop."""
        from tunewiz.core.judging.chat import ChatSession

        self.post_message(ChatReady(ChatSession.for_run(self.run_dir, self.options)))

    def on_chat_ready(self, msg: ChatReady) -> None:
        self.session = msg.session
        if self.session.system:
            self.turns.insert(0, Turn("system", self.session.system))
            self.widgets.insert(0, Static(self.turns[0].render(), classes="turn"))
            self.query_one("#chat-log", VerticalScroll).mount(self.widgets[0], before=0)
        if self.session.note:
            self.add(Turn("note", self.session.note))
        self.show_mode()
        if self.pending:
            text, self.pending = self.pending, None
            self.ask(text, self.adapter, shown=True)

    # -- asking -------------------------------------------------------------------------

    @on(Input.Submitted, "#chat-input")
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self.busy or self.pending:
            self.notify("Still answering: wait for it, or Esc to stop it.", severity="warning")
            return
        event.input.value = ""
        if self.session is None:
            self.pending = text
            self.add(Turn("user", text))
            self.say("[yellow]loading the model...[/yellow] your question goes as soon as it is ready")
            return
        self.ask(text, self.adapter)

    def ask(self, text: str, adapter: bool, shown: bool = False, again: bool = False) -> None:
        """Show the question (unless it is already) and an empty answer, then stream the answer into it."""
        if not shown:
            self.add(Turn("user", text))
        self.answering = self.add(Turn("tuned" if adapter else "base", "", "thinking..."))
        self.busy = True
        self.last_adapter = adapter
        self.say(f"answering with the {self.model_name(adapter)} model... (Esc stops)")
        self.generate(text, adapter, again)

    @work(thread=True, exclusive=True, exit_on_error=False, group="chat")
    def generate(self, text: str, adapter: bool, again: bool) -> None:
        session = self.session
        pieces = session.again(adapter) if again else session.reply(text, adapter)
        for piece in pieces:
            self.post_message(ChatPiece(piece))
        self.post_message(ChatDone(session.last.describe(session.options.max_new_tokens)))

    def on_chat_piece(self, msg: ChatPiece) -> None:
        turn = self.answering
        if turn is None:
            return
        turn.text += msg.text
        turn.after = ""
        self.refresh_turn(turn)

    def on_chat_done(self, msg: ChatDone) -> None:
        turn, self.answering, self.busy = self.answering, None, False
        if turn is not None:
            turn.text = turn.text.strip()
            turn.after = ("a blank answer: " if not turn.text else "") + msg.stats
            self.refresh_turn(turn)
        if self.session is not None and self.session.dropped > self.dropped:
            self.dropped = self.session.dropped
            self.add(Turn("note", "the oldest exchanges were dropped to fit the model's context"))
        self.show_mode()

    def worker_failed(self, group: str, text: str) -> None:
        if group == "chat-load":
            self.say(f"[red]cannot chat: {escape(text[:200])}[/red]")
            if self.pending:
                self.pending = None
                self.add(Turn("note", "not sent: the model did not load"))
        elif group == "chat":
            turn, self.answering, self.busy = self.answering, None, False
            if turn is not None:
                turn.after = f"failed: {text[:200]}"
                self.refresh_turn(turn)
            self.show_mode()

    # -- keys ---------------------------------------------------------------------------

    def action_toggle_adapter(self) -> None:
        self.adapter = not self.adapter
        self.query_one(Input).placeholder = self.placeholder()
        if not self.busy:
            self.show_mode()
        self.notify(f"Next questions go to the {self.model_name(self.adapter)} model.", timeout=3)

    def action_ask_other(self) -> None:
        if self.busy or self.pending:
            self.notify("Still answering: wait for it, or Esc to stop it.", severity="warning")
            return
        if self.session is None or not self.session.last_question:
            self.notify("Ask a question first; ctrl+r then asks it again with the other model.", severity="warning")
            return
        other = not self.last_adapter
        self.ask(self.session.last_question, other, shown=True, again=True)

    def action_clear(self) -> None:
        if self.busy or self.pending:
            self.notify("Still answering: wait for it, or Esc to stop it.", severity="warning")
            return
        if self.session is not None:
            self.session.reset()
        self.dropped = 0
        keep = 1 if self.turns and self.turns[0].who == "system" else 0
        for widget in self.widgets[keep:]:
            widget.remove()
        del self.turns[keep:], self.widgets[keep:]
        self.show_mode()

    def action_leave(self) -> None:
        if self.busy and self.session is not None:
            self.session.stop()  # the answer ends at the next token; what it wrote stays
            return
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
        else:  # opened by `tunewiz chat RUN`: nothing to go back to
            self.app.exit()

    def action_scroll_log(self, direction: int) -> None:
        log = self.query_one("#chat-log", VerticalScroll)
        log.scroll_page_down() if direction > 0 else log.scroll_page_up()

    def on_unmount(self) -> None:
        if self.busy and self.session is not None:
            self.session.stop()

    # -- showing ------------------------------------------------------------------------

    def model_name(self, adapter: bool) -> str:
        return "fine-tuned" if adapter else "base"

    def placeholder(self) -> str:
        return f"Ask the {self.model_name(self.adapter)} model (Enter sends)"

    def say(self, markup: str) -> None:
        self.query_one("#chat-status", Static).update(markup)

    def show_mode(self) -> None:
        mode = (
            "[b green]adapter on[/b green]: fine-tuned"
            if self.adapter
            else "[b yellow]adapter off[/b yellow]: base model"
        )
        extra = f" | {self.session.options.describe()} | {self.session.device}" if self.session else ""
        self.say(f"{mode}{escape(extra)}")

    def add(self, turn: Turn) -> Turn:
        self.turns.append(turn)
        widget = Static(turn.render(), classes="turn")
        self.widgets.append(widget)
        log = self.query_one("#chat-log", VerticalScroll)
        log.mount(widget)
        log.scroll_end(animate=False)
        return turn

    def refresh_turn(self, turn: Turn) -> None:
        self.widgets[self.turns.index(turn)].update(turn.render())
        self.query_one("#chat-log", VerticalScroll).scroll_end(animate=False)

    def transcript(self) -> str:
        """The log as plain text, one entry a paragraph (what the user reads)."""
        return "\n\n".join(t.plain() for t in self.turns)
