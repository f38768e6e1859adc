"""Step 4, preset: how hard to train (conservative / balanced / aggressive), each card with its
predicted peak memory and time for this model, data and machine; Ctrl+A opens every setting; Ctrl+T
asks, then queues all three on the same data and held-out rows (core.sweep) and opens their ranking.

A setting edited under Ctrl+A is yours: picking another preset changes only the settings you did not
set (core.sweep.PRESET_KEYS that are not edited), and the chosen card names the ones kept. LoRA alpha is
2 x rank in every preset, so until you set it, it follows the rank (yours or the preset's).
"""

from __future__ import annotations

import copy

from rich.markup import escape
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import Input, Label, Static
from tunewiz.core.config import ConfigError, RunConfig, apply_overrides
from tunewiz.core.planning import presets
from tunewiz.core.training.sweep import PRESET_KEYS
from tunewiz.tui.figures import ADVANCED, HINTS, friendly, kept_line, preset_figures, preset_lines, sweep_question
from tunewiz.tui.messages import DataShaped
from tunewiz.tui.step_base import StepScreen
from tunewiz.tui.widgets import ConfirmScreen

SPLIT = {"per_device_batch_size", "gradient_accumulation_steps"}
"""Setting either fixes the batch split (auto_batch_split off): a preset change keeps that too."""


def field_id(key: str) -> str:
    return f"f-{key.replace('.', '-')}"


def same(a: str, b: str) -> bool:
    """Two field texts that mean the same value ('3' and '3.0', '2e-4' and '0.0002')."""
    try:
        return float(a) == float(b)
    except ValueError:
        return a.strip() == b.strip()


class PresetStep(StepScreen):
    STEP = "Preset"
    AUTO_FOCUS = "#next"  # Enter takes the chosen preset to the review (which starts nothing by itself)
    BINDINGS = [
        Binding("left", "pick(-1)", "Prev preset", show=False),
        Binding("right", "pick(1)", "Next preset", show=False),
        # priority: a field's own ctrl+a (go to start; Home does that too) must not keep the panel open
        Binding("ctrl+a", "advanced", "Advanced", priority=True),
        Binding("ctrl+t", "try_all", "Try all 3"),
    ]
    NAMES = list(presets.PRESETS)

    def body(self) -> ComposeResult:
        with Horizontal(id="cards"):
            for name in self.NAMES:
                yield Static("", id=f"card-{name}", classes="card")
        with Vertical(id="advanced"):
            # Above the fields (two lines, so the fields never move): what the focused field means and
            # the effective batch, or what is wrong; seen whichever field is in view.
            yield Static("", id="adv-error")
            with VerticalScroll(id="adv-fields", can_focus=False):
                for key, label in ADVANCED:
                    with Horizontal(classes="field"):
                        yield Label(label, classes="field-label")
                        yield Input(id=field_id(key), classes="field-input")

    def on_mount(self) -> None:
        self.approx = None  # the data's text approximation: the share of tokens that are trained
        self.before_advanced: Widget | None = None  # what had focus before Ctrl+A opened the fields
        self.field_error = ""  # what is wrong with the fields, said above them
        self.query_one("#advanced").display = False
        self.edits: dict[str, str] = {}  # field key -> the text you gave it, kept over any preset
        if self.wiz.cfg.preset in self.NAMES:
            # Settings that came in set (Back and Next again, a re-run's config) are yours as well.
            self.edits = {k: self.shown(k) for k, _ in ADVANCED if not same(self.shown(k), self.preset_text(k))}
        self.select(self.wiz.cfg.preset if self.wiz.cfg.preset in self.NAMES else "balanced", keep=True)
        if self.wiz.cfg.data.path:
            self.measure_data(self.wiz.cfg.data.path, self.wiz.cfg.data.max_seq_len)

    @work(thread=True, exclusive=True, exit_on_error=False, group="data-shape")
    def measure_data(self, path: str, max_seq_len: int) -> None:
        from tunewiz.core.data import dataset as data
        from tunewiz.core.planning import memory

        try:
            examples = data.load_for(self.wiz.cfg.data, path).examples
        except data.DataError:
            return
        self.post_message(DataShaped(memory.approx_data_shape(examples, max_seq_len)))

    def on_data_shaped(self, msg: DataShaped) -> None:
        self.approx = msg.shape
        self.show_cards()

    # -- presets and your edits ---------------------------------------------------------------------

    def training_as(self, name: str):
        """The training that picking preset `name` gives: its own values for what you did not set, yours
        (and everything no preset sets) as they are now."""
        t = copy.deepcopy(self.wiz.cfg.training)
        mine = presets.training_for(name)
        for key in PRESET_KEYS:
            if key in self.edits or (key == "auto_batch_split" and SPLIT & set(self.edits)):
                continue
            setattr(t, key, getattr(mine, key))
        self.follow_rank(t)
        return t

    def follow_rank(self, t) -> None:
        """LoRA alpha is 2 x rank in every preset: an alpha you did not set follows the rank."""
        if "lora_alpha" not in self.edits:
            from tunewiz.core.planning.planner import choose_lora_alpha

            t.lora_alpha = choose_lora_alpha(t.lora_r).value

    def sync_alpha(self) -> None:
        """The alpha field shows the alpha that follows the rank (filled, not an edit)."""
        field = self.query_one(f"#{field_id('lora_alpha')}", Input)
        if "lora_alpha" not in self.edits and not same(field.value, self.shown("lora_alpha")):
            with self.prevent(Input.Changed):
                field.value = self.shown("lora_alpha")

    def select(self, name: str, keep: bool = False) -> None:
        if not keep or self.wiz.cfg.preset != name:
            self.wiz.cfg.training = self.training_as(name)
            self.wiz.cfg.preset = name
        self.fill_fields()
        if self.apply_fields() is not None:
            self.show_cards()  # the error is said; the cards still follow the preset

    def edited(self) -> list[str]:
        """The fields you set yourself, in the fields' order."""
        return [k for k, _ in ADVANCED if k in self.edits]

    def show_cards(self) -> None:
        """Each preset as picking it would train (your edits kept), with its predicted peak memory and
        time for this model, method, data and machine; the chosen one names the settings it keeps."""
        cfg, hw = self.wiz.cfg, self.wiz.hardware
        shape = self.wiz.data_shape or getattr(self, "approx", None)
        edited = self.edited()
        for n in self.NAMES:
            p = presets.PRESETS[n]
            trial = copy.copy(cfg)
            trial.training = cfg.training if n == cfg.preset else self.training_as(n)
            peak, eta = preset_figures(trial, hw, shape, self.wiz.busy)
            card = self.query_one(f"#card-{n}", Static)
            card.set_class(n == cfg.preset, "selected")
            settings = preset_lines(trial.training, set(edited))
            last = p.suits.replace(" examples", " rows")
            if n == cfg.preset and edited:
                last = f"[yellow]{escape(kept_line(edited))}[/yellow]"
            card.update("\n".join([f"[b]{n}[/b]{'  <' if n == cfg.preset else ''}", *settings, last, peak, eta]))

    def shown(self, key: str) -> str:
        """The field text of `key`'s current value."""
        return self.text_of(self.wiz.cfg, key)

    def preset_text(self, key: str) -> str:
        """The field text of `key` as the chosen preset (and the defaults) give it, before any edit."""
        if key == "lora_alpha":  # the planner's rule (2 x rank), for the rank as it is now
            from tunewiz.core.planning.planner import choose_lora_alpha

            return str(choose_lora_alpha(self.wiz.cfg.training.lora_r).value)
        fresh = RunConfig(training=presets.training_for(self.wiz.cfg.preset))
        return self.text_of(fresh, key)

    @staticmethod
    def text_of(cfg: RunConfig, key: str) -> str:
        section, name = key.split(".") if "." in key else ("training", key)
        value = getattr(getattr(cfg, section), name)
        return f"{value:g}" if isinstance(value, float) else str(value)

    def fill_fields(self) -> None:
        """Every field from the config, but a field you edited keeps your text (even one not valid yet)."""
        with self.prevent(Input.Changed):  # filled here, not typed: not an edit
            for key, _ in ADVANCED:
                self.query_one(f"#{field_id(key)}", Input).value = self.edits.get(key, self.shown(key))

    def action_pick(self, delta: int) -> None:
        if isinstance(self.focused, Input):
            return
        i = (self.NAMES.index(self.wiz.cfg.preset) + delta) % len(self.NAMES)
        self.select(self.NAMES[i])

    # -- the advanced fields --------------------------------------------------------------------------

    def action_advanced(self) -> None:
        adv = self.query_one("#advanced")
        adv.display = not adv.display
        if self.field_error:  # a refusal on the bar points above only while the error is there
            self.update_refusal(self.refusal_for(self.field_error))
        if adv.display:
            self.before_advanced = self.focused
            self.show_hint()
            first = self.query_one(Input)
            first.focus(scroll_visible=False)
            self.query_one("#adv-fields").scroll_home(animate=False)
            self.call_after_refresh(first.scroll_visible, animate=False)  # once the panel has its size
            return
        back = self.before_advanced  # focus leaves the hidden fields: back where it was before Ctrl+A
        if back is None or not back.is_attached or adv in back.ancestors_with_self:
            back = self.query_one("#next")
        back.focus()

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        if isinstance(event.widget, Input) and event.widget.has_class("field-input"):
            event.widget.scroll_visible(animate=False)  # Tab to a field below the fold: it comes into view
        self.show_hint()

    def show_hint(self) -> None:
        """Above the fields: the error while a field is not valid, else what the focused field means."""
        if getattr(self, "field_error", ""):
            return
        focused = self.focused
        key = next((k for k, _ in ADVANCED if focused is not None and focused.id == field_id(k)), None)
        hint = escape(HINTS.get(key, "")) if key else "Tab: the next field"
        batch = f"effective batch {self.wiz.cfg.training.effective_batch}"
        self.query_one("#adv-error", Static).update(f"[dim]{hint}[/dim]\n{batch}  [dim](Ctrl+A: close)[/dim]")

    @on(Input.Changed, ".field-input")
    def _validate(self, event: Input.Changed) -> None:
        key = next(k for k, _ in ADVANCED if event.input.id == field_id(k))
        if same(event.value, self.preset_text(key)):
            self.edits.pop(key, None)  # back to what the preset gives: the preset decides it again
        else:
            self.edits[key] = event.value
        self.apply_fields()

    def apply_fields(self) -> str | None:
        trial = copy.deepcopy(self.wiz.cfg)
        overrides = []
        for key, _ in ADVANCED:
            value = self.query_one(f"#{field_id(key)}", Input).value.strip()
            if value == self.shown(key):
                continue  # only what was edited: an untouched batch split stays the plan's to choose
            overrides.append(f"{key if '.' in key else 'training.' + key}={value}")
        err = self.query_one("#adv-error", Static)
        try:
            apply_overrides(trial, overrides)
            self.follow_rank(trial.training)
            problems = [p for p in trial.problems() if "[data] path" not in p]
            if problems:
                raise ConfigError(problems)
        except ConfigError as exc:
            self.field_error = "; ".join(friendly(p) for p in exc.problems)
            err.update("[red]" + escape(self.field_error) + "[/red]")
            self.update_refusal(self.refusal_for(self.field_error))
            return self.field_error
        self.field_error = ""
        self.wiz.cfg.training, self.wiz.cfg.data, self.wiz.cfg.evaluation = (
            trial.training,
            trial.data,
            trial.evaluation,
        )
        self.sync_alpha()
        self.show_hint()
        self.update_refusal(None)  # fixed: the bar no longer says it was refused
        self.show_cards()  # the chosen card's memory and time follow the overrides
        return None

    def refusal_for(self, error: str) -> str:
        """What the bar says of a field that is not valid: a pointer while the fields (and the error above
        them) are open, the error itself while they are closed."""
        return "a setting is not valid (see above)" if self.query_one("#advanced").display else error

    def can_continue(self) -> str | None:
        error = self.apply_fields()
        return self.refusal_for(error) if error else None

    # -- try all three --------------------------------------------------------------------------------

    def action_try_all(self) -> None:
        """Ask, then queue conservative, balanced and aggressive with the settings edited here that no
        preset sets (core.sweep.configs): three full runs, one after another."""
        from tunewiz.core.training import sweep

        reason = self.can_continue() or next((p for p in self.wiz.cfg.problems()), None)
        if reason:
            self.refuse(reason)
            return
        cfg = copy.deepcopy(self.wiz.cfg)
        try:
            cfgs = sweep.configs(cfg)
        except ConfigError as exc:
            self.refuse("; ".join(exc.problems))
            return
        shape = self.wiz.data_shape or self.approx
        ignored = [k for k in self.edited() if k in PRESET_KEYS]
        kept = [k for k in self.edited() if k not in PRESET_KEYS]
        question = sweep_question(cfgs, self.wiz.hardware, shape, kept, ignored, self.wiz.busy)

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.app.queue_sweep(cfg)  # type: ignore[attr-defined]
            else:
                self.say("nothing queued", style="yellow")

        self.app.push_screen(ConfirmScreen(question, yes="Queue all 3", start=True), confirmed)
