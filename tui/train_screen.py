"""Following a run: live log, loss curve, progress and status; stop, detach, retry after out-of-memory.

The screen never holds the training: it reads the run directory (events.jsonl and run.toml) in a
thread worker, once per poll interval, and gets one batched message per poll, so a slow SSH link
is never flooded.
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Label, ProgressBar, RichLog, Static
from tunewiz.core.bookkeeping import notify, runs
from tunewiz.core.bookkeeping.events import describe, read_events
from tunewiz.core.units import fmt_duration
from tunewiz.tui.eval_screen import EvalScreen
from tunewiz.tui.messages import RunEvents
from tunewiz.tui.widgets import LossPlot
from tunewiz.tui.worker_errors import ReportsWorkerErrors

POLL_S = 1.0


def compact(ev: dict) -> str | None:
    """A log line short enough for half of an 80-column terminal."""
    if ev.get("event") == "step":
        return (
            f"{ev.get('step')}/{ev.get('max_steps')} loss {ev.get('loss') or 0:.4f} "
            f"lr {ev.get('learning_rate') or 0:.1e} {ev.get('tokens_per_s') or 0:.0f}t/s"
        )
    return describe(ev)


def alert_terminal(app, record: runs.Record) -> None:
    """Tell the terminal the app runs in that the run ended: the app's bell, then a desktop notification
    (core.notify: OSC 9 and OSC 777, through tmux's passthrough inside tmux), written through the app's
    driver as Textual writes its own escape sequences. Nothing in a headless app (tests, no terminal)."""
    driver = getattr(app, "_driver", None)
    if app.is_headless or driver is None:
        return
    app.bell()
    driver.write(notify.desktop_sequences(notify.title(record), notify.summary(record), bool(os.environ.get("TMUX"))))


class TrainScreen(ReportsWorkerErrors, Screen):
    """Live view of one run. Stop saves a checkpoint and the adapter; Detach leaves it training."""

    BINDINGS = [
        Binding("s", "stop", "Stop (saves)"),
        Binding("d", "detach", "Detach & quit"),
        Binding("e", "evaluate", "Evaluation"),
        Binding("h", "history", "History"),
        Binding("r", "retry", "Retry w/ fix"),  # only on a run that ran out of memory (check_action)
        Binding("escape", "leave", "Back"),
    ]

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.events_offset = 0
        self.status = ""
        self.record: runs.Record | None = None

    def compose(self) -> ComposeResult:
        yield Label(f"[b]Training[/b] {escape(self.run_dir.name)}", id="train-title")
        with Horizontal(id="train-top"):
            yield ProgressBar(total=None, show_eta=False, id="progress")
            yield Label("", id="train-status")
        yield Static("", id="train-stats")
        with Horizontal(id="train-main"):
            yield LossPlot(id="loss-plot")
            yield RichLog(id="train-log", max_lines=2000, wrap=True, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.poll()
        self.set_interval(POLL_S, self.poll)

    @work(thread=True, exclusive=True, exit_on_error=False, group="poll")
    def poll(self) -> None:
        events, self.events_offset = read_events(self.run_dir, self.events_offset)
        try:
            record = runs.observe(self.run_dir)
        except runs.RunError:
            record = None
        self.post_message(RunEvents(events, record))

    def worker_failed(self, group: str, text: str) -> None:
        if group == "poll" and not self.record:  # nothing read yet: say why instead of a blank status
            self.query_one("#train-status", Label).update(f"[red]cannot read the run: {escape(text[:200])}[/red]")

    def on_run_events(self, msg: RunEvents) -> None:
        if not msg.events and msg.record == self.record:
            return  # nothing new: no repaint (the trainer shares the CPU with this screen)
        self.record = msg.record or self.record
        run = (self.record or runs.Record()).run  # none read yet: the events still show, the status is '?'
        was, self.status = self.status, run.status or "?"
        if was != self.status:
            self.refresh_bindings()  # the footer offers what this status allows (check_action)
        if was in runs.ACTIVE and self.status in runs.FINAL:  # seen ending here, not found ended
            alert_terminal(self.app, self.record)
        log = self.query_one(RichLog)
        for e in msg.events:
            line = compact(e)
            if line:
                log.write(line)
        if msg.events:
            self.query_one(LossPlot).add(msg.events)
        steps = [e for e in msg.events if e.get("event") == "step"]
        bar = self.query_one(ProgressBar)
        if steps:
            last = steps[-1]
            bar.update(total=last.get("max_steps") or None, progress=last.get("step", 0))
            self.query_one("#train-stats", Static).update(
                f"step {last.get('step')}/{last.get('max_steps')}  loss {last.get('loss') or 0:.4f}  "
                f"{last.get('tokens_per_s') or 0:.0f} tok/s  mem {last.get('memory_mb') or 0:.0f} MB  "
                f"ETA {fmt_duration(last.get('eta_s'))}"
            )
            self.last_step = last
        last = getattr(self, "last_step", None)
        if last and self.status in runs.RESUMABLE:  # no time left to wait for: no ETA
            self.query_one("#train-stats", Static).update(
                f"{self.status} at step {last.get('step')}/{last.get('max_steps')}  loss {last.get('loss') or 0:.4f}"
                + ("  - resume: u in history" if self.status != "failed" else "")
            )
        colour = runs.COLOURS.get(self.status, "") if self.status not in runs.ACTIVE else ""
        text = f"[{colour}]{self.status}[/{colour}]" if colour else self.status
        if self.status == "completed":
            res = self.record.results
            text += "  - press [b]e[/b] for the evaluation"
            ft = res.finetuned or {}
            if ft:
                bar.update(total=1, progress=1)
                self.query_one("#train-stats", Static).update(
                    f"done in {fmt_duration(res.wall_time_s)}: held-out loss "
                    f"{(res.base or {}).get('eval_loss', 0):.3f} (base) -> {ft.get('eval_loss', 0):.3f}"
                )
        elif self.status in ("failed", "crashed"):
            reason = run.failure_reason or ""
            text += f": {escape(reason[:200])}"
            if runs.failure_kind(self.record) == runs.OUT_OF_MEMORY:
                text += "  - press [b]r[/b] to retry with half the batch"
        self.query_one("#train-status", Label).update(text)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Stop and Detach while the run trains (or before its first status is read); Evaluation once it
        has completed; Retry on a run that ran out of memory. Elsewhere they leave the footer."""
        active = self.status in ("", *runs.ACTIVE)
        if action in ("stop", "detach"):
            return active
        if action == "evaluate":
            return self.status == "completed"
        if action == "retry":
            return self.record is not None and runs.failure_kind(self.record) == runs.OUT_OF_MEMORY
        return True

    def action_stop(self) -> None:
        from tunewiz.core.training import launcher

        if launcher.stop(self.run_dir):
            self.notify("Stopping after this step: a checkpoint and the adapter are being saved.")
        else:
            self.notify(f"The run is not running ({self.status}).", severity="warning")

    def action_detach(self) -> None:
        self.app.exit(result=f"Detached: training goes on. Come back with: tunewiz attach {self.run_dir.name}")

    def action_evaluate(self) -> None:
        if self.status == "completed":
            self.app.push_screen(EvalScreen(self.run_dir))
        else:
            self.notify("The evaluation is ready when the run has completed.", severity="warning")

    def action_history(self) -> None:
        self.app.show_history()  # type: ignore[attr-defined]

    def action_leave(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
        else:
            self.app.show_history()  # type: ignore[attr-defined]

    def action_retry(self) -> None:
        """One-key retry after out-of-memory: same effective batch, half the per-device batch."""
        if self.record is None or runs.failure_kind(self.record) != runs.OUT_OF_MEMORY:
            return
        cfg = self.record.request(strict=True)
        t, plan = cfg.training, self.record.plan
        # From what the failed run did (its plan may already have split the batch or turned
        # checkpointing on), not from what was asked: asking the same again would fail the same way.
        per = plan.per_device_batch_size or t.per_device_batch_size
        acc = plan.gradient_accumulation_steps or t.gradient_accumulation_steps
        if per > 1:
            t.per_device_batch_size, t.gradient_accumulation_steps = per // 2, acc * 2
            t.auto_batch_split = False  # the halved split, not one the plan would grow again
        else:
            t.gradient_checkpointing = True
        self.app.start_run(cfg)  # type: ignore[attr-defined]
