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
        yield Static("", id="review-plan")
        with VerticalScroll(id="toml-box"):
            yield Static("", id="toml")

    def on_mount(self) -> None:
        import tomli_w

        cfg = self.wiz.cfg
        if not cfg.name:
            cfg.name = f"{Path(cfg.data.path).stem}-{cfg.preset}"
        self.query_one("#toml", Static).update(Syntax(tomli_w.dumps(cfg.to_dict()), "toml", theme="ansi_dark"))
        self.query_one("#review-plan", Static).update(plan_line(cfg, self.wiz.hardware, self.wiz.data_shape))
        next_button = self.query_one("#next", Button)
        next_button.label = "Start training"
        next_button.focus()

    def can_continue(self) -> str | None:
        problems = self.wiz.cfg.problems()
        return "; ".join(problems) if problems else None


def plan_line(cfg, hw, shape) -> str:
    """What this machine will do with the request, in one or two lines (the planner's decisions).

    >>> from tunewiz.core.config import RunConfig
    >>> from tunewiz.core.hardware import Hardware
    >>> from tunewiz.core.memory import DataShape
    >>> cfg = RunConfig()
    >>> cfg.model.id = "bundled:smollm2-135m-instruct"
    >>> print(plan_line(cfg, Hardware(cpu_physical_cores=2, ram_available_gb=16), DataShape(120, 30_000, 0.2, "", 300)))
    plan: cpu, float32, 4 x 2 per step, checkpointing off; peak 2.14 GiB, fits; time ~10m37s
    """
    from tunewiz.core import planner
    from tunewiz.core.events import fmt_duration

    if hw is None:
        return "plan: waiting for the hardware"
    p = planner.plan(cfg, hw, shape=shape)
    line = (
        f"plan: {p.device}, {p.dtype}, {p.per_device_batch} x {p.accumulation}"
        f"{f' x {p.processes}' if p.processes > 1 else ''} per step, "
        f"checkpointing {'on' if p.gradient_checkpointing else 'off'}; {p.memory_line()}"
    )
    if p.estimate is not None and p.estimate.train_time_s:
        line += f"; time ~{fmt_duration(p.estimate.train_time_s)}"
    return line.replace("too big", "[red]too big[/red]")
