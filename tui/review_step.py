"""Step 5, review: the run record that will be written (run.toml, also a config to repeat the run);
Start training submits it (the app does that in a worker and opens the train screen).
"""

from __future__ import annotations

from pathlib import Path

from rich.syntax import Syntax
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Button, Static
from tunewiz.tui.step_base import StepScreen


class ReviewStep(StepScreen):
    STEP = "Review"

    def body(self) -> ComposeResult:
        with VerticalScroll(id="toml-box"):
            yield Static("", id="toml")

    def on_mount(self) -> None:
        import tomli_w

        cfg = self.wiz.cfg
        if not cfg.name:
            cfg.name = f"{Path(cfg.data.path).stem}-{cfg.preset}"
        self.query_one("#toml", Static).update(Syntax(tomli_w.dumps(cfg.to_dict()), "toml", theme="ansi_dark"))
        next_button = self.query_one("#next", Button)
        next_button.label = "Start training"
        next_button.focus()

    def can_continue(self) -> str | None:
        problems = self.wiz.cfg.problems()
        return "; ".join(problems) if problems else None
