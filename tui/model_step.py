"""Step 2, model: the catalog ranked by what fits this machine (core.planner.recommend), the bundled
model first, with LoRA or QLoRA; or a model directory / hub id typed in. Next downloads a hub model
that is not on this machine yet, in a worker, before the data step needs its tokenizer.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Input, OptionList, RadioButton, RadioSet, Static
from textual.widgets.option_list import Option
from tunewiz.core.models.resolve import DEFAULT_MODEL
from tunewiz.core.planning.planner import catalog_id
from tunewiz.tui.figures import MODEL_HEAD, memory_label, model_rows
from tunewiz.tui.messages import DataShaped, HardwareReady, ModelFetched, ModelsOnDisk
from tunewiz.tui.step_base import StepScreen


class ModelStep(StepScreen):
    """The catalog ranked by what fits this machine (core.planner.recommend), the bundled model first."""

    STEP = "Model"

    def body(self) -> ComposeResult:
        yield Static("", id="model-head")
        yield OptionList(id="models")
        with Horizontal(id="model-extra"):
            yield Input(placeholder="...or a model directory / hub id, Enter", id="custom-model")
            with RadioSet(id="method"):
                yield RadioButton("LoRA", value=self.wiz.cfg.model.method == "lora", id="lora")
                yield RadioButton("QLoRA (4-bit)", value=self.wiz.cfg.model.method == "qlora", id="qlora")
        yield Static("", id="model-choice")

    def on_mount(self) -> None:
        self.recs: list = []
        self.rows: list[tuple[str, str, Text]] = []
        self.local: dict[str, bool] | None = None
        self.shape = None
        self.fetching = ""
        self.problem: tuple[str, str] | None = None  # (model id, why it cannot be used): said while it is chosen
        models = self.query_one("#models", OptionList)
        models.add_option(Option(f"{DEFAULT_MODEL}  (ranking the catalog for this machine...)", id=DEFAULT_MODEL))
        models.highlighted = 0
        models.focus()
        if self.wiz.hardware is None:
            self.detect()
        else:
            self.rank(self.wiz.hardware)
        self.check_local()
        if self.wiz.cfg.data.path:
            self.measure_data(self.wiz.cfg.data.path)
        self.refresh_choice()

    def on_screen_resume(self) -> None:
        """Back from the data step: plan the rows again for the data now measured."""
        if self.wiz.hardware is not None and self.recs:
            self.rank(self.wiz.hardware)

    @work(thread=True, exclusive=True, exit_on_error=False, group="hardware")
    def detect(self) -> None:
        self.post_message(HardwareReady.detect(self.wiz.home))

    def on_hardware_ready(self, msg: HardwareReady) -> None:
        self.wiz.hardware, self.wiz.busy = msg.hardware, msg.busy
        self.rank(msg.hardware)

    @work(thread=True, exclusive=True, exit_on_error=False, group="models-on-disk")
    def check_local(self) -> None:
        from tunewiz.core.models import catalog
        from tunewiz.core.models import resolve as models

        self.post_message(ModelsOnDisk({catalog_id(m): models.on_this_machine(catalog_id(m)) for m in catalog.MODELS}))

    def on_models_on_disk(self, msg: ModelsOnDisk) -> None:
        self.local = msg.local
        self.show_rows()

    @work(thread=True, exclusive=True, exit_on_error=False, group="data-shape")
    def measure_data(self, path: str) -> None:
        """The data's longest example and trained share, from its text (no tokenizer needed yet)."""
        from tunewiz.core.data import dataset as data
        from tunewiz.core.planning import memory

        try:
            examples = data.load_for(self.wiz.cfg.data, path).examples
        except data.DataError:
            return  # the data step shows what is wrong; the list keeps the worst case
        self.post_message(DataShaped(memory.approx_data_shape(examples, self.wiz.cfg.data.max_seq_len)))

    def on_data_shaped(self, msg: DataShaped) -> None:
        self.shape = msg.shape
        if self.wiz.hardware is not None:
            self.rank(self.wiz.hardware)

    def seq_len(self) -> tuple[int, str]:
        """Tokens per example the peaks are for, and where that figure comes from."""
        limit = self.wiz.cfg.data.max_seq_len
        if self.wiz.data_shape is not None:
            return min(self.wiz.data_shape.longest, limit), "the longest"
        if self.shape is not None:
            return self.shape.longest, "the longest, approx."
        return limit, "max_seq_len"

    def rank(self, hw) -> None:
        from tunewiz.core.planning import planner

        shape = self.wiz.data_shape or self.shape  # tokenized by the data step, else from the text
        self.recs = planner.recommend(self.wiz.cfg, hw, shape=shape, busy=self.wiz.busy)
        # What the bars are a share of: the memory of the device the plans chose (the freest GPU no other run uses).
        self.available_mb = self.recs[0].plan.available_mb if self.recs else 0.0
        head = MODEL_HEAD.format(avail="of " + memory_label(hw, self.available_mb))
        self.query_one("#model-head", Static).update(Text(" " + head, style="bold"))
        self.show_rows()

    def show_rows(self) -> None:
        if not self.recs:
            return
        self.rows = model_rows(self.recs, self.available_mb, self.local)
        box = self.query_one("#models", OptionList)
        box.clear_options()
        box.add_options([Option(row, id=f"{mid}|{method}") for mid, method, row in self.rows])
        box.highlighted = self.row_index(self.wiz.cfg.model.id, self.wiz.cfg.model.method)
        self.refresh_choice()

    def row_index(self, model_id: str, method: str) -> int | None:
        for i, (mid, m, _) in enumerate(self.rows):
            if (mid, m) == (model_id, method):
                return i
        return None

    def rec_for(self, model_id: str, method: str):
        i = self.row_index(model_id, method)
        if i is None:
            return None
        mid, m, _ = self.rows[i]
        return next(r for r in self.recs if (catalog_id(r.spec), r.method) == (mid, m))

    def refresh_choice(self) -> None:
        """The chosen model's line, and why it cannot be used while it is the one chosen: a problem found
        for another model (and the bar's "cannot use this model") goes once another is picked."""
        c = self.wiz.cfg.model
        lines = [f"Selected: [b]{escape(c.id)}[/b] with {'QLoRA' if c.method == 'qlora' else 'LoRA'}"]
        r = self.rec_for(c.id, c.method)
        problem = self.problem[1] if self.problem and self.problem[0] == c.id else ""
        if not problem:
            self.problem = None
            self.update_refusal(f"still getting {self.fetching}" if self.fetching else None)
        if problem:
            lines.append(f"[red]{escape(problem)}[/red]")
        elif self.fetching:
            lines.append(f"[yellow]getting {escape(self.fetching)} from the Hugging Face hub...[/yellow]")
        elif r is not None:
            from tunewiz.core.planning.memory import gib

            lines[0] += f": {gib(r.peak_mb)}, " + ("fits" if r.fits else "[red]does not fit[/red]")
            seq, why = self.seq_len()
            speed = f", ~{r.tokens_per_s:,.0f} tok/s" if r.tokens_per_s else ""
            lines.append(f"[dim]{self.wiz.cfg.preset} preset, {seq} tokens per example ({why}){speed}[/dim]")
            if self.local is not None and not r.spec.bundled and not self.local.get(c.id):
                lines[1] = "[yellow]not on this machine: Next downloads it (needs internet)[/yellow]"
        self.query_one("#model-choice", Static).update("\n".join(lines))

    @on(OptionList.OptionHighlighted, "#models")
    def _picked(self, event: OptionList.OptionHighlighted) -> None:
        mid, _, method = (event.option.id or DEFAULT_MODEL).partition("|")
        method = method or self.wiz.cfg.model.method
        if (mid, method) == (self.wiz.cfg.model.id, self.wiz.cfg.model.method):
            return
        self.wiz.cfg.model.id, self.wiz.cfg.model.method = mid, method
        with self.prevent(RadioSet.Changed):  # the row set the method; only a user's change re-highlights
            self.query_one(f"#{method}", RadioButton).value = True
        self.refresh_choice()

    @on(OptionList.OptionSelected, "#models")
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self._picked(event)  # type: ignore[arg-type]
        self.action_next()

    @on(Input.Submitted, "#custom-model")
    def _custom(self, event: Input.Submitted) -> None:
        from tunewiz.core.models.catalog import canonical_id

        if event.value.strip():
            self.wiz.cfg.model.id = canonical_id(event.value)
            self.query_one("#models", OptionList).highlighted = None
            self.refresh_choice()

    @on(RadioSet.Changed, "#method")
    def _method(self, event: RadioSet.Changed) -> None:
        self.wiz.cfg.model.method = event.pressed.id or "lora"
        i = self.row_index(self.wiz.cfg.model.id, self.wiz.cfg.model.method)
        box = self.query_one("#models", OptionList)
        if i is not None and box.highlighted != i:
            box.highlighted = i
        self.refresh_choice()

    def can_continue(self) -> str | None:
        from tunewiz.core.models import resolve as models

        if self.fetching:
            return f"still getting {self.fetching}"
        try:
            models.resolve(self.wiz.cfg.model.id, self.wiz.home, prepare=False)
        except models.ModelError as exc:
            return str(exc)
        return None

    def cannot_use(self, model_id: str, reason: str) -> None:
        """Why `model_id` cannot be used, in full above the buttons, and a pointer to it on the bar."""
        self.problem = (model_id, reason)
        self.refresh_choice()
        self.refuse("cannot use this model (see above)")

    def action_next(self) -> None:
        if self.fetching:
            self.refuse(f"still getting {self.fetching}")
            return
        reason = self.can_continue()
        if reason:
            self.cannot_use(self.wiz.cfg.model.id, reason)
            return
        mid = self.wiz.cfg.model.id
        self.say("", style="")
        if not mid.startswith("bundled:") and not Path(mid).expanduser().is_dir() and not (self.local or {}).get(mid):
            self.fetching = mid  # a hub id: download it now, so the data step can load its tokenizer
            self.refresh_choice()
            self.fetch(mid)
            return
        self.wiz.next_step(type(self))

    @work(thread=True, exclusive=True, exit_on_error=False, group="fetch-model")
    def fetch(self, model_id: str) -> None:
        from tunewiz.core.models import resolve as models

        try:
            models.resolve(model_id, self.wiz.home, prepare=True)
        except models.ModelError as exc:
            self.post_message(ModelFetched(model_id, str(exc)))
            return
        self.post_message(ModelFetched(model_id))

    def worker_failed(self, group: str, text: str) -> None:
        if group == "hardware":  # the hardware step had nothing either: its CPU-only fallback
            from tunewiz.core.planning.hardware import Hardware

            self.wiz.hardware = Hardware()
            self.rank(self.wiz.hardware)
        elif group == "models-on-disk":  # not known: each hub model is offered as a download
            self.local = {}
            self.show_rows()
        elif group == "fetch-model":
            self.on_model_fetched(ModelFetched(self.fetching, error=text))

    def on_model_fetched(self, msg: ModelFetched) -> None:
        self.fetching = ""
        if msg.error:
            self.cannot_use(msg.model_id, msg.error)
            return
        self.local = {**(self.local or {}), msg.model_id: True}
        self.show_rows()
        if msg.model_id == self.wiz.cfg.model.id and self.is_current:
            self.wiz.next_step(type(self))
