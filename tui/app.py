"""The tunewiz wizard: a Textual app over core/. `create_app` builds it (tests inject a home)."""

from __future__ import annotations

import time
from importlib.resources import files
from pathlib import Path

from textual.app import App
from textual.binding import Binding
from tunewiz.core import runs
from tunewiz.core.config import RunConfig
from tunewiz.core.models import DEFAULT_MODEL
from tunewiz.tui.steps import DataStep, HardwareStep, ModelStep, PresetStep, ReviewStep

STARTED = time.perf_counter()


class TunewizApp(App):
    """Hardware -> model -> data -> preset -> review -> train -> evaluate, and history."""

    CSS = files("tunewiz.tui").joinpath("app.tcss").read_text(encoding="utf-8")  # shipped in the wheel
    TITLE = "tunewiz"
    STEPS = [HardwareStep, ModelStep, DataStep, PresetStep, ReviewStep]
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]

    def __init__(self, home: Path, start: str = "wizard", run: Path | None = None, cfg: RunConfig | None = None):
        super().__init__()
        self.home = home
        self.start = start
        self.run_dir = run
        self.cfg = cfg or RunConfig()
        self.hardware = None
        self.data_summary: dict = {}
        self.startup_s: float | None = None

    def on_mount(self) -> None:
        if self.start == "history":
            self.show_history()
        elif self.start == "attach" and self.run_dir:
            from tunewiz.tui.train import TrainScreen

            self.push_screen(TrainScreen(self.run_dir))
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
        from tunewiz.core import launcher
        from tunewiz.core.config import ConfigError
        from tunewiz.core.data import DataError
        from tunewiz.core.models import ModelError
        from tunewiz.tui.train import TrainScreen

        try:
            run_dir = launcher.submit(cfg.validate(), self.home, hw=self.hardware)
        except (ConfigError, DataError, ModelError, runs.RunError) as exc:
            self.notify(str(exc), severity="error", timeout=10)
            return
        self.run_dir = run_dir
        self.push_screen(TrainScreen(run_dir))

    def show_history(self) -> None:
        from tunewiz.tui.history import HistoryScreen

        self.push_screen(HistoryScreen())


def create_app(
    home: Path | None = None, start: str = "wizard", run: Path | None = None, data: str | None = None
) -> TunewizApp:
    cfg = RunConfig()
    cfg.model.id = DEFAULT_MODEL
    if data:
        cfg.data.path = str(Path(data).expanduser().resolve())
    return TunewizApp(home or runs.home(), start=start, run=run, cfg=cfg)
