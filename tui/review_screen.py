"""The blind A/B review (core.review): one held-out prompt at a time, two answers side by side, A and B,
without saying which model wrote which; a, b, t or s gives the verdict and the next row comes.

Each verdict is appended to eval/review.jsonl at once (leaving and coming back continues at the next
row), and the summary is written to run.toml [results.human] in a thread worker. Tab moves between the
two answers; the arrow and page keys scroll the one that has the focus.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Label, Static
from tunewiz.core.errors import TunewizError
from tunewiz.core.judging import review as review_mod
from tunewiz.tui.record_text import human_lines, review_progress
from tunewiz.tui.worker_errors import ReportsWorkerErrors


class ReviewScreen(ReportsWorkerErrors, Screen):
    """A blind A/B review of one run's held-out answers."""

    BINDINGS = [
        Binding("a", "judge('a')", "A better"),
        Binding("b", "judge('b')", "B better"),
        Binding("t", "judge('tie')", "Tie"),
        Binding("s", "judge('skip')", "Skip"),
        Binding("e", "expected", "Expected"),
        Binding("u", "undo", "Undo"),
        Binding("q,escape", "leave", "Back"),
    ]
    DEFAULT_CSS = """
    ReviewScreen #review-title { height: 1; padding: 0 1; background: $primary-background; width: 100%; }
    ReviewScreen #review-progress { height: 1; padding: 0 1; }
    ReviewScreen .review-box { border: round $panel; padding: 0 1; height: auto; }
    ReviewScreen .review-box:focus { border: round $accent; }
    ReviewScreen #review-prompt { max-height: 7; }
    ReviewScreen #review-expected { max-height: 6; display: none; }
    ReviewScreen #review-expected.-shown { display: block; }
    ReviewScreen #review-answers { height: 1fr; }
    ReviewScreen #review-answers .review-box { width: 1fr; height: 1fr; }
    ReviewScreen #review-summary { height: 1fr; display: none; }
    ReviewScreen.-done #review-summary { display: block; }
    ReviewScreen.-done #review-prompt, ReviewScreen.-done #review-expected,
    ReviewScreen.-done #review-answers { display: none; }
    """

    def __init__(self, run_dir: Path, rows: int | None = None) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.rows = rows
        self.review: review_mod.Review | None = None

    def compose(self) -> ComposeResult:
        yield Label(f"[b]Blind A/B review[/b] {escape(self.run_dir.name)}", id="review-title")
        yield Static("", id="review-progress")
        with VerticalScroll(id="review-prompt", classes="review-box") as box:
            box.border_subtitle = "Tab: the next box; arrows, PgUp / PgDn scroll it"
            yield Static("", id="prompt-text")
        with VerticalScroll(id="review-expected", classes="review-box") as box:
            box.border_title = "Expected (e hides it)"
            yield Static("", id="expected-text")
        with Horizontal(id="review-answers"):
            with VerticalScroll(id="answer-a", classes="review-box") as a:
                a.border_title = "A"
                yield Static("", id="a-text")
            with VerticalScroll(id="answer-b", classes="review-box") as b:
                b.border_title = "B"
                yield Static("", id="b-text")
        with VerticalScroll(id="review-summary", classes="review-box") as box:
            box.border_title = "Result - saved in run.toml [results.human]"
            yield Static("", id="summary-text")
        yield Footer()

    def on_mount(self) -> None:
        try:
            self.review = review_mod.Review.open(self.run_dir, self.rows)
        except TunewizError as exc:  # no predictions, a bad --rows: say so in place of the review
            self.add_class("-done")
            self.query_one("#review-progress", Static).update("[red]nothing to review[/red]")
            self.query_one("#summary-text", Static).update(f"[red]{escape(str(exc))}[/red]\n\nq leaves.")
            return
        self.show()

    def show(self) -> None:
        """The current row, or the summary once every row has a verdict."""
        rv = self.review
        if rv is None:
            return
        h = rv.summary().as_record()
        self.query_one("#review-progress", Static).update(escape(review_progress(h)))
        item = rv.current
        self.set_class(item is None, "-done")
        if item is None:
            lines = human_lines(h) if rv.rows else [f"The {rv.held_out} held-out rows' two answers are identical:"]
            lines += ["", "u takes the last verdict back; q leaves." if rv.rows else "nothing to compare; q leaves."]
            self.query_one("#summary-text", Static).update(escape("\n".join(lines)))
            return
        prompt = self.query_one("#review-prompt", VerticalScroll)
        prompt.border_title = f"Prompt - row {rv.position(item)} of {rv.rows}, line {item.key}"
        self.query_one("#prompt-text", Static).update(escape(item.prompt))
        self.query_one("#expected-text", Static).update(escape(item.expected))
        self.query_one("#a-text", Static).update(escape(item.a_text))
        self.query_one("#b-text", Static).update(escape(item.b_text))
        for box in ("#review-prompt", "#answer-a", "#answer-b", "#review-expected"):
            self.query_one(box, VerticalScroll).scroll_home(animate=False)
        self.query_one("#answer-a", VerticalScroll).focus()

    def action_judge(self, verdict: str) -> None:
        if self.review is None:
            return
        if self.review.current is None:
            self.notify("Every row has a verdict: u takes the last one back.", severity="warning")
            return
        try:
            self.review.judge(verdict)
        except OSError as exc:  # a full disk, a read-only home: the row stays, nothing is lost
            self.notify(
                f"The verdict was not saved ({exc.strerror or exc}): free some space and press it again.",
                title="Not saved",
                severity="error",
                timeout=10,
                markup=False,
            )
            return
        self.show()
        self.save()

    def action_undo(self) -> None:
        if self.review is None:
            return
        try:
            undone = self.review.undo()
        except OSError as exc:
            self.notify(f"The undo was not saved ({exc.strerror or exc}).", severity="error", markup=False)
            return
        if undone is None:
            self.notify("No verdict to take back.", severity="warning")
            return
        self.show()
        self.save()

    def action_expected(self) -> None:
        self.query_one("#review-expected").toggle_class("-shown")

    @work(thread=True, exclusive=True, exit_on_error=False, group="review")
    def save(self) -> None:
        """run.toml is written under its lock with an fsync: not on the event loop. It is computed from
        review.jsonl inside the lock, so an earlier save that finishes last cannot write older counts."""
        review_mod.save_summary(self.run_dir, self.review.asked if self.review else None)

    def action_leave(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
            return
        # Opened by `tunewiz review RUN`: back to the shell, with where the review stands.
        text = ""
        if self.review is not None:
            text = f"{review_progress(self.review.summary().as_record())}. Saved in {self.run_dir / review_mod.REVIEW}"
            if self.review.current is not None:
                text += f"; continue with: tunewiz review {self.run_dir.name}"
        self.app.exit(result=text or None)
