"""Every run from its record: sort, open, attach, compare two, re-run, resume, delete, repair; the runs
waiting in the queue with their place ('queued #2'), and s on a run of a sweep opens its ranking.
Re-run and delete ask first; Esc goes back to the screen the history was opened from.

The list reloads in a thread worker every two seconds; deleting (a run can hold gigabytes of
checkpoints and merged models), resuming and repairing run in workers too. A run whose run.toml is
missing or unreadable is listed as `damaged`: its row says what is wrong and what is left, and f
rebuilds the record (core.repair); the screens that need a record are not opened for it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, Static
from tunewiz.core.bookkeeping import repair, runs
from tunewiz.core.config import ConfigError, RunConfig
from tunewiz.core.judging import review
from tunewiz.core.units import fmt_duration
from tunewiz.tui.compare_screen import CompareScreen
from tunewiz.tui.messages import RunDeleted
from tunewiz.tui.record_text import headline_text, human_text
from tunewiz.tui.run_screen import RunScreen
from tunewiz.tui.train_screen import TrainScreen
from tunewiz.tui.widgets import ConfirmScreen
from tunewiz.tui.worker_errors import ReportsWorkerErrors

SORTS = [
    ("date", lambda r: r.record.run.created_unix or 0.0),
    ("status", lambda r: r.status),
    ("eval loss", lambda r: r.eval_loss if r.eval_loss is not None else 1e9),
    ("metric", lambda r: r.metric),
    ("preset", lambda r: r.preset),
]


NAME_WIDTH = 16


def status_cell(r) -> str:
    """The status column's text (9 wide): 'queued #2', or 'wait #12' from the tenth place on."""
    return r.label if len(r.label) <= 9 else f"wait #{r.queue_place}"


def name_cell(r) -> str:
    """The name column's text: a name too long for it ends in '…' rather than being cut silently."""
    name = r.name or r.id
    return name if len(name) <= NAME_WIDTH else name[: NAME_WIDTH - 1] + "…"


def started_cell(r) -> str:
    """When the run was made, 'MM-DD HH:MM' as its record says (runs of one name differ by it)."""
    return r.created[5:16].replace("T", " ") if len(r.created) >= 16 else "-"


def rerun_question(r, cfg: RunConfig) -> str:
    """What y on the re-run question starts: the run it repeats, its preset, length, model, data and time."""
    t = cfg.training
    epochs = f"{t.num_epochs:g} epoch" + ("" if t.num_epochs == 1 else "s")
    length = f"at most {t.max_steps} steps" if t.max_steps > 0 else epochs
    estimate = r.record.estimate.train_time_s
    took = r.record.results.wall_time_s
    times = [f"~{fmt_duration(estimate)} estimated" if estimate else ""]
    times.append(f"this run took {fmt_duration(took)}" if took else "")
    lines = [
        f"[b]Re-run {escape(r.id)}?[/b]",
        "",
        "A new run with the same settings:",
        f"  preset  {escape(cfg.preset)}, {length}",
        f"  model   {escape(cfg.model.id)} ({escape(cfg.model.method)})",
        f"  data    {escape(Path(cfg.data.path).name)}",
        f"  time    {'; '.join(x for x in times if x) or 'no estimate in its record'}",
        "",
        "y starts it now; n or Esc: nothing runs.",
    ]
    return "\n".join(lines)


class RunTable(DataTable):
    """The runs, one a row: Home and End go to the first and the last run (a DataTable's scroll sideways)."""

    BINDINGS = [
        Binding("home", "scroll_top", "First run", show=False),
        Binding("end", "scroll_bottom", "Last run", show=False),
    ]


class HistoryScreen(ReportsWorkerErrors, Screen):
    # The footer fits 80 columns: the keys it has no room for are in the title (o, n), the detail (v), the
    # notices (c, once two runs are marked) and the README, and every key is listed by Ctrl+P's "Keys".
    BINDINGS = [
        Binding("escape", "back", "Back"),  # shown where there is a screen to go back to (check_action)
        Binding("f", "repair", "Fix record"),  # shown only on a damaged run's row (check_action)
        Binding("enter", "open", "Open", show=False),
        Binding("a", "attach", "Attach", show=False),  # also Enter, then a
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare 2", show=False),  # marking the second run says so
        Binding("r", "rerun", "Re-run"),
        Binding("u", "resume", "Resume"),  # shown only on a stopped, crashed or failed run (check_action)
        Binding("v", "review", "Review"),  # shown only on a completed run with held-out answers (check_action)
        Binding("t", "chat", "Chat"),  # shown only on a run that saved an adapter (check_action)
        Binding("x", "delete", "Delete", show=False),  # asks first
        Binding("s", "sweep", "Sweep", show=False),  # on a run of a sweep: the three presets ranked
        Binding("o", "sort", "Sort", show=False),
        Binding("n", "new", "New run", show=False),
        # The app's ^q has the same action's name: the footer shows this one, q Quit, in its place.
        Binding("q", "quit", "Quit"),
    ]

    def compose(self) -> ComposeResult:
        yield Label("[b]History[/b] - every run, newest first", id="history-title")
        yield RunTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield Static("", id="history-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.sort_index = 0
        self.marked: list[str] = []
        table = self.query_one(DataTable)
        # Fixed widths: the table fits 80 columns (78 and a scroll bar) and does not jump when it reloads.
        # The start time tells apart the runs of one name; the training loss and the time a run took are
        # in the detail under the table.
        for label, width in (
            (" ", 1),
            ("status", 9),
            ("name", NAME_WIDTH),
            ("started", 11),
            ("preset", 12),
            ("eval", 5),
            ("metric", 10),
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
            colour = runs.COLOURS.get(r.status, "")
            table.add_row(
                "*" if r.id in self.marked else " ",
                f"[{colour}]{status_cell(r)}[/{colour}]" if colour else status_cell(r),
                escape(name_cell(r)),
                started_cell(r),
                r.preset,
                f"{r.eval_loss:.3f}" if r.eval_loss is not None else "-",
                r.metric or "-",
                key=r.id,
            )
        if items:
            table.move_cursor(row=min(cursor, len(items) - 1))
        bad = len(runs.damaged(items))
        self.query_one("#history-title", Label).update(
            f"[b]History[/b] - {len(items)} run(s), sorted by {name} (o to change, n: new run)"
            + (f", [red]{bad} damaged[/red]" if bad else "")
            if items
            else "[b]History[/b] - no runs yet: press n to start one"
        )
        self.show_detail()

    def current(self):
        table = self.query_one(DataTable)
        if not getattr(self, "items", None) or table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return self.items.get(key)

    @on(DataTable.RowHighlighted)
    def _highlight(self, event: DataTable.RowHighlighted) -> None:
        self.show_detail()

    def show_detail(self) -> None:
        r = self.current()
        self.refresh_bindings()  # f (repair) is offered on a damaged run's row only
        if r is None:
            return
        if r.status == runs.DAMAGED:
            width = 78  # 80 columns less the padding
            lines = (f"{r.id}: {r.problem}", "left: " + "; ".join(r.left))
            self.query_one("#history-detail", Static).update(
                f"[red]{escape(lines[0][:width])}[/red]\n{escape(lines[1][:width])}\n"
                "[b]f[/b] rebuilds run.toml from what is left (the damaged file is kept)"
            )
            return
        rec = r.record
        reason = rec.run.failure_reason or ""
        result = headline_text(rec.results.to_dict())
        human = human_text(rec.results.human or {})
        sweep = rec.run.sweep
        if not human and self.reviewable(r):
            human = "v: read its held-out answers blind, A against B, and say which is better"
            if sweep:
                human = "s: its sweep's three presets ranked; v: read its held-out answers blind"
        elif not human and sweep:
            human = f"s: the three presets of its sweep ranked ({sweep})"
        if r.status == runs.WAITING:
            result = f"{r.label}: starts when the runs before it end; `tunewiz queue` moves or cancels it"
        took = f"took {fmt_duration(r.duration_s)}" if r.duration_s else ""
        loss = f"train loss {r.train_loss:.3f}" if r.train_loss is not None else ""
        figures = ", ".join(f for f in (took, loss) if f)
        self.query_one("#history-detail", Static).update(
            f"{escape(r.id)}" + (f"  {figures}" if figures else "") + f"\nmodel {escape(r.model)} ({r.method}), "
            f"data {escape(r.data)}"
            + (f"\n[red]{escape(reason[:150])}[/red]" if reason else f"\n{escape(result[:78])}" if result else "")
            + (f"\n{escape(human[:78])}" if human else "")
        )

    @staticmethod
    def reviewable(r) -> bool:
        return r.status == "completed" and review.reviewable(r.path)

    def action_sweep(self) -> None:
        r = self.current()
        sweep_id = r.record.run.sweep if r is not None else None
        if not sweep_id:
            self.notify("This run is not part of a sweep (the preset step's Ctrl+T makes one).", severity="warning")
            return
        from tunewiz.tui.sweep_screen import SweepScreen

        self.app.push_screen(SweepScreen(str(sweep_id)))

    def action_sort(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(SORTS)
        self.reload()

    def refuse_damaged(self, r) -> bool:
        """True (and says what to do) when `r` has no record to work from, listed so or damaged since."""
        if r.status != runs.DAMAGED and runs.usable_record(r.path)[0] is not None:  # one small file
            return False
        self.notify(f"The record of {r.id} is damaged: press f to rebuild it first.", severity="warning", markup=False)
        if r.status != runs.DAMAGED:
            self.reload()
        return True

    def can_go_back(self) -> bool:
        """False where the history is the first screen (`tunewiz history`): q quits there."""
        stack = self.app.screen_stack
        return self in stack and stack.index(self) > 1  # under it: the app's default screen only

    def action_back(self) -> None:
        if self.can_go_back():
            self.app.pop_screen()

    def action_quit(self) -> None:
        self.app.exit()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "back":
            return self.can_go_back()
        if action not in ("repair", "review", "chat", "resume"):
            return True
        try:
            r = self.current()
        except NoMatches:  # asked before the table exists
            return False
        if action == "review":
            return r is not None and self.reviewable(r)
        if action == "chat":
            return r is not None and r.status != runs.DAMAGED and runs.has_adapter(r.path)
        if action == "resume":  # offered where it can be done (the footer has no room for the rest)
            return r is not None and r.status in runs.RESUMABLE
        return r is not None and r.status == runs.DAMAGED

    def action_repair(self) -> None:
        r = self.current()
        if r and r.status == runs.DAMAGED:
            self.query_one("#history-detail", Static).update(f"rebuilding the record of {escape(r.id)} ...")
            self.repair_run(r.path)

    @work(thread=True, exclusive=True, exit_on_error=False, group="repair", name="Rebuilding the run's record")
    def repair_run(self, path: Path) -> None:
        """Reads events, the adapter and the checkpoints and writes run.toml: never on the event loop."""
        rec, done = repair.repair(path)
        self.app.call_from_thread(self.repaired, path.name, rec, done)

    def repaired(self, run_id: str, rec: runs.Record, done: list[str]) -> None:
        kept = next((line for line in done if line.startswith("kept ")), "")
        status = rec.run.status or "?"
        text = f"Rebuilt the record of {run_id}: {status}" + (f"; {kept}" if kept else "")
        if not repair.rerunnable(rec):
            text += ". Its model or data is not known: add them to run.toml to re-run or resume it"
        self.notify(text, title="Repaired", markup=False, timeout=8)
        self.reload()

    def action_open(self) -> None:
        r = self.current()
        if r and not self.refuse_damaged(r):
            self.app.push_screen(RunScreen(r.path))

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_review(self) -> None:
        r = self.current()
        if r and not self.refuse_damaged(r) and self.reviewable(r):
            from tunewiz.tui.review_screen import ReviewScreen

            self.app.push_screen(ReviewScreen(r.path))

    def action_chat(self) -> None:
        from tunewiz.tui.chat_screen import ChatScreen

        r = self.current()
        if r and not self.refuse_damaged(r):
            self.app.push_screen(ChatScreen(r.path))

    def action_attach(self) -> None:
        r = self.current()
        if r and not self.refuse_damaged(r):
            self.app.push_screen(TrainScreen(r.path))

    def action_mark(self) -> None:
        r = self.current()
        if not r:
            return
        if r.id in self.marked:
            self.marked.remove(r.id)
        else:
            self.marked = (self.marked + [r.id])[-2:]
            if len(self.marked) == 2:
                self.notify("Two runs marked: c compares them.")
        self.reload()

    def action_compare(self) -> None:
        if len(self.marked) != 2:
            self.notify("Mark two runs with Space, then press c.", severity="warning")
            return
        if any(self.refuse_damaged(self.items[i]) for i in self.marked if i in self.items):
            return
        a, b = (self.items[i].path for i in self.marked)
        self.app.clear_notifications()  # "c compares them" has been done: no toast over the comparison
        self.app.push_screen(CompareScreen(a, b))

    def action_rerun(self) -> None:
        """Asks first (a run can train for an hour), saying what will run; y starts it."""
        r = self.current()
        if not r or self.refuse_damaged(r):
            return
        if not repair.rerunnable(r.record):
            self.notify(f"{r.id}'s record does not say which model and data: add them to run.toml first.")
            return
        try:
            cfg = r.record.request(strict=True)
        except ConfigError as exc:
            self.notify(f"{r.id}'s record cannot be re-run: {exc}", severity="error", markup=False)
            return

        def done(yes: bool | None) -> None:
            if yes:
                self.notify(f"Starting a new run like {r.id} ...", markup=False)
                self.app.start_run(cfg)  # type: ignore[attr-defined]

        self.app.push_screen(ConfirmScreen(rerun_question(r, cfg), yes="Re-run", start=True), done)

    def action_resume(self) -> None:
        r = self.current()
        if not r or self.refuse_damaged(r):
            return
        if r.status not in runs.RESUMABLE:
            self.notify(f"Only stopped, crashed or failed runs resume ({r.id} is {r.status}).", severity="warning")
            return
        self.app.resume_run(r.path)  # type: ignore[attr-defined]

    def action_delete(self) -> None:
        r = self.current()
        if not r:
            return
        if r.status in runs.ACTIVE or (r.status == runs.DAMAGED and runs.trainer_alive(r.path)):
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
        elif group == "repair":
            self.show_detail()  # the damage and the offer again; the notification says why it failed

    def action_new(self) -> None:
        self.app.start_wizard()  # type: ignore[attr-defined]
