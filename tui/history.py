"""Every run from its record: sort, open, attach, compare two, re-run, resume, delete."""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Label, Static
from tunewiz.core import runs
from tunewiz.core.events import fmt_duration, read_events

SORTS = [
    ("date", lambda r: r.record.get("run", {}).get("created_unix", 0.0)),
    ("status", lambda r: r.status),
    ("eval loss", lambda r: r.eval_loss if r.eval_loss is not None else 1e9),
    ("metric", lambda r: r.metric),
    ("preset", lambda r: r.preset),
]


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("y", "yes", "Yes"), Binding("n,escape", "no", "No")]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 60; height: auto; border: thick $error; background: $surface; padding: 1 2; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question)
            with Horizontal():
                yield Button("Yes (y)", id="yes", variant="error")
                yield Button("No (n)", id="no")

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class HistoryScreen(Screen):
    BINDINGS = [
        Binding("enter", "open", "Open", show=False),
        Binding("a", "attach", "Attach"),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare 2"),
        Binding("r", "rerun", "Re-run"),
        Binding("u", "resume", "Resume"),
        Binding("x", "delete", "Delete"),
        Binding("o", "sort", "Sort"),
        Binding("n", "new", "New run"),
        Binding("q", "app.quit", "Quit"),
    ]

    def compose(self) -> ComposeResult:
        yield Label("[b]History[/b] - every run, newest first", id="history-title")
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static("", id="history-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.sort_index = 0
        self.marked: list[str] = []
        table = self.query_one(DataTable)
        # Fixed widths: the table fits 80 columns and does not jump when it reloads.
        for label, width in (
            (" ", 1),
            ("status", 9),
            ("name", 14),
            ("preset", 12),
            ("loss", 5),
            ("eval", 5),
            ("metric", 10),
            ("time", 6),
        ):
            table.add_column(label, width=width)
        self.reload()
        table.focus()
        self.set_interval(2.0, self.reload)

    @work(thread=True, exclusive=True, exit_on_error=False, group="history")
    def reload(self) -> None:
        items = runs.list_runs(self.app.home)  # type: ignore[attr-defined]
        self.app.call_from_thread(self.show, items)

    def show(self, items) -> None:
        name, key = SORTS[self.sort_index]
        items = sorted(items, key=key, reverse=name in ("date",))
        self.items = {r.id: r for r in items}
        table = self.query_one(DataTable)
        cursor = table.cursor_row
        table.clear()
        for r in items:
            colour = {
                "completed": "green",
                "failed": "red",
                "crashed": "red",
                "running": "cyan",
                "stopped": "yellow",
                "queued": "cyan",
            }.get(r.status, "")
            table.add_row(
                "*" if r.id in self.marked else " ",
                f"[{colour}]{r.status}[/{colour}]" if colour else r.status,
                escape((r.name or r.id)[:14]),
                r.preset,
                f"{r.train_loss:.3f}" if r.train_loss is not None else "-",
                f"{r.eval_loss:.3f}" if r.eval_loss is not None else "-",
                r.metric or "-",
                fmt_duration(r.duration_s) if r.duration_s else "-",
                key=r.id,
            )
        if items:
            table.move_cursor(row=min(cursor, len(items) - 1))
        self.query_one("#history-title", Label).update(
            f"[b]History[/b] - {len(items)} run(s), sorted by {name} (o to change)"
            if items
            else "[b]History[/b] - no runs yet: press n to start one"
        )

    def current(self):
        table = self.query_one(DataTable)
        if not getattr(self, "items", None) or table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.items.get(key)

    @on(DataTable.RowHighlighted)
    def _highlight(self, event: DataTable.RowHighlighted) -> None:
        r = self.current()
        if r is None:
            return
        rec = r.record
        reason = rec.get("run", {}).get("failure_reason", "")
        self.query_one("#history-detail", Static).update(
            f"{escape(r.id)}  {r.created[:16].replace('T', ' ')}\nmodel {escape(r.model)} ({r.method}), "
            f"data {escape(r.data)}" + (f"\n[red]{escape(reason[:150])}[/red]" if reason else "")
        )

    def action_sort(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(SORTS)
        self.reload()

    def action_open(self) -> None:
        r = self.current()
        if r:
            self.app.push_screen(RunScreen(r.path))

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_attach(self) -> None:
        r = self.current()
        if r:
            from tunewiz.tui.train import TrainScreen

            self.app.push_screen(TrainScreen(r.path))

    def action_mark(self) -> None:
        r = self.current()
        if not r:
            return
        if r.id in self.marked:
            self.marked.remove(r.id)
        else:
            self.marked = (self.marked + [r.id])[-2:]
        self.reload()

    def action_compare(self) -> None:
        if len(self.marked) != 2:
            self.notify("Mark two runs with Space, then press c.", severity="warning")
            return
        a, b = (self.items[i].path for i in self.marked)
        self.app.push_screen(CompareScreen(a, b))

    def action_rerun(self) -> None:
        r = self.current()
        if r:
            from tunewiz.core.config import RunConfig

            self.app.start_run(RunConfig.from_dict(r.record))  # type: ignore[attr-defined]

    def action_resume(self) -> None:
        r = self.current()
        if not r:
            return
        if r.status not in ("stopped", "crashed", "failed"):
            self.notify(f"Only stopped, crashed or failed runs resume ({r.id} is {r.status}).", severity="warning")
            return
        from tunewiz.core import launcher
        from tunewiz.tui.train import TrainScreen

        launcher.start(r.path, resume=True)
        self.app.push_screen(TrainScreen(r.path))

    def action_delete(self) -> None:
        r = self.current()
        if not r:
            return
        if r.status in runs.ACTIVE:
            self.notify("Stop the run before deleting it.", severity="warning")
            return

        def done(yes: bool | None) -> None:
            if yes:
                shutil.rmtree(r.path, ignore_errors=True)
                self.notify(f"Deleted {r.id}")
                self.reload()

        self.app.push_screen(ConfirmScreen(f"Delete run {r.id} and all its files?"), done)

    def action_new(self) -> None:
        self.app.start_wizard()  # type: ignore[attr-defined]


class RunScreen(Screen):
    """One run: its record, its loss curve and its evaluation."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("e", "evaluate", "Evaluation"),
        Binding("a", "attach", "Follow"),
    ]

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)

    def compose(self) -> ComposeResult:
        from tunewiz.tui.train import LossPlot

        yield Label(f"[b]Run[/b] {escape(self.run_dir.name)}")
        with Horizontal():
            with VerticalScroll(id="run-record"):
                yield Static("", id="record")
            yield LossPlot(id="run-plot")
        yield Footer()

    def on_mount(self) -> None:
        from tunewiz.tui.cli import record_summary_lines

        doc = runs.refresh(self.run_dir)
        self.status = doc.get("run", {}).get("status")
        self.query_one("#record", Static).update(escape("\n".join(record_summary_lines(doc))))
        self.query_one("#run-plot").add(read_events(self.run_dir)[0])

    def action_evaluate(self) -> None:
        from tunewiz.tui.train import EvalScreen

        if (self.run_dir / "eval" / "predictions.jsonl").is_file():
            self.app.push_screen(EvalScreen(self.run_dir))
        else:
            self.notify("This run has no evaluation.", severity="warning")

    def action_attach(self) -> None:
        from tunewiz.tui.train import TrainScreen

        self.app.push_screen(TrainScreen(self.run_dir))


def flatten(doc: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


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
                if fa.get(key) != fb.get(key) and not key.startswith(("training.reasons", "data.sha")):
                    table.add_row(key, str(fa.get(key, "-"))[:28], str(fb.get(key, "-"))[:28])
        fa, fb = flatten(ra.get("results", {}), "results."), flatten(rb.get("results", {}), "results.")
        for key in sorted(set(fa) | set(fb)):
            if not key.endswith("seconds"):
                table.add_row(key, str(fa.get(key, "-"))[:28], str(fb.get(key, "-"))[:28])
        table.focus()
