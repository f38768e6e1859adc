"""Step 4, preset: how hard to train (conservative / balanced / aggressive), each card with its
predicted peak memory and time for this model, data and machine; Ctrl+A opens every setting; Ctrl+T
queues all three on the same data and held-out rows (core.sweep) and opens their ranking.
"""

from __future__ import annotations

import copy

from rich.markup import escape
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Input, Label, Static
from tunewiz.core import presets
from tunewiz.core.config import ConfigError, apply_overrides
from tunewiz.tui.figures import ADVANCED, friendly, preset_figures
from tunewiz.tui.messages import DataShaped
from tunewiz.tui.step_base import StepScreen


class PresetStep(StepScreen):
    STEP = "Preset"
    BINDINGS = [
        Binding("left", "pick(-1)", "Prev preset", show=False),
        Binding("right", "pick(1)", "Next preset", show=False),
        Binding("ctrl+a", "advanced", "Advanced"),
        Binding("ctrl+t", "try_all", "Try all 3"),
    ]
    NAMES = list(presets.PRESETS)

    def body(self) -> ComposeResult:
        with Horizontal(id="cards"):
            for name in self.NAMES:
                yield Static("", id=f"card-{name}", classes="card")
        with VerticalScroll(id="advanced"):
            for key, label in ADVANCED:
                with Horizontal(classes="field"):
                    yield Label(label, classes="field-label")
                    yield Input(id=f"f-{key.replace('.', '-')}", classes="field-input")
            yield Static("", id="adv-error")

    def on_mount(self) -> None:
        self.approx = None  # the data's text approximation: the share of tokens that are trained
        self.query_one("#advanced").display = False
        self.select(self.wiz.cfg.preset if self.wiz.cfg.preset in self.NAMES else "balanced", keep=True)
        if self.wiz.cfg.data.path:
            self.measure_data(self.wiz.cfg.data.path, self.wiz.cfg.data.max_seq_len)

    @work(thread=True, exclusive=True, exit_on_error=False, group="data-shape")
    def measure_data(self, path: str, max_seq_len: int) -> None:
        from tunewiz.core import data, memory

        try:
            examples = data.load(path).examples
        except data.DataError:
            return
        self.post_message(DataShaped(memory.approx_data_shape(examples, max_seq_len)))

    def on_data_shaped(self, msg: DataShaped) -> None:
        self.approx = msg.shape
        self.show_cards()

    def select(self, name: str, keep: bool = False) -> None:
        if not keep or self.wiz.cfg.preset != name:
            self.wiz.cfg.training = presets.training_for(name)
            self.wiz.cfg.preset = name
        self.show_cards()
        self.fill_fields()

    def show_cards(self) -> None:
        """Each preset with its predicted peak memory and time for this model, method, data and machine."""
        cfg, hw = self.wiz.cfg, self.wiz.hardware
        shape = self.wiz.data_shape or getattr(self, "approx", None)
        for n in self.NAMES:
            p = presets.PRESETS[n]
            trial = copy.copy(cfg)  # the chosen preset as edited; the others as they come
            trial.training = cfg.training if n == cfg.preset else presets.training_for(n)
            peak, eta = preset_figures(trial, hw, shape)
            card = self.query_one(f"#card-{n}", Static)
            card.set_class(n == cfg.preset, "selected")
            card.update(
                f"[b]{n}[/b]{'  <' if n == cfg.preset else ''}\nrank {p.lora_r}, lr {p.learning_rate:g}\n"
                f"{p.num_epochs} epochs, batch {p.effective_batch}\n{p.suits.replace(' examples', ' rows')}\n"
                f"{peak}\n{eta}"
            )

    def shown(self, key: str) -> str:
        """The field text of `key`'s current value."""
        section, name = key.split(".") if "." in key else ("training", key)
        value = getattr(getattr(self.wiz.cfg, section), name)
        return f"{value:g}" if isinstance(value, float) else str(value)

    def fill_fields(self) -> None:
        for key, _ in ADVANCED:
            self.query_one(f"#f-{key.replace('.', '-')}", Input).value = self.shown(key)

    def action_pick(self, delta: int) -> None:
        if isinstance(self.focused, Input):
            return
        i = (self.NAMES.index(self.wiz.cfg.preset) + delta) % len(self.NAMES)
        self.select(self.NAMES[i])

    def action_advanced(self) -> None:
        adv = self.query_one("#advanced")
        adv.display = not adv.display
        if adv.display:
            self.query_one(Input).focus()

    @on(Input.Changed, ".field-input")
    def _validate(self, event: Input.Changed) -> None:
        self.apply_fields()

    def apply_fields(self) -> str | None:
        trial = copy.deepcopy(self.wiz.cfg)
        overrides = []
        for key, _ in ADVANCED:
            value = self.query_one(f"#f-{key.replace('.', '-')}", Input).value.strip()
            if value == self.shown(key):
                continue  # only what was edited: an untouched batch split stays the plan's to choose
            overrides.append(f"{key if '.' in key else 'training.' + key}={value}")
        err = self.query_one("#adv-error", Static)
        try:
            apply_overrides(trial, overrides)
            problems = [p for p in trial.problems() if "[data] path" not in p]
            if problems:
                raise ConfigError(problems)
        except ConfigError as exc:
            problems = [friendly(p) for p in exc.problems]
            err.update("[red]" + escape("; ".join(problems)) + "[/red]")
            return "; ".join(problems)
        err.update(f"effective batch {trial.training.effective_batch}")
        self.wiz.cfg.training, self.wiz.cfg.data, self.wiz.cfg.evaluation = (
            trial.training,
            trial.data,
            trial.evaluation,
        )
        self.show_cards()  # the chosen card's memory and time follow the overrides
        return None

    def can_continue(self) -> str | None:
        return self.apply_fields()

    def action_try_all(self) -> None:
        """Queue conservative, balanced and aggressive with the settings edited here that no preset sets."""
        reason = self.apply_fields() or next((p for p in self.wiz.cfg.problems()), None)
        if reason:
            self.say(reason)
            self.notify(reason, severity="error")
            return
        self.app.queue_sweep(self.wiz.cfg)  # type: ignore[attr-defined]
