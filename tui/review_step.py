"""Step 5, review: the run record that will be written (run.toml, also a config to repeat the run),
and what the run should know before it starts (a model that runs its own code, another run on the same
device); Ctrl+N (or the Start training button) submits it (the app does that in a worker and opens the
train screen), after a yes / no when the model runs its own code. Arriving here focuses the record, not
the button: a stray Enter from the preset step starts nothing. When another run is training on the same
device, w (or the button) queues this one after it instead (core.queue): checked now, started when that
run ends.
"""

from __future__ import annotations

from rich.markup import escape
from rich.syntax import Syntax
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Button, Static
from tunewiz.tui.step_base import StepScreen
from tunewiz.tui.widgets import ConfirmScreen


class ReviewStep(StepScreen):
    STEP = "Review"
    BINDINGS = [
        Binding("ctrl+n", "next", "Start training"),  # the footer says what ctrl+n does here
        Binding("w", "queue", "Queue after it"),  # offered while another run uses the device
    ]
    AUTO_FOCUS = "#toml-box"

    def body(self) -> ComposeResult:
        yield Static("", id="review-plan")
        yield Static("", id="review-warnings")
        with VerticalScroll(id="toml-box"):
            yield Static("", id="toml")

    def on_mount(self) -> None:
        from tunewiz.core.bookkeeping.runs import default_name
        from tunewiz.core.toml import dumps

        cfg = self.wiz.cfg
        if not cfg.name:
            cfg.name = default_name(cfg)
        self.query_one("#toml", Static).update(Syntax(dumps(cfg.to_dict()), "toml", theme="ansi_dark"))
        line = plan_line(cfg, self.wiz.hardware, self.wiz.data_shape, self.wiz.busy)
        self.query_one("#review-plan", Static).update(line)
        next_button = self.query_one("#next", Button)
        next_button.label = "Start training"
        self.query_one("#toml-box").focus()  # harmless: Enter does nothing, the arrows scroll the record
        self.busy = False  # another run is training on the device this one would use
        queue_button = Button("Queue after it (w)", id="queue")
        queue_button.display = False
        self.query_one("#nav").mount(queue_button, before=next_button)
        self.query_one("#review-warnings").display = False
        self.find_warnings()

    @work(thread=True, exclusive=True, exit_on_error=False, group="review")
    def find_warnings(self) -> None:
        """The warnings submit gives too (launcher.remote_code_warning, launcher.sharing), shown before
        Start: reading the other runs' records is file work, off the UI thread."""
        from tunewiz.core.planning import planner
        from tunewiz.core.training import launcher

        cfg, hw = self.wiz.cfg, self.wiz.hardware
        lines = [w for w in [launcher.remote_code_warning(cfg)] if w]
        shared, line = [], None
        if hw is not None:
            busy = launcher.busy_devices(self.wiz.home)
            p = planner.plan(cfg, hw, shape=self.wiz.data_shape, busy=busy)  # the runs as they are now
            shared, line = launcher.sharing(p, busy), plan_text(p, hw)
        self.app.call_from_thread(self.show_warnings, lines + shared, bool(shared), line)

    def show_warnings(self, lines: list[str], busy: bool = False, line: str | None = None) -> None:
        if not self.is_attached:  # Back was pressed while the runs were read
            return
        if line is not None:
            self.query_one("#review-plan", Static).update(line)
        box = self.query_one("#review-warnings", Static)
        if busy:
            lines = [*lines, "w queues this run after it instead: it starts when the device is free"]
        box.update("\n".join(f"[yellow]warning:[/yellow] {escape(w)}" for w in lines))
        box.display = bool(lines)
        self.busy = busy
        self.query_one("#queue", Button).display = busy
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "queue":
            return getattr(self, "busy", False)
        return True

    def action_queue(self) -> None:
        """Queue the run after the one training on its device (checked now, started when it ends)."""
        problems = self.can_continue()
        if problems:
            self.refuse(problems)
            return
        cfg = self.wiz.cfg
        if not cfg.model.trust_remote_code:
            self.app.queue_run(cfg)  # type: ignore[attr-defined]
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.app.queue_run(cfg)  # type: ignore[attr-defined]
            else:
                self.say("not queued: trust_remote_code needs a yes", style="yellow")

        question = (
            f"{cfg.model.id} runs its own Python code (trust_remote_code = true): it runs with your "
            "permissions, on this machine. Only go on if you trust the model's authors.\n\nQueue the run?"
        )
        self.app.push_screen(ConfirmScreen(question), confirmed)

    @on(Button.Pressed, "#queue")
    def _queue(self) -> None:
        self.action_queue()

    def can_continue(self) -> str | None:
        problems = self.wiz.cfg.problems()
        return "; ".join(problems) if problems else None

    def action_next(self) -> None:
        cfg = self.wiz.cfg
        if self.can_continue() or not cfg.model.trust_remote_code:
            super().action_next()
            return
        question = (
            f"{cfg.model.id} runs its own Python code (trust_remote_code = true): it runs with your "
            "permissions, on this machine. Only go on if you trust the model's authors.\n\nStart training?"
        )
        self.app.push_screen(ConfirmScreen(question), self._confirmed)

    def _confirmed(self, yes: bool | None) -> None:
        if yes:
            super().action_next()
        else:
            self.say("not started: trust_remote_code needs a yes", style="yellow")


def plan_line(cfg, hw, shape, busy=()) -> str:
    """What this machine will do with the request, in one or two lines (the planner's decisions).

    >>> from tunewiz.core.config import RunConfig
    >>> from tunewiz.core.planning.hardware import Hardware
    >>> from tunewiz.core.planning.memory import DataShape
    >>> cfg = RunConfig()
    >>> cfg.model.id = "bundled:smollm2-135m-instruct"
    >>> print(plan_line(cfg, Hardware(cpu_physical_cores=2, ram_available_gb=16), DataShape(120, 30_000, 0.2, "", 300)))
    plan: cpu, float32, 4 x 2 per step, checkpointing off; peak 2.14 GiB, fits; training ~10m37s
    """
    from tunewiz.core.planning import planner

    if hw is None:
        return "plan: waiting for the hardware"
    return plan_text(planner.plan(cfg, hw, shape=shape, busy=busy), hw)


def plan_text(p, hw) -> str:
    """A plan made for `hw` (planner.plan) in the words of :func:`plan_line`."""
    from tunewiz.core.units import fmt_duration

    where = p.placement[0] if p.device == "cuda" and p.processes == 1 and len(hw.gpus) > 1 else p.device
    line = (
        f"plan: {where}, {p.dtype}, {p.per_device_batch} x {p.accumulation}"
        f"{f' x {p.processes}' if p.processes > 1 else ''} per step, "
        f"checkpointing {'on' if p.gradient_checkpointing else 'off'}; {p.memory_line()}"
    )
    if p.estimate is not None and p.estimate.train_time_s:
        line += f"; training ~{fmt_duration(p.estimate.train_time_s)}"
    return line.replace("too big", "[red]too big[/red]")
