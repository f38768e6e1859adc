"""Following a run (live log, loss curve, progress) and its base-vs-fine-tuned evaluation.

The screen never holds the training: it reads the run directory (events.jsonl
and run.toml) in a thread worker, once per poll interval, and gets one batched
message per poll, so a slow SSH link is never flooded.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Footer, Label, ProgressBar, RichLog, Static
from textual_plotext import PlotextPlot
from tunewiz.core import runs
from tunewiz.core.events import describe, fmt_duration, read_events
from tunewiz.tui.messages import ExportDone, RunEvents

POLL_S = 1.0


class LossPlot(PlotextPlot):
    """Train and held-out loss against the step, with axes."""

    def on_mount(self) -> None:
        self.train: list[tuple[int, float]] = []
        self.evals: list[tuple[int, float]] = []
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
        if self.train:
            plt.plot([s for s, _ in self.train], [v for _, v in self.train], label="train", marker="braille")
        if self.evals:
            plt.scatter([s for s, _ in self.evals], [v for _, v in self.evals], label="held-out", marker="o")
        self.refresh()


def compact(ev: dict) -> str | None:
    """A log line short enough for half of an 80-column terminal."""
    if ev.get("event") == "step":
        return (
            f"{ev.get('step')}/{ev.get('max_steps')} loss {ev.get('loss') or 0:.4f} "
            f"lr {ev.get('learning_rate') or 0:.1e} {ev.get('tokens_per_s') or 0:.0f}t/s"
        )
    return describe(ev)


class TrainScreen(Screen):
    """Live view of one run. Stop saves a checkpoint and the adapter; Detach leaves it training."""

    BINDINGS = [
        Binding("s", "stop", "Stop (saves)"),
        Binding("d", "detach", "Detach & quit"),
        Binding("e", "evaluate", "Evaluation"),
        Binding("h", "history", "History"),
        Binding("r", "retry", "Retry w/ fix", show=False),
        Binding("escape", "leave", "Back"),
    ]

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.events_offset = 0
        self.status = ""
        self.record: dict = {}

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
            record = runs.refresh(self.run_dir)
        except runs.RunError:
            record = {}
        self.post_message(RunEvents(events, record))

    def on_run_events(self, msg: RunEvents) -> None:
        if not msg.events and msg.record == self.record:
            return  # nothing new: no repaint (the trainer shares the CPU with this screen)
        self.record = msg.record or self.record
        run = self.record.get("run", {})
        self.status = run.get("status", "?")
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
        if last and self.status in ("stopped", "crashed", "failed"):  # no time left to wait for: no ETA
            self.query_one("#train-stats", Static).update(
                f"{self.status} at step {last.get('step')}/{last.get('max_steps')}  loss {last.get('loss') or 0:.4f}"
                + ("  - resume: u in history" if self.status != "failed" else "")
            )
        colour = {"completed": "green", "failed": "red", "crashed": "red", "stopped": "yellow"}.get(self.status, "")
        text = f"[{colour}]{self.status}[/{colour}]" if colour else self.status
        if self.status == "completed":
            res = self.record.get("results", {})
            text += "  - press [b]e[/b] for the evaluation"
            ft = res.get("finetuned", {})
            if ft:
                bar.update(total=1, progress=1)
                self.query_one("#train-stats", Static).update(
                    f"done in {fmt_duration(res.get('wall_time_s'))}: held-out loss "
                    f"{res.get('base', {}).get('eval_loss', 0):.3f} (base) -> {ft.get('eval_loss', 0):.3f}"
                )
        elif self.status in ("failed", "crashed"):
            reason = run.get("failure_reason", "")
            text += f": {escape(reason[:200])}"
            if "Out of memory" in reason:
                text += "  - press [b]r[/b] to retry with half the batch"
        self.query_one("#train-status", Label).update(text)

    def action_stop(self) -> None:
        from tunewiz.core import launcher

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
        reason = self.record.get("run", {}).get("failure_reason", "")
        if self.status != "failed" or "Out of memory" not in reason:
            return
        from tunewiz.core.config import RunConfig

        cfg = RunConfig.from_dict(self.record)
        t = cfg.training
        if t.per_device_batch_size > 1:
            t.gradient_accumulation_steps *= 2
            t.per_device_batch_size //= 2
        else:
            t.gradient_checkpointing = True
        self.app.start_run(cfg)  # type: ignore[attr-defined]


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


def mark(score: dict) -> str:
    if score.get("exact"):
        return "yes"
    if score.get("json_expected"):
        return f"{score.get('fields_matched', 0)}/{score.get('fields', 0)}"
    return "no"


class EvalScreen(Screen):
    """Base vs fine-tuned on held-out rows: metrics, then every example side by side."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("m", "export('merged')", "Export merged"),
        Binding("g", "export('gguf')", "Export GGUF"),
        Binding("h", "history", "History"),
    ]

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.advice = ""
        self.exporting = ""

    def compose(self) -> ComposeResult:
        yield Label(f"[b]Evaluation[/b] {escape(self.run_dir.name)} - held-out rows the model never saw")
        yield DataTable(id="metrics", cursor_type="none")
        yield DataTable(id="preds", cursor_type="row")
        yield Static("", id="next-steps")
        yield Footer()

    def on_mount(self) -> None:
        from tunewiz.core.evaluate import load_predictions

        res = runs.read_record(self.run_dir).get("results", {})
        base, ft = res.get("base", {}), res.get("finetuned", {})
        metrics = self.query_one("#metrics", DataTable)
        metrics.add_columns("metric", "base", "fine-tuned")
        for label, key, pct in (
            ("held-out loss", "eval_loss", False),
            ("exact match", "exact_match", True),
            ("valid JSON", "json_valid", True),
            ("fields correct", "field_match", True),
        ):
            if key in ft:
                f = (lambda v: f"{v:.0%}") if pct else (lambda v: f"{v:.4f}")
                metrics.add_row(label, f(base.get(key, 0)), f(ft.get(key, 0)))
        self.preds = load_predictions(self.run_dir)
        table = self.query_one("#preds", DataTable)
        table.add_columns("ok base", "ok tuned", "prompt", "expected", "fine-tuned")
        for p in self.preds:
            table.add_row(
                mark(p["base_score"]),
                mark(p["finetuned_score"]),
                p["prompt"][:22].replace("\n", " "),
                p["expected"][:16],
                p["finetuned"][:16],
            )
        gain = (ft.get("field_match", ft.get("exact_match", 0)) or 0) - (
            base.get("field_match", base.get("exact_match", 0)) or 0
        )
        advice = (
            "A clear gain. Next: keep this adapter, or try the aggressive preset with more data."
            if gain > 0.1
            else "Little gain: fix the dataset (more, cleaner examples) before the settings."
        )
        self.advice = f"{advice}  Enter: full example; m / g: export merged / GGUF."
        self.show_exports()
        table.focus()

    def show_exports(self, extra: str = "") -> None:
        from tunewiz.core.export import summary_lines

        arts = runs.read_record(self.run_dir).get("artifacts", {})
        lines = [escape(line.strip()) for line in summary_lines(arts)]
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

        home = self.run_dir.parent.parent
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
        arts = runs.read_record(self.run_dir).get("artifacts", {})
        name = "merged" if fmt == "merged" else "gguf_q8_0"
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()
            self.post_message(ExportDone(name, error=tail[-1] if tail else f"exit {proc.returncode}"))
        else:
            self.post_message(ExportDone(name, entry=arts.get(name, {})))

    def on_export_done(self, msg: ExportDone) -> None:
        self.exporting = ""
        if msg.error:
            self.show_exports(f"[red]export failed: {escape(msg.error)}[/red]")
            self.notify(msg.error, severity="error", timeout=10)
        else:
            self.show_exports()
            self.notify(f"exported {msg.name} to {msg.entry.get('path', '?')}")

    @on(DataTable.RowSelected, "#preds")
    def _open(self, event: DataTable.RowSelected) -> None:
        self.app.push_screen(ExampleScreen(self.preds[event.cursor_row]))

    def action_history(self) -> None:
        self.app.show_history()  # type: ignore[attr-defined]


def elapsed_since(t: float) -> str:
    return fmt_duration(time.time() - t)
