"""Step 1, hardware: what this machine has (GPUs, CPU, memory, disk) and what it can train.

Detection runs in a thread worker. If it fails, the step says so and offers r to try again, or Next
to go on as a CPU-only machine (the estimates then assume no GPU and no known memory).
"""

from __future__ import annotations

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Button, Static
from tunewiz.tui.messages import HardwareReady
from tunewiz.tui.step_base import StepScreen

DETECTING = "Detecting GPUs, CPU, memory and disk..."


class HardwareStep(StepScreen):
    STEP = "Hardware"
    BINDINGS = [
        Binding("enter", "next", "Next", show=False),
        Binding("r", "retry", "Retry detection"),  # shown only once detection has failed (check_action)
    ]

    failed = ""
    """Why detection failed, in the user's words; "" while it has not."""

    def body(self) -> ComposeResult:
        yield Static(DETECTING, id="hw")

    def on_mount(self) -> None:
        if self.wiz.hardware is not None:
            self.show(self.wiz.hardware)
        else:
            self.detect()
        self.query_one("#next", Button).focus()

    @work(thread=True, exclusive=True, exit_on_error=False, group="hardware")
    def detect(self) -> None:
        self.post_message(HardwareReady.detect(self.wiz.home))

    def on_hardware_ready(self, msg: HardwareReady) -> None:
        self.wiz.hardware, self.wiz.busy = msg.hardware, msg.busy
        self.failed = ""
        self.refresh_bindings()
        self.show(msg.hardware)

    def worker_failed(self, group: str, text: str) -> None:
        if group != "hardware":
            return
        self.failed = text
        self.refresh_bindings()
        self.query_one("#hw", Static).update(
            f"[b red]Hardware detection failed[/b red]: {escape(text)}\n\n"
            "[b]->[/b] press [b]r[/b] to try again, or [b]Next[/b] to go on as a CPU-only machine "
            "(the memory and time estimates then assume no GPU)"
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return bool(self.failed) if action == "retry" else True

    def action_retry(self) -> None:
        if not self.failed:
            return
        self.failed = ""
        self.refresh_bindings()
        self.query_one("#hw", Static).update(DETECTING)
        self.detect()

    def show(self, hw) -> None:
        lines = [escape(x) for x in hw.summary()]
        lines += [""] + [f"[b]->[/b] {escape(x)}" for x in hw.advice()]
        self.query_one("#hw", Static).update("\n".join(lines))

    def can_continue(self) -> str | None:
        return None if self.wiz.hardware is not None else "still detecting the hardware"

    def action_next(self) -> None:
        if self.wiz.hardware is None and self.failed:
            from tunewiz.core.planning.hardware import Hardware

            self.wiz.hardware = Hardware()  # nothing detected: the CPU-only description the estimates fall back on
        super().action_next()
