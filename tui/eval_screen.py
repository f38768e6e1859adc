"""A finished run's evaluation: base vs fine-tuned on the held-out rows (metrics by kind of answer,
Enter for all of them with the confusion matrices; then every example side by side, Enter for the whole
of one), and the exports (merged model, GGUF) run in their own process.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Label, Static
from tunewiz.core.bookkeeping import runs
from tunewiz.tui.messages import ExportDone
from tunewiz.tui.record_text import comparison_table, detail_rows, summary_rows
from tunewiz.tui.worker_errors import ReportsWorkerErrors


class ExampleScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close")]
    DEFAULT_CSS = """
    ExampleScreen { align: center middle; }
    ExampleScreen > VerticalScroll { width: 90%; height: 90%; border: thick $accent; background: $surface;
        padding: 0 1; }
    """

    def __init__(self, pred: dict) -> None:
        super().__init__()
        self.pred = pred

    def compose(self) -> ComposeResult:
        p = self.pred
        with VerticalScroll():
            for label, key in (
                ("Prompt", "prompt"),
                ("Expected", "expected"),
                ("Base model", "base"),
                ("Fine-tuned", "finetuned"),
            ):
                yield Label(f"[b]{label}[/b]")
                yield Static(escape(p.get(key, "")))


TEXT_WIDTH = 74
"""What TextScreen shows of a line at 80 columns: its border and its scrollbar take the rest."""


def own_text(prompts: list[str]) -> list[str]:
    """Each prompt without the text every prompt starts with (a mapped table's instruction), so the
    examples' column shows what differs.

    >>> own_text(["Classify it.\\n\\nmy card is lost", "Classify it.\\n\\nwhere is my refund"])
    ['my card is lost', 'where is my refund']
    >>> own_text(["a question", "another one"])
    ['a question', 'another one']
    """
    import os

    prefix = os.path.commonprefix(prompts) if len(prompts) > 1 else ""
    cut = max(prefix.rfind("\n"), prefix.rfind(". "))
    if cut < 8:
        return prompts
    return [p[cut + 1 :].strip() or p for p in prompts]


class TextScreen(ModalScreen[None]):
    """Preformatted text (all the metrics, as `tunewiz show` prints them), scrolled with the keys."""

    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close")]
    DEFAULT_CSS = """
    TextScreen { align: center middle; }
    TextScreen > VerticalScroll { width: 100%; height: 100%; border: thick $accent; background: $surface; }
    TextScreen Static { width: auto; }
    """

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll() as box:
            box.border_title = "held-out metrics - Esc closes"
            yield Static(Text(self.text, no_wrap=True))

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()


def verdict(base: dict, ft: dict) -> str:
    """What the held-out comparison says, in words: a gain larger than chance, a gain within what chance
    gives on this many answers (the 95% intervals overlap), or little gain.

    >>> verdict({"exact_match": 0.2, "interval": [0.1, 0.35]}, {"exact_match": 0.8, "interval": [0.65, 0.9]})[:13]
    'A clear gain.'
    >>> verdict({"exact_match": 0.4, "interval": [0.2, 0.6]}, {"exact_match": 0.6, "interval": [0.4, 0.8]})[:7]
    'A gain,'
    """
    key = ft.get("headline") or ("field_match" if "field_match" in ft else "exact_match")
    gain = (ft.get(key) or 0) - (base.get(key) or 0)
    bi, fi = base.get("interval"), ft.get("interval")
    measured = isinstance(bi, list) and isinstance(fi, list) and len(bi) == len(fi) == 2
    # Intervals apart is a cautious test (both models answered the same rows); records without them: +10 points.
    clear = fi[0] > bi[1] if measured else gain > 0.1
    if clear:
        return "A clear gain. Next: keep this adapter, or try the aggressive preset with more data."
    if gain > 0:
        return (
            f"A gain, but within what chance gives on {ft.get('examples', '?')} answers: hold out more rows "
            "or fix the dataset before the settings."
        )
    return "Little gain: fix the dataset (more, cleaner examples) before the settings."


def mark(score: dict) -> str:
    if score.get("exact"):
        return "yes"
    if score.get("json_expected"):
        return f"{score.get('fields_matched', 0)}/{score.get('fields', 0)}"
    return "no"


class EvalScreen(ReportsWorkerErrors, Screen):
    """Base vs fine-tuned on held-out rows: metrics, then every example side by side."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        # m and g are named in the line above the footer ("m / g: export merged / GGUF"): 80 columns
        Binding("m", "export('merged')", "Export merged", show=False),
        Binding("g", "export('gguf')", "Export GGUF", show=False),
        Binding("v", "review", "Review A/B"),
        Binding("t", "chat", "Chat"),
        Binding("h", "history", "History", show=False),  # 80 columns; the train screen's footer shows it
    ]

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.advice = ""
        self.exporting = ""

    def compose(self) -> ComposeResult:
        yield Label(f"[b]Evaluation[/b] {escape(self.run_dir.name)} - rows the model never saw")
        yield DataTable(id="metrics", cursor_type="row")
        yield DataTable(id="preds", cursor_type="row")
        yield Static("", id="next-steps")
        yield Footer()

    def on_mount(self) -> None:
        from tunewiz.core.judging.evaluate import load_predictions

        res = runs.read_record(self.run_dir).results.to_dict()
        base, ft = res.get("base", {}), res.get("finetuned", {})
        self.results = res
        metrics = self.query_one("#metrics", DataTable)
        # The rows `tunewiz show` prints (record_text), as cells: no markup in a label's name.
        metrics.add_columns("metric", "base", "fine-tuned", "n")
        for row in summary_rows(res):
            metrics.add_row(*map(Text, row))
        details = detail_rows(res)
        if details:
            metrics.add_row(*(Text("") for _ in range(4)))
            metrics.add_row(*(Text(c, style="bold") for c in details[0]))
            for row in details[1:]:
                metrics.add_row(*map(Text, row))
        self.preds = load_predictions(self.run_dir)
        table = self.query_one("#preds", DataTable)
        table.add_columns("ok base", "ok tuned", "prompt", "expected", "fine-tuned")
        for p, own in zip(self.preds, own_text([p["prompt"] for p in self.preds]), strict=True):
            table.add_row(
                mark(p["base_score"]),
                mark(p["finetuned_score"]),
                own[:22].replace("\n", " "),
                p["expected"][:16],
                p["finetuned"][:16],
            )
        self.advice = (
            f"{escape(verdict(base, ft))}  Tab: metrics / examples, Enter: all of it; m / g: export merged / GGUF."
        )
        self.show_exports()
        table.focus()

    def show_exports(self, extra: str = "") -> None:
        from tunewiz.core.shipping.export import summary_lines

        arts = runs.read_record(self.run_dir).artifacts.to_dict()
        lines = [escape(line.strip()) for line in summary_lines(arts)]
        lines = [f"[b red]{line}[/b red]" if line.startswith("WARNING ") else line for line in lines]
        self.query_one("#next-steps", Static).update("\n".join([self.advice, *lines, *([extra] if extra else [])]))

    def action_export(self, fmt: str) -> None:
        if self.exporting:
            self.notify(f"already exporting {self.exporting}", severity="warning")
            return
        self.exporting = fmt
        self.show_exports(
            f"[b]exporting {fmt}[/b]: merging, writing, then answering the held-out prompts to compare "
            "with the adapter model (a minute or more on a CPU)..."
        )
        self.run_export(fmt)

    @work(thread=True, exclusive=True, exit_on_error=False, group="export")
    def run_export(self, fmt: str) -> None:
        """In its own process (like training): torch never loads into the wizard's."""
        import subprocess
        import sys

        home = runs.home_of(self.run_dir)
        cmd = [
            sys.executable,
            "-m",
            "tunewiz.tui.cli",
            "--home",
            str(home),
            "export",
            str(self.run_dir),
            "--format",
            fmt,
        ]
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        arts = runs.read_record(self.run_dir).artifacts.to_dict()
        name = "merged" if fmt == "merged" else "gguf_q8_0"
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            self.post_message(ExportDone(name, error=tail[-1] if tail else f"exit {proc.returncode}"))
        else:
            self.post_message(ExportDone(name, entry=arts.get(name, {})))

    def worker_failed(self, group: str, text: str) -> None:
        if group == "export":  # the child process could not even be started
            self.exporting = ""
            self.show_exports(f"[red]export failed: {escape(text)}[/red]")

    def on_export_done(self, msg: ExportDone) -> None:
        self.exporting = ""
        if msg.error:
            self.show_exports(f"[red]export failed: {escape(msg.error)}[/red]")
            self.notify(msg.error, severity="error", timeout=10)
        else:
            self.show_exports()
            if msg.entry.get("warning"):
                self.notify(f"{msg.name}: {msg.entry['warning']}", severity="warning", timeout=10)
            else:
                self.notify(f"exported {msg.name} to {msg.entry.get('path', '?')}")

    @on(DataTable.RowSelected, "#preds")
    def _open(self, event: DataTable.RowSelected) -> None:
        self.app.push_screen(ExampleScreen(self.preds[event.cursor_row]))

    @on(DataTable.RowSelected, "#metrics")
    def _all_metrics(self, event: DataTable.RowSelected) -> None:
        self.app.push_screen(TextScreen(comparison_table(self.results, width=TEXT_WIDTH)))

    def action_history(self) -> None:
        self.app.show_history()  # type: ignore[attr-defined]

    def action_chat(self) -> None:
        """Talk with this run's model, and its base (tui.chat_screen)."""
        from tunewiz.tui.chat_screen import ChatScreen

        if runs.has_adapter(self.run_dir):
            self.app.push_screen(ChatScreen(self.run_dir))
        else:
            self.notify("This run saved no adapter: there is no fine-tuned model to chat with.", severity="warning")

    def action_review(self) -> None:
        """The blind A/B review of these held-out answers (tui.review_screen)."""
        from tunewiz.tui.review_screen import ReviewScreen

        if self.preds:
            self.app.push_screen(ReviewScreen(self.run_dir))
        else:
            self.notify("This run has no held-out answers to review.", severity="warning")
