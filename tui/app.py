"""The tunewiz wizard: a Textual app over core/. `create_app` builds it (tests inject a home)."""

from __future__ import annotations

import time
from importlib.resources import files
from pathlib import Path

from textual import work
from textual.app import App
from textual.binding import Binding
from tunewiz.core.bookkeeping import runs
from tunewiz.core.config import RunConfig
from tunewiz.core.data.dataset import absolute
from tunewiz.core.models.resolve import DEFAULT_MODEL
from tunewiz.tui.data_step import DataStep
from tunewiz.tui.hardware_step import HardwareStep
from tunewiz.tui.messages import RunQueued, RunStarted
from tunewiz.tui.model_step import ModelStep
from tunewiz.tui.preset_step import PresetStep
from tunewiz.tui.review_step import ReviewStep
from tunewiz.tui.step_base import StepScreen
from tunewiz.tui.worker_errors import ReportsWorkerErrors

STARTED = time.perf_counter()


class TunewizApp(ReportsWorkerErrors, App):
    """Hardware -> model -> data -> preset -> review -> train -> evaluate, and history."""

    CSS = files("tunewiz.tui").joinpath("app.tcss").read_text(encoding="utf-8")  # shipped in the wheel
    TITLE = "tunewiz"
    STEPS = [HardwareStep, ModelStep, DataStep, PresetStep, ReviewStep]
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]

    def __init__(
        self,
        home: Path,
        start: str = "wizard",
        run: Path | None = None,
        cfg: RunConfig | None = None,
        chat_options=None,
        review_rows: int | None = None,
    ):
        super().__init__()
        self.home = home
        self.start = start
        self.run_dir = run
        self.cfg = cfg or RunConfig()
        self.chat_options = chat_options  # core.chat.ChatOptions of `tunewiz chat RUN` (None: the defaults)
        self.review_rows = review_rows  # `tunewiz review RUN --rows N` (None: core.review's default)
        self.hardware = None
        self.busy: frozenset[str] = frozenset()  # devices other runs train on, read with the hardware
        self.data_summary: dict = {}
        self.data_shape = None  # the data's shape for the planner, once the data step has tokenized it
        self.startup_s: float | None = None
        self.starting = False  # a run is being submitted or resumed (the submit worker is running)

    def on_mount(self) -> None:
        if self.start == "history":
            self.show_history()
        elif self.start == "attach" and self.run_dir:
            from tunewiz.tui.train_screen import TrainScreen

            self.push_screen(TrainScreen(self.run_dir))
        elif self.start == "chat" and self.run_dir:
            from tunewiz.tui.chat_screen import ChatScreen

            self.push_screen(ChatScreen(self.run_dir, self.chat_options))
        elif self.start == "review" and self.run_dir:
            from tunewiz.tui.review_screen import ReviewScreen

            self.push_screen(ReviewScreen(self.run_dir, self.review_rows))
        else:
            self.start_wizard()

    def on_ready(self) -> None:
        self.startup_s = time.perf_counter() - STARTED
        self.log(f"first screen painted after {self.startup_s:.3f}s")

    def start_wizard(self) -> None:
        self.push_screen(HardwareStep())

    def next_step(self, current: type) -> None:
        i = self.STEPS.index(current)
        if i + 1 < len(self.STEPS):
            self.push_screen(self.STEPS[i + 1]())
        else:
            self.start_run(self.cfg)

    def start_run(self, cfg: RunConfig) -> None:
        """Submit the run; the train screen opens when its trainer has started (RunStarted)."""
        if self.begin_starting():
            self.submit(cfg)

    def begin_starting(self) -> bool:
        """False (and says so) while a run is being started: a second press must not start a second run."""
        if self.starting:
            if isinstance(self.screen, StepScreen):  # by the buttons, where "starting the run..." is
                self.screen.say("already starting the run: a moment...", style="yellow")
            else:
                self.notify("Already starting a run: a moment.", severity="warning")
            return False
        self.starting = True
        if isinstance(self.screen, StepScreen):
            self.screen.say("starting the run...", style="yellow")
        return True

    @work(thread=True, exit_on_error=False, group="submit")
    def submit(self, cfg: RunConfig) -> None:
        """launcher.submit reads the whole data file and starts the trainer: seconds on a big file.
        A TunewizError it raises (bad data, unknown model, unwritable home) is shown by worker_failed."""
        from tunewiz.core.training import launcher

        self.post_message(RunStarted(launcher.submit(cfg.validate(), self.home, hw=self.hardware)))

    def queue_run(self, cfg: RunConfig) -> None:
        """Check the run now and put it in the run queue: it starts after the runs before it on its device."""
        if self.begin_starting():
            self.submit_queued(cfg)

    @work(thread=True, exit_on_error=False, group="submit")
    def submit_queued(self, cfg: RunConfig) -> None:
        from tunewiz.core.training import queue

        self.post_message(RunQueued([queue.submit(cfg.validate(), self.home, hw=self.hardware)]))

    def queue_sweep(self, cfg: RunConfig) -> None:
        """Queue the three presets on the wizard's model, data and held-out split; the sweep screen follows."""
        if self.begin_starting():
            self.submit_sweep(cfg)

    @work(thread=True, exit_on_error=False, group="submit")
    def submit_sweep(self, cfg: RunConfig) -> None:
        from tunewiz.core.training import sweep

        sweep_id, queued = sweep.submit(cfg, self.home, hw=self.hardware)
        self.post_message(RunQueued(queued, sweep=sweep_id))

    def on_run_queued(self, msg: RunQueued) -> None:
        self.starting = False
        if isinstance(self.screen, StepScreen):
            self.screen.say("", style="")
        if msg.sweep:
            from tunewiz.tui.sweep_screen import SweepScreen

            self.notify(f"Queued the three presets: they train one after another (sweep {msg.sweep}).")
            self.push_screen(SweepScreen(msg.sweep))
            return
        (q,) = msg.queued
        after = f"it starts after {q.after()}" if q.waits_for else "nothing else uses its device: it starts now"
        self.notify(f"Queued {q.run_dir.name} as #{q.place}: {after}.", markup=False, timeout=8)
        self.show_history()

    def resume_run(self, run_dir: Path) -> None:
        """Start a stopped, crashed or failed run's trainer again from its last checkpoint."""
        if self.begin_starting():
            self.resume(run_dir)

    @work(thread=True, exit_on_error=False, group="submit")
    def resume(self, run_dir: Path) -> None:
        from tunewiz.core.training import launcher

        launcher.start(run_dir, resume=True)
        self.post_message(RunStarted(run_dir))

    def on_run_started(self, msg: RunStarted) -> None:
        from tunewiz.tui.train_screen import TrainScreen

        self.starting = False
        if isinstance(self.screen, StepScreen):
            self.screen.say("", style="")
        self.run_dir = msg.run_dir
        self.push_screen(TrainScreen(msg.run_dir))

    def worker_failed(self, group: str, text: str) -> None:
        if group != "submit":
            return
        self.starting = False
        if isinstance(self.screen, StepScreen):  # the review step: by the button too
            self.screen.say("the run did not start (see the message)")

    def show_history(self) -> None:
        from tunewiz.tui.history_screen import HistoryScreen

        self.push_screen(HistoryScreen())


def create_app(
    home: Path | None = None,
    start: str = "wizard",
    run: Path | None = None,
    data: str | None = None,
    chat_options=None,
    review_rows: int | None = None,
) -> TunewizApp:
    cfg = RunConfig()
    cfg.model.id = DEFAULT_MODEL
    if data:
        cfg.data.path = str(absolute(data))
    return TunewizApp(
        home or runs.home(), start=start, run=run, cfg=cfg, chat_options=chat_options, review_rows=review_rows
    )
