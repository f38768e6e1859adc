"""The wizard's steps: hardware, model, data, preset, review. Each explains itself in plain words.

Every step reads and writes the app's RunConfig (the wizard's answers live in
that plain dataclass, not in widgets). Slow work (torch import, tokenizer,
data rendering) runs in thread workers that post messages back.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.syntax import Syntax
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import (
    Button,
    DirectoryTree,
    Footer,
    Input,
    Label,
    OptionList,
    RadioButton,
    RadioSet,
    Static,
)
from textual.widgets.option_list import Option
from tunewiz.core import presets
from tunewiz.core.config import ConfigError, apply_overrides
from tunewiz.core.models import DEFAULT_MODEL
from tunewiz.tui.messages import DataReady, DataShaped, HardwareReady, ModelFetched, ModelsOnDisk

if TYPE_CHECKING:
    from tunewiz.tui.app import TunewizApp

# One short paragraph on the screen (fits 80x24); the longer help is behind F1.
INTRO = {
    "Hardware": "What this machine can train. The GPU's memory decides which models and methods fit; "
    "without a GPU only very small models train in reasonable time.",
    "Model": "Pick the model to fine-tune. Fine-tuning changes behaviour (format, tone, a narrow task) more "
    "than it adds facts. LoRA trains small adapters; QLoRA also stores the model in 4 bits.",
    "Data": "Your examples, exactly as the model will see them. Highlighted tokens are the ones it learns to "
    "write; 10% are held out to compare with the base model.",
    "Preset": "How hard to train. Balanced suits most datasets; left/right to choose, Ctrl+A to change any "
    "setting. Watch the held-out loss: rising while training loss falls means overfitting.",
    "Review": "The record that will be written (run.toml, also a config to repeat the run). Training runs "
    "in its own process: detach or lose the connection and it carries on.",
}

HELP = {
    "Hardware": (
        "tunewiz looks at your GPU, CPU, memory and disk first, because they decide which models and "
        "methods fit. Rules of thumb: 8 GB of GPU memory runs QLoRA (4-bit) on models up to about 7B; "
        "16 GB runs 7B comfortably; 24 GB runs 13B with LoRA. Without a GPU only very small models, such "
        "as the bundled SmolLM2-135M, train in reasonable time."
    ),
    "Model": (
        "Fine-tuning changes behaviour - style, tone, a fixed output format, a narrow task - more "
        "reliably than it adds facts; to answer from documents, retrieval (RAG) is usually better, and "
        "for a simple format change try prompting first. LoRA trains small adapter matrices beside the "
        "frozen model (well under 1% of the parameters); QLoRA also stores the base model in 4 bits, "
        "about 4x less memory for a small quality cost. The list ranks the catalog for this machine: "
        "predicted peak memory for the balanced preset, a bar of the memory available, and whether it fits "
        "with 12% to spare; `tunewiz fit --model NAME` explains one estimate, `tunewiz probe` measures it."
    ),
    "Data": (
        "Quality beats quantity: below ~200 examples a model struggles to learn a pattern reliably; "
        "500-2,000 good examples is the sweet spot. 10% is held out to compare the fine-tuned model with "
        "its base on examples it never saw. The preview shows each example exactly as the model sees it, "
        "after its chat template; highlighted tokens are the ones it is trained to write.\n\n"
        "The list under the summary is what the checker found: E errors (they block Next: bad JSON, unknown "
        "roles, a conversation the template rejects), W warnings (duplicates, leakage into the held-out "
        "rows, examples cut by max_seq_len) and I notes. Tab to it and press Enter to see the row. "
        "`tunewiz lint FILE` prints the same from the command line."
    ),
    "Preset": (
        "The presets trade speed of learning against the risk of overdoing it. LoRA rank is the adapter's "
        "capacity: 8-16 suits most tasks, 64 only hard or stylistic targets. Watch the loss: it should "
        "fall steadily; if the held-out loss rises while the training loss falls, the model is "
        "overfitting - use fewer epochs (3-5 is usually enough for small sets)."
    ),
    "Review": (
        "This is the run record that will be written (run.toml). It is also a config: "
        "`tunewiz train --config run.toml` repeats the run. Training runs in its own process: you can "
        "detach, close the terminal or lose the SSH connection, and it carries on."
    ),
}


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 70; max-width: 95%; height: auto; max-height: 90%;
        border: thick $accent; background: $surface; padding: 1 2; }
    """

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text, self.text = title, text

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"[b]{escape(self.title_text)}[/b]")
            yield Static(self.text)
            yield Label("[dim]Esc closes this help[/dim]")


class StepScreen(Screen):
    """A wizard step: title, one-paragraph explanation, body, Back / Next."""

    STEP = ""
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+n", "next", "Next"),
        Binding("f1", "help", "Help"),
        Binding("ctrl+q", "app.quit", "Quit"),
    ]

    @property
    def wiz(self) -> TunewizApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        n = self.wiz.STEPS.index(type(self)) + 1 if type(self) in self.wiz.STEPS else 0
        yield Label(f"[b]Step {n} of {len(self.wiz.STEPS)}: {self.STEP}[/b]  [dim](F1 help)[/dim]", id="step-title")
        yield Static(INTRO.get(self.STEP, ""), id="explain")
        with Vertical(id="body"):
            yield from self.body()
        with Horizontal(id="nav"):
            yield Button("Back", id="back")
            yield Label("", id="nav-msg")
            yield Button("Next", id="next", variant="primary")
        yield Footer()

    def body(self) -> ComposeResult:
        yield from ()

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self.STEP, HELP.get(self.STEP, "")))

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()

    def can_continue(self) -> str | None:
        """None when Next may proceed, else the reason shown to the user."""
        return None

    def action_next(self) -> None:
        reason = self.can_continue()
        if reason:
            self.query_one("#nav-msg", Label).update(f"[red]{escape(reason)}[/red]")
            self.notify(reason, severity="error")
            return
        self.wiz.next_step(type(self))

    @on(Button.Pressed, "#next")
    def _next(self) -> None:
        self.action_next()

    @on(Button.Pressed, "#back")
    def _back(self) -> None:
        self.action_back()


# -- 1. hardware ---------------------------------------------------------------------


class HardwareStep(StepScreen):
    STEP = "Hardware"
    BINDINGS = [Binding("enter", "next", "Next", show=False)]

    def body(self) -> ComposeResult:
        yield Static("Detecting GPUs, CPU, memory and disk...", id="hw")

    def on_mount(self) -> None:
        if self.wiz.hardware is not None:
            self.show(self.wiz.hardware)
        else:
            self.detect()
        self.query_one("#next", Button).focus()

    @work(thread=True, exclusive=True, exit_on_error=False, group="hardware")
    def detect(self) -> None:
        from tunewiz.core import hardware

        self.post_message(HardwareReady(hardware.detect(self.wiz.home)))

    def on_hardware_ready(self, msg: HardwareReady) -> None:
        self.wiz.hardware = msg.hardware
        self.show(msg.hardware)

    def show(self, hw) -> None:
        lines = [escape(x) for x in hw.summary()]
        lines += [""] + [f"[b]->[/b] {escape(x)}" for x in hw.advice()]
        self.query_one("#hw", Static).update("\n".join(lines))

    def can_continue(self) -> str | None:
        return None if self.wiz.hardware is not None else "still detecting the hardware"


# -- 2. model ------------------------------------------------------------------------

# Licences as a person reads them, at most 10 columns.
LICENCES = {
    "apache-2.0": "Apache-2.0",
    "qwen-research": "Qwen Rsrch",
    "mit": "MIT",
    "gemma": "Gemma",
    "llama3.1": "Llama 3.1",
    "llama3.2": "Llama 3.2",
}
BAR_WIDTH = 10
# Columns of a model row: 72 at most (the list's border and scrollbar take the rest of the 78 the body has).
MODEL_HEAD = f"{'model':<12}{'size':>5} {'licence':<10} {'method':<6}{'peak':>6} {{avail:<15}} {'where'}"


def memory_bar(used_mb: float, available_mb: float, width: int = BAR_WIDTH) -> str:
    """The share of the available memory a run needs; full when it does not fit.

    >>> memory_bar(512, 1024), memory_bar(4096, 1024), memory_bar(1, 1024)
    ('█████░░░░░', '██████████', '█░░░░░░░░░')
    """
    filled = min(width, max(1, round(used_mb / max(available_mb, 1e-9) * width)))
    return "█" * filled + "░" * (width - filled)


def size_label(params: float) -> str:
    """'135M', '1.5B'."""
    return f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.0f}M"


def catalog_id(spec) -> str:
    """The id a catalog model is trained from: `bundled:NAME` when it ships with tunewiz, else its hub id."""
    return spec.bundled or spec.hub_id


def model_rows(recs, available_mb: float, local: dict[str, bool] | None) -> list[tuple[str, str, Text]]:
    """(model id, method, row) for each recommendation, the bundled model first (the only one offline).

    `local`: which models are on this machine (None while still checking).
    """
    rows = []
    for r in sorted(recs, key=lambda r: not r.spec.bundled):  # stable: keeps the ranking otherwise
        mid = catalog_id(r.spec)
        if r.spec.bundled:
            where, style = "bundled", "green"
        elif local is None:
            where, style = "...", "dim"
        else:
            where, style = ("on disk", "green") if local.get(mid) else ("needs download", "yellow")
        lic = LICENCES.get(r.spec.license, r.spec.license)[:10]
        row = Text(f"{r.spec.key:<12}{size_label(r.spec.params):>5} {lic:<10} ")
        row.append(f"{'QLoRA' if r.method == 'qlora' else 'LoRA':<6}{r.peak_mb / 1024:>5.1f}G ")
        row.append(memory_bar(r.peak_mb, available_mb), style="green" if r.fits else "red")
        row.append(f" {'fits' if r.fits else 'no':<4} ", style="" if r.fits else "red")
        row.append(where, style=style)
        rows.append((mid, r.method, row))
    return rows


def memory_label(hw) -> str:
    """'22.0 GiB RAM' or '23.6 GiB GPU': what the memory bars are a share of."""
    gpu = getattr(hw, "best_gpu", None)
    return f"{gpu.free_gb:.1f} GiB GPU" if gpu is not None else f"{hw.ram_available_gb:.1f} GiB RAM"


class ModelStep(StepScreen):
    """The catalog ranked by what fits this machine (core.memory.recommend), the bundled model first."""

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

    @work(thread=True, exclusive=True, exit_on_error=False, group="hardware")
    def detect(self) -> None:
        from tunewiz.core import hardware

        self.post_message(HardwareReady(hardware.detect(self.wiz.home)))

    def on_hardware_ready(self, msg: HardwareReady) -> None:
        self.wiz.hardware = msg.hardware
        self.rank(msg.hardware)

    @work(thread=True, exclusive=True, exit_on_error=False, group="models-on-disk")
    def check_local(self) -> None:
        from tunewiz.core import catalog, models

        self.post_message(ModelsOnDisk({catalog_id(m): models.on_this_machine(catalog_id(m)) for m in catalog.MODELS}))

    def on_models_on_disk(self, msg: ModelsOnDisk) -> None:
        self.local = msg.local
        self.show_rows()

    @work(thread=True, exclusive=True, exit_on_error=False, group="data-shape")
    def measure_data(self, path: str) -> None:
        """The data's longest example and trained share, from its text (no tokenizer needed yet)."""
        from tunewiz.core import data, memory

        try:
            examples = data.load(path).examples
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
        if self.wiz.data_summary.get("tokens_max"):
            return min(self.wiz.data_summary["tokens_max"], limit), "the longest"
        if self.shape is not None:
            return self.shape.longest, "the longest, approx."
        return limit, "max_seq_len"

    def rank(self, hw) -> None:
        from tunewiz.core import memory

        seq, _ = self.seq_len()
        trained = self.shape.trained_fraction if self.shape is not None else 1.0
        self.recs = memory.recommend(hw, seq_len=seq, trained_fraction=trained)
        self.available_mb = memory.available_mb(hw, "cuda" if hw.best_gpu is not None else "cpu")
        head = MODEL_HEAD.format(avail="of " + memory_label(hw))
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

    def refresh_choice(self, problem: str = "") -> None:
        c = self.wiz.cfg.model
        lines = [f"Selected: [b]{escape(c.id)}[/b] with {'QLoRA' if c.method == 'qlora' else 'LoRA'}"]
        r = self.rec_for(c.id, c.method)
        if problem:
            lines.append(f"[red]{escape(problem)}[/red]")
        elif self.fetching:
            lines.append(f"[yellow]getting {escape(self.fetching)} from the Hugging Face hub...[/yellow]")
        elif r is not None:
            from tunewiz.core.memory import gib

            lines[0] += f": {gib(r.peak_mb)}, " + ("fits" if r.fits else "[red]does not fit[/red]")
            seq, why = self.seq_len()
            lines.append(f"[dim]balanced preset, {seq} tokens per example ({why}), ~{r.tokens_per_s:,.0f} tok/s[/dim]")
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
        if event.value.strip():
            self.wiz.cfg.model.id = event.value.strip()
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
        from tunewiz.core import models

        if self.fetching:
            return f"still getting {self.fetching}"
        try:
            models.resolve(self.wiz.cfg.model.id, self.wiz.home, prepare=False)
        except models.ModelError as exc:
            return str(exc)
        return None

    def action_next(self) -> None:
        reason = self.can_continue()
        if reason:  # said in full above the buttons (a toast would cover it)
            self.refresh_choice(reason)
            self.query_one("#nav-msg", Label).update("[red]cannot use this model (see above)[/red]")
            return
        mid = self.wiz.cfg.model.id
        if not mid.startswith("bundled:") and not Path(mid).expanduser().is_dir() and not (self.local or {}).get(mid):
            self.fetching = mid  # a hub id: download it now, so the data step can load its tokenizer
            self.query_one("#nav-msg", Label).update("")
            self.refresh_choice()
            self.fetch(mid)
            return
        self.query_one("#nav-msg", Label).update("")
        self.wiz.next_step(type(self))

    @work(thread=True, exclusive=True, exit_on_error=False, group="fetch-model")
    def fetch(self, model_id: str) -> None:
        from tunewiz.core import models

        try:
            models.resolve(model_id, self.wiz.home, prepare=True)
        except models.ModelError as exc:
            self.post_message(ModelFetched(model_id, str(exc)))
            return
        self.post_message(ModelFetched(model_id))

    def on_model_fetched(self, msg: ModelFetched) -> None:
        self.fetching = ""
        if msg.error:
            self.refresh_choice(msg.error)
            self.query_one("#nav-msg", Label).update("[red]cannot use this model (see above)[/red]")
            return
        self.local = {**(self.local or {}), msg.model_id: True}
        self.show_rows()
        if msg.model_id == self.wiz.cfg.model.id and self.is_current:
            self.wiz.next_step(type(self))


# -- 3. data -------------------------------------------------------------------------


def preview_text(rendered, limit: int = 4000) -> Text:
    """The rendered example with the trained tokens highlighted and the truncated tail struck out.

    Built from ``Rendered.segments``: the same mask the trainer's labels come from.
    """
    styles = {"trained": "black on green", "cut": "dim strike", "prompt": ""}
    text = Text()
    for piece, kind in rendered.segments(limit):
        text.append(piece, style=styles[kind])
    return text


SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


class DataStep(StepScreen):
    STEP = "Data"
    BINDINGS = [
        Binding("ctrl+b", "browse", "Browse files"),
        Binding("right_square_bracket,ctrl+right", "example(1)", "Examples", key_display="[ ]"),
        Binding("left_square_bracket,ctrl+left", "example(-1)", "Prev example", show=False),
    ]

    def body(self) -> ComposeResult:
        yield Input(
            value=self.wiz.cfg.data.path,
            placeholder="path to .jsonl .json .csv .tsv .parquet or a datasets folder, Enter to load",
            id="data-path",
        )
        yield DirectoryTree(str(Path(self.wiz.cfg.data.path or ".").expanduser().resolve().parent), id="tree")
        yield Static("", id="data-summary")
        yield OptionList(id="findings")
        with VerticalScroll(id="preview-box"):
            yield Static("", id="preview")

    def on_mount(self) -> None:
        self.report = None
        self.tokenizer = None
        self.examples: list = []
        self.index = 0
        self.ready = False
        self.query_one("#tree").display = False
        self.query_one("#findings").display = False
        if self.wiz.cfg.data.path:
            self.load(self.wiz.cfg.data.path)
        self.query_one("#data-path", Input).focus()

    def action_browse(self) -> None:
        tree = self.query_one("#tree")
        tree.display = not tree.display
        if tree.display:
            tree.focus()

    @on(DirectoryTree.FileSelected)
    def _file(self, event: DirectoryTree.FileSelected) -> None:
        self.query_one("#data-path", Input).value = str(event.path)
        self.query_one("#tree").display = False
        self.load(str(event.path))

    @on(Input.Submitted, "#data-path")
    def _submitted(self, event: Input.Submitted) -> None:
        self.load(event.value)

    def load(self, path: str) -> None:
        self.ready = False
        self.wiz.cfg.data.path = str(Path(path).expanduser().resolve()) if path else ""
        self.query_one("#data-summary", Static).update("Checking the data and rendering it with the chat template...")
        self.query_one("#preview", Static).update("")
        self.query_one("#findings").display = False
        cfg = self.wiz.cfg
        self.inspect(cfg.data.path, cfg.model.id, cfg.data.max_seq_len, cfg.data.eval_path or None)

    @work(thread=True, exclusive=True, exit_on_error=False, group="data")
    def inspect(self, path: str, model_id: str, max_seq_len: int, eval_path: str | None) -> None:
        from tunewiz.core import data, lint

        tok, template_error = None, ""
        try:
            tok = lint.tokenizer_for(model_id, self.wiz.home, self.wiz.cfg.model.trust_remote_code)
        except Exception as exc:  # noqa: BLE001 - shown to the user; the structure is still checked
            template_error = f"{type(exc).__name__}: {exc}"
        try:
            report = lint.lint(
                path,
                tok,
                max_seq_len=max_seq_len,
                eval_path=eval_path,
                eval_fraction=self.wiz.cfg.data.eval_fraction,
                seed=self.wiz.cfg.data.split_seed,
            )
        except data.DataError as exc:
            self.post_message(DataReady({}, problems=exc.problems))
            return
        summary = {
            "rows": len(report.examples),
            "formats": report.formats,
            "sha256": report.sha256,
            "train": report.train_rows,
            "eval": report.eval_rows,
            **report.by_severity(),
        }
        t = report.tokens
        if t:
            summary.update(
                tokens_min=t["min"],
                tokens_median=t["median"],
                tokens_p95=t["p95"],
                tokens_max=t["max"],
                truncated=t["truncated"],
                train_tokens=t["total"] * report.train_rows // max(t["counted"], 1),
            )
        if template_error:
            summary["template_error"] = template_error
        self.post_message(DataReady(summary, report=report, tokenizer=tok))

    def on_data_ready(self, msg: DataReady) -> None:
        box = self.query_one("#data-summary", Static)
        if msg.problems:  # the file itself could not be read
            shown = "\n".join(f"[red]x[/red] {escape(p)}" for p in msg.problems[:4])
            box.update(f"[b red]{len(msg.problems)} problem(s) - fix them to continue[/b red]\n{shown}")
            return
        s, report = msg.summary, msg.report
        self.report, self.tokenizer = report, msg.tokenizer
        self.wiz.data_summary = s
        fmt = ", ".join(f"{k} {v}" for k, v in s["formats"].items()) or "no usable rows"
        lines = [f"[b]{s['rows']}[/b] examples ({escape(fmt)}): {s['train']} train / {s['eval']} held out"]
        if "tokens_max" in s:
            lines.append(
                f"tokens: min {s['tokens_min']}, median {s['tokens_median']}, p95 {s['tokens_p95']}, "
                f"max {s['tokens_max']} (limit {self.wiz.cfg.data.max_seq_len}); {s['truncated']} truncated"
            )
        if s.get("template_error"):
            lines.append(f"[red]cannot load the model's tokenizer: {escape(s['template_error'])}[/red]")
        errors = report.errors
        first = errors[0] if errors else None
        hint = " [dim](Tab: list, Enter: show row)[/dim]" if report.findings else ""
        if first:
            where = f"{Path(first.file).name}:{first.line}" if first.line else Path(first.file).name
            lines.append(f"[b red]{len(errors)} problem(s) to fix[/b red], first at {escape(where)}{hint}")
        else:
            lines.append(f"[green]no errors[/green]; {s['warning']} warning(s), {s['info']} note(s){hint}")
        box.update("\n".join(lines))
        self.show_findings(report)
        self.examples = report.examples
        self.index = 0
        self.ready = report.ok and "template_error" not in s
        self.show_example()
        if isinstance(self.focused, Input) and self.examples:
            # Off the path field, so [ and ] browse the examples instead of typing into it.
            self.query_one("#findings" if report.errors else "#preview-box").focus()

    def show_findings(self, report) -> None:
        box = self.query_one("#findings", OptionList)
        box.clear_options()
        name = Path(str(report.path)).name
        options = []
        from tunewiz.core.data import SEVERITIES

        order = sorted(range(len(report.findings)), key=lambda i: SEVERITIES.index(report.findings[i].severity))
        for i in order:  # errors first, then warnings, then notes; by line within each
            f = report.findings[i]
            where = f"line {f.line}" if f.line else "file"
            if f.file != str(report.path):
                where = f"{Path(f.file).name}:{f.line}" if f.line else Path(f.file).name
            label = Text.assemble(
                (f"{f.severity[0].upper()} ", SEVERITY_STYLE[f.severity]),
                (f"{where:<9} ", "bold"),
                f"{f.rule}: {f.message}",
                no_wrap=True,
                overflow="ellipsis",
            )
            options.append(Option(label, id=f"f{i}"))
        box.add_options(options)
        box.display = bool(options)
        box.border_title = f"findings in {name}"

    @on(OptionList.OptionHighlighted, "#findings")
    @on(OptionList.OptionSelected, "#findings")
    def _jump(self, event: OptionList.OptionHighlighted | OptionList.OptionSelected) -> None:
        f = self.report.findings[int((event.option.id or "f0")[1:])]
        rows = [i for i, ex in enumerate(self.examples) if ex.line == f.line] if f.file == str(self.report.path) else []
        if rows:
            self.index = rows[0]
            self.show_example()
        else:  # the row is not usable (or the remark is about the whole file): say why instead
            where = f.where
            self.query_one("#preview", Static).update(
                Text.assemble(
                    (f"{where}\n", "bold"), (f"{f.severity} [{f.rule}] ", SEVERITY_STYLE[f.severity]), f.message
                )
            )

    def action_example(self, delta: int) -> None:
        if self.examples:
            self.index = (self.index + delta) % len(self.examples)
            self.show_example()

    def show_example(self) -> None:
        from tunewiz.core import data

        if not self.examples:
            return
        ex = self.examples[self.index]
        preview = self.query_one("#preview", Static)
        notes = Text()
        for f in self.report.at_line(ex.line) if self.report else []:
            if f.file == str(self.report.path):
                notes.append(f"{f.severity} [{f.rule}] {f.message}\n", style=SEVERITY_STYLE[f.severity])
        if self.tokenizer is None:
            preview.update(Text(f"example {self.index + 1}/{len(self.examples)} (line {ex.line})\n") + notes)
            return
        try:
            r = data.render_example(self.tokenizer, ex, self.wiz.cfg.data.max_seq_len)
        except data.TemplateError as exc:
            preview.update(Text(f"line {ex.line}: {exc}", style="red"))
            return
        cut = f", {r.cut_trained_tokens} trained cut by max_seq_len" if r.cut_trained_tokens else ""
        head = Text(
            f"example {self.index + 1}/{len(self.examples)} (line {ex.line}): {r.total_tokens} tokens, "
            f"{r.trained_tokens} trained (highlighted){cut}   [ ] browse\n",
            style="bold",
        )
        preview.update(head + notes + preview_text(r))

    def can_continue(self) -> str | None:
        if not self.wiz.cfg.data.path:
            return "choose a data file first"
        if self.report is not None and self.report.errors:
            first = self.report.errors[0]
            return f"{len(self.report.errors)} problem(s) in the data, first at {first.where}: {first.message}"
        return None if self.ready else "the data is not loaded yet, or has problems to fix"


# -- 4. preset -----------------------------------------------------------------------

ADVANCED = [
    ("learning_rate", "learning rate"),
    ("num_epochs", "epochs"),
    ("max_steps", "max steps (-1: all epochs)"),
    ("lora_r", "LoRA rank"),
    ("lora_alpha", "LoRA alpha"),
    ("per_device_batch_size", "batch per device"),
    ("gradient_accumulation_steps", "gradient accumulation"),
    ("data.max_seq_len", "max sequence length"),
    ("evaluation.max_examples", "examples compared"),
]
LABELS = {k.split(".")[-1]: label for k, label in ADVANCED}


def friendly(problem: str) -> str:
    """'override 'training.max_steps=x': expected int' -> 'max steps: expected a whole number'."""
    import re

    m = re.match(r"override '(?:\w+\.)?(\w+)=.*': expected (\w+)", problem)
    if m:
        kind = {"int": "a whole number", "float": "a number", "bool": "true or false"}.get(m[2], m[2])
        return f"{LABELS.get(m[1], m[1])}: expected {kind}"
    return problem


def data_shape(summary: dict, approx=None, max_seq_len: int = 512):
    """The data's shape for the estimate: the data step's tokenized figures where it measured them,
    the text approximation (core.memory.approx_data_shape) otherwise; None when nothing is known."""
    from tunewiz.core.memory import DataShape

    if summary.get("tokens_max"):
        return DataShape(
            longest=min(summary["tokens_max"], max_seq_len),
            train_tokens=summary.get("train_tokens", 0),
            trained_fraction=approx.trained_fraction if approx is not None else 1.0,
            source="tokenized by the data step",
            rows=summary.get("train", 0),
        )
    return approx


def preset_figures(cfg, hw, shape) -> tuple[str, str]:
    """(memory, time) lines of a preset card from tunewiz.core.memory: the peak with fits / does not fit, and
    the data's tokens x epochs / the expected tokens per second on this hardware.

    >>> from tunewiz.core.config import RunConfig
    >>> from tunewiz.core.hardware import Hardware
    >>> from tunewiz.core.memory import DataShape
    >>> cfg = RunConfig()
    >>> cfg.model.id = "bundled:smollm2-135m-instruct"
    >>> preset_figures(cfg, Hardware(cpu_physical_cores=2, ram_available_gb=16), DataShape(120, 30_000, 0.2, "", 300))
    ('peak 2.14 GiB, fits', 'time ~10m37s')
    """
    from tunewiz.core import memory
    from tunewiz.core.events import fmt_duration

    if hw is None:
        return "peak ?", "time ?"
    est = memory.for_run(cfg, hw, shape)
    if est is None:
        return "peak ? (unknown model)", "time ?"
    avail = memory.available_mb(hw, est.breakdown.device)
    fits = est.peak_memory_mb <= avail * 0.88
    peak = f"peak {memory.gib(est.peak_memory_mb)}, " + ("fits" if fits else "[red]too big[/red]")
    return peak, f"time ~{fmt_duration(est.train_time_s)}" if est.train_time_s else "time ?"


class PresetStep(StepScreen):
    STEP = "Preset"
    BINDINGS = [
        Binding("left", "pick(-1)", "Prev preset", show=False),
        Binding("right", "pick(1)", "Next preset", show=False),
        Binding("ctrl+a", "advanced", "Advanced"),
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
            hw = self.wiz.hardware
            per_dev = presets.max_per_device_batch(
                hw.device if hw else "cpu", getattr(hw and hw.best_gpu, "free_gb", None)
            )
            self.wiz.cfg.training = presets.training_for(name, per_dev)
            self.wiz.cfg.preset = name
        self.show_cards()
        self.fill_fields()

    def show_cards(self) -> None:
        """Each preset with its predicted peak memory and time for this model, method, data and machine."""
        cfg, hw = self.wiz.cfg, self.wiz.hardware
        per_dev = presets.max_per_device_batch(hw.device if hw else "cpu", getattr(hw and hw.best_gpu, "free_gb", None))
        shape = data_shape(self.wiz.data_summary, getattr(self, "approx", None), cfg.data.max_seq_len)
        for n in self.NAMES:
            p = presets.PRESETS[n]
            trial = copy.copy(cfg)  # the chosen preset as edited; the others as they come
            trial.training = cfg.training if n == cfg.preset else presets.training_for(n, per_dev)
            peak, eta = preset_figures(trial, hw, shape)
            card = self.query_one(f"#card-{n}", Static)
            card.set_class(n == cfg.preset, "selected")
            card.update(
                f"[b]{n}[/b]{'  <' if n == cfg.preset else ''}\nrank {p.lora_r}, lr {p.learning_rate:g}\n"
                f"{p.num_epochs} epochs, batch {p.effective_batch}\n{p.suits.replace(' examples', ' rows')}\n"
                f"{peak}\n{eta}"
            )

    def fill_fields(self) -> None:
        for key, _ in ADVANCED:
            section, name = key.split(".") if "." in key else ("training", key)
            value = getattr(getattr(self.wiz.cfg, section), name)
            self.query_one(f"#f-{key.replace('.', '-')}", Input).value = (
                f"{value:g}" if isinstance(value, float) else str(value)
            )

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


# -- 5. review -----------------------------------------------------------------------


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
