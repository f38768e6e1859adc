"""Step 3, data: the file checked (core.lint) and every example shown exactly as the model sees it,
after its chat template, with the trained tokens highlighted; the checker's findings listed, errors
first, each jumping to its row. Checking and rendering run in a worker (the tokenizer is slow to load).
Ctrl+B opens a file browser at the typed path's folder (the working directory when none); Esc closes it.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.css.query import NoMatches
from textual.widget import Widget
from textual.widgets import DirectoryTree, Input, OptionList, Static
from textual.widgets.option_list import Option
from tunewiz.core.data.dataset import absolute
from tunewiz.tui.figures import preview_text
from tunewiz.tui.messages import DataReady
from tunewiz.tui.step_base import StepScreen

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}
NO_FILE = "choose a data file first: type its path, or press ctrl+b to browse"


def browse_root(typed: str) -> Path:
    """The folder the file browser opens at: the typed path's folder (the path itself when it is one, its
    nearest existing folder when it does not exist yet), or the working directory when nothing is typed."""
    if not typed.strip():
        return Path.cwd()
    path = absolute(typed.strip())
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


class FindingsList(OptionList):
    """The checker's findings: the first is highlighted (and its row shown) when the list gets the focus,
    so Enter always has a finding to show."""

    def on_focus(self) -> None:
        self.highlight_first()

    def highlight_first(self) -> None:
        if self.highlighted is None and self.option_count:
            self.highlighted = 0


class FileBrowser(DirectoryTree):
    """The data step's file browser: Enter on a file loads it, Esc closes the browser."""

    BINDINGS = [Binding("escape", "close", "Close")]

    def action_close(self) -> None:
        self.screen.close_browser()  # type: ignore[attr-defined]


class DataStep(StepScreen):
    STEP = "Data"
    BINDINGS = [
        Binding("ctrl+b", "browse", "Browse files"),
        Binding("ctrl+o", "columns", "Columns", show=False),  # the summary's columns line names it
        Binding("right_square_bracket,ctrl+right", "example(1)", "Examples", key_display="[ ]"),
        Binding("left_square_bracket,ctrl+left", "example(-1)", "Prev example", show=False),
    ]

    def body(self) -> ComposeResult:
        yield Input(
            value=self.wiz.cfg.data.path,
            placeholder="path to .jsonl .json .csv .tsv .parquet or a datasets folder, Enter to load",
            id="data-path",
        )
        yield FileBrowser(browse_root(self.wiz.cfg.data.path), id="tree")
        yield Static("", id="data-summary")
        yield FindingsList(id="findings")
        with VerticalScroll(id="preview-box"):
            yield Static("", id="preview")

    def on_mount(self) -> None:
        self.report = None
        self.tokenizer = None
        self.examples: list = []
        self.index = 0
        self.ready = False
        self.checking: str | None = None
        self.columns: list = []  # a table's columns (core.data.columns.Column), for the column dialog
        self.proposal = None  # the mapping tunewiz proposes for an unmapped table
        self.loaded_path = self.wiz.cfg.data.path
        self.query_one("#tree").display = False
        self.query_one("#findings").display = False
        if self.wiz.cfg.data.path:
            self.load(self.wiz.cfg.data.path)
        self.query_one("#data-path", Input).focus()

    @property
    def focus_chain(self) -> list[Widget]:
        """Tab from the example goes to the findings list (the summary says so), then to Back and Next."""
        chain = super().focus_chain
        try:
            findings, box = self.query_one("#findings"), self.query_one("#preview-box")
        except NoMatches:  # asked before the body exists
            return chain
        if findings in chain and box in chain:
            chain.remove(findings)
            chain.insert(chain.index(box) + 1, findings)
        return chain

    def action_browse(self) -> None:
        tree = self.query_one("#tree", FileBrowser)
        if tree.display:
            self.close_browser()
            return
        tree.path = browse_root(self.query_one("#data-path", Input).value)
        tree.display = True
        tree.focus()

    def close_browser(self) -> None:
        self.query_one("#tree").display = False
        self.query_one("#data-path", Input).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Columns is a key (and in the footer) only for a table."""
        if action == "columns":
            return bool(getattr(self, "columns", None))
        return super().check_action(action, parameters)

    def action_columns(self) -> None:
        """The column dialog for a table: the proposal (or the mapping in use) to accept or change."""
        from tunewiz.core.data.columns import Mapping
        from tunewiz.tui.columns_dialog import ColumnsScreen

        if not self.columns:
            self.notify("Columns apply to a table (CSV, TSV, Parquet, JSONL with keys of its own).", timeout=4)
            return
        current = Mapping.of(self.wiz.cfg.data)
        names = {c.name.lower() for c in self.columns}
        self.app.push_screen(
            ColumnsScreen(self.columns, current if current.active else self.proposal or Mapping(), "text" in names),
            self.columns_chosen,
        )

    def columns_chosen(self, chosen) -> None:
        if chosen is None:  # Esc: nothing changes (an unmapped table stays refused, saying why)
            return
        d = self.wiz.cfg.data
        if isinstance(chosen, str):
            d.prompt_column = d.answer_column = d.instruction = d.system_prompt = ""
            d.as_text = True
        else:
            d.prompt_column, d.answer_column = chosen.prompt, chosen.answer
            d.instruction, d.system_prompt, d.as_text = chosen.instruction, chosen.system, False
        self.load(d.path)

    def action_back(self) -> None:
        if self.query_one("#tree").display:  # Esc closes the browser first, wherever the focus is
            self.close_browser()
        else:
            super().action_back()

    @on(DirectoryTree.FileSelected)
    def _file(self, event: DirectoryTree.FileSelected) -> None:
        self.query_one("#data-path", Input).value = str(event.path)
        self.close_browser()
        self.load(str(event.path))

    @on(Input.Submitted, "#data-path")
    def _submitted(self, event: Input.Submitted) -> None:
        self.load(event.value)

    def load(self, path: str) -> None:
        self.ready, self.checking = False, None
        path = path.strip()
        self.wiz.cfg.data.path = str(absolute(path)) if path else ""
        if self.wiz.cfg.data.path != self.loaded_path:  # another file: its columns are not the last file's
            d = self.wiz.cfg.data
            d.prompt_column = d.answer_column = d.instruction = d.system_prompt = ""
            d.as_text = False
            self.loaded_path = self.wiz.cfg.data.path
        if not path:  # not "x .: is a directory": nothing was given yet
            self.report, self.examples = None, []
            self.query_one("#data-summary", Static).update(f"[yellow]{NO_FILE.capitalize()}.[/yellow]")
            self.query_one("#preview", Static).update("")
            self.query_one("#findings").display = False
            return
        self.say("", style="")  # a refusal of Next ("choose a data file first") no longer holds
        self.query_one("#data-summary", Static).update("Checking the data and rendering it with the chat template...")
        self.query_one("#preview", Static).update("")
        self.query_one("#findings").display = False
        cfg = self.wiz.cfg
        self.checking = cfg.data.path  # the file a check is running on (None once it reports)
        self.inspect(cfg.data.path, cfg.model.id, cfg.data.max_seq_len, cfg.data.eval_path or None)

    @work(thread=True, exclusive=True, exit_on_error=False, group="data")
    def inspect(self, path: str, model_id: str, max_seq_len: int, eval_path: str | None) -> None:
        from tunewiz.core.data import columns, lint
        from tunewiz.core.data import dataset as data
        from tunewiz.core.models import resolve as models

        mapping = columns.Mapping.of(self.wiz.cfg.data)
        tok, template_error = None, ""
        first = first_use(model_id, self.wiz.home)
        if first:  # a minute of nothing to see otherwise
            self.app.call_from_thread(self.waiting_for, first, path)
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
                mapping=mapping,
                as_text=self.wiz.cfg.data.as_text,
            )
        except data.DataError as exc:
            self.post_message(DataReady({}, problems=exc.problems))
            return
        table, proposal = [], None
        if mapping.active or self.wiz.cfg.data.as_text or any(f.rule == "unmapped-columns" for f in report.findings):
            sample = [r for _, r in data.read_rows(Path(path))[0][: columns.SAMPLE_ROWS]]
            table = [c for c in columns.describe(sample) if c.filled]
            proposal = columns.propose(sample)
        if tok is not None:  # the run's target modules against the model's layers, as submit checks them
            model_dir = models.resolve(model_id, self.wiz.home, weights=False).path
            report.findings += lint.model_targets(self.wiz.cfg, model_dir)
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
        self.post_message(
            DataReady(summary, report=report, tokenizer=tok, columns=table, proposal=proposal and proposal.mapping)
        )

    def waiting_for(self, text: str, path: str) -> None:
        """What the check of `path` is waiting for, in place of "Checking the data..." while it still checks it."""
        if self.is_attached and self.checking == path:
            self.query_one("#data-summary", Static).update(text)

    def on_data_ready(self, msg: DataReady) -> None:
        self.checking = None
        if not self.wiz.cfg.data.path:  # a check of a file that has since been cleared from the path field
            return
        box = self.query_one("#data-summary", Static)
        if msg.problems:  # the file itself could not be read
            shown = "\n".join(f"[red]x[/red] {escape(p)}" for p in msg.problems[:4])
            box.update(f"[b red]{len(msg.problems)} problem(s) - fix them to continue[/b red]\n{shown}")
            self.update_refusal(self.can_continue())
            return
        s, report = msg.summary, msg.report
        self.report, self.tokenizer = report, msg.tokenizer
        self.columns, self.proposal = msg.columns, msg.proposal
        self.refresh_bindings()  # the Columns key shows for a table only
        self.wiz.data_summary = s
        self.wiz.data_shape = report.data_shape()  # every figure from here on is planned for this shape
        fmt = ", ".join(f"{k} {v}" for k, v in s["formats"].items()) or "no usable rows"
        lines = [f"[b]{s['rows']}[/b] examples ({escape(fmt)}): {s['train']} train / {s['eval']} held out"]
        if "tokens_max" in s:
            lines.append(
                f"tokens: min {s['tokens_min']}, median {s['tokens_median']}, p95 {s['tokens_p95']}, "
                f"max {s['tokens_max']} (limit {self.wiz.cfg.data.max_seq_len}); {s['truncated']} truncated"
            )
        d = self.wiz.cfg.data
        if d.prompt_column:
            said = f"prompt {d.prompt_column!r} -> answer {d.answer_column!r}"
            said += " + instruction" if d.instruction else ""
            said += " + system prompt" if d.system_prompt else ""
            lines.append(f"columns: {escape(said)} [dim](ctrl+o: change)[/dim]")
        elif d.as_text and self.columns:
            lines.append("columns: the 'text' column as plain text [dim](ctrl+o: change)[/dim]")
        if s.get("template_error"):
            lines.append(f"[red]cannot load the model's tokenizer: {escape(s['template_error'])}[/red]")
        errors = report.errors
        first = errors[0] if errors else None
        # With errors the list has the focus; else the example has it, and Tab goes on to the list.
        keys = "↑/↓: list" if errors else "Tab: list"
        hint = f" [dim]({keys}, Enter: show row)[/dim]" if report.findings else ""
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
        self.update_refusal(self.can_continue())  # a refused Next's "not loaded yet" goes once it is
        self.show_example()
        if self.proposal is not None and any(f.rule == "unmapped-columns" for f in report.findings):
            self.action_columns()  # a table needs its columns said before anything else makes sense
            return
        if isinstance(self.focused, Input) and (self.examples or report.errors):
            # Off the path field, so [ and ] browse the examples instead of typing into it.
            self.query_one("#findings" if report.errors else "#preview-box").focus()
        elif self.focused is self.query_one("#findings"):  # checked again with the list in focus
            self.query_one("#findings", FindingsList).highlight_first()

    def worker_failed(self, group: str, text: str) -> None:
        if group == "data":  # in place of "Checking the data...": Next stays refused (not ready)
            self.checking = None
            self.query_one("#data-summary", Static).update(
                f"[b red]Checking the data failed[/b red]: {escape(text)}\n"
                "[dim]Enter in the path field checks it again[/dim]"
            )

    def show_findings(self, report) -> None:
        box = self.query_one("#findings", OptionList)
        box.clear_options()
        name = Path(str(report.path)).name
        options = []
        from tunewiz.core.data.dataset import SEVERITIES

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
        from tunewiz.core.data import dataset as data

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
            return NO_FILE
        if self.report is not None and self.report.errors:
            first = self.report.errors[0]
            return f"{len(self.report.errors)} problem(s) in the data, first at {first.where}: {first.message}"
        return None if self.ready else "the data is not loaded yet, or has problems to fix"


def first_use(model_id: str, home) -> str:
    """What the data check waits for before it can render anything, when that takes a while: the bundled
    model converted on its first use, or a hub model's tokenizer fetched; "" otherwise (file work: a worker's).
    """
    from tunewiz.core.models import resolve as models

    model_id = model_id.strip()
    if model_id.startswith("bundled:"):
        if models.on_this_machine(model_id) and models.converted_bundled(model_id, home) is None:
            return (
                "Preparing the bundled model for its first use (converted once from its GGUF file, "
                "about a minute on 2 cores), then checking the data..."
            )
        return ""
    if not models.on_this_machine(model_id):
        return f"Fetching {model_id}'s tokenizer from the Hugging Face hub, then checking the data..."
    return ""
