"""Every run from its record: sort, open, attach, compare two, re-run, resume, delete.

The list reloads in a thread worker every two seconds; deleting (a run can hold gigabytes of
checkpoints and merged models) and resuming run in workers too.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, Static
from tunewiz.core import runs
from tunewiz.core.events import fmt_duration
from tunewiz.tui.compare_screen import CompareScreen
from tunewiz.tui.messages import RunDeleted
from tunewiz.tui.run_screen import RunScreen
from tunewiz.tui.train_screen import TrainScreen
from tunewiz.tui.widgets import ConfirmScreen
from tunewiz.tui.worker_errors import ReportsWorkerErrors

SORTS = [
    ("date", lambda r: r.record.get("run", {}).get("created_unix", 0.0)),
    ("status", lambda r: r.status),
    ("eval loss", lambda r: r.eval_loss if r.eval_loss is not None else 1e9),
    ("metric", lambda r: r.metric),
    ("preset", lambda r: r.preset),
]


class HistoryScreen(ReportsWorkerErrors, Screen):
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
        self.app.resume_run(r.path)  # type: ignore[attr-defined]

    def action_delete(self) -> None:
        r = self.current()
        if not r:
            return
        if r.status in runs.ACTIVE:
            self.notify("Stop the run before deleting it.", severity="warning")
            return

        def done(yes: bool | None) -> None:
            if yes:
                self.delete_run(r.path, r.id)

        self.app.push_screen(ConfirmScreen(f"Delete run {r.id} and all its files?"), done)

    @work(thread=True, exit_on_error=False, group="delete")
    def delete_run(self, path: Path, run_id: str) -> None:
        """A run can hold gigabytes of checkpoints and merged models: never on the event loop."""
        shutil.rmtree(path, ignore_errors=True)
        self.post_message(RunDeleted(run_id))

    def on_run_deleted(self, msg: RunDeleted) -> None:
        self.notify(f"Deleted {msg.run_id}")
        self.reload()

    def worker_failed(self, group: str, text: str) -> None:
        if group == "history":
            self.query_one("#history-title", Label).update("[b]History[/b] - [red]cannot read the runs[/red]")

    def action_new(self) -> None:
        self.app.start_wizard()  # type: ignore[attr-defined]
