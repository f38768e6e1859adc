"""The `tunewiz` commands: one `cmd_*` function per sub-command, each a thin layer over core/, and
the helpers they share (the config built from the flags, submitting and following a run).

Every command takes the parsed arguments (tunewiz.tui.cli builds them) and returns the exit code.
Errors a user can act on are raised as TunewizError (UserError for a command-line mistake); the
CLI prints their message, and nothing else.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from tunewiz.core.bookkeeping import repair, runs
from tunewiz.core.bookkeeping.events import describe
from tunewiz.core.config import RunConfig, apply_overrides
from tunewiz.core.data.columns import Mapping
from tunewiz.core.data.dataset import absolute
from tunewiz.core.errors import TunewizError
from tunewiz.core.models.resolve import DEFAULT_MODEL
from tunewiz.core.units import fmt_duration
from tunewiz.tui.record_text import comparison_table, hang_all, record_summary_lines, review_progress


class UserError(TunewizError):
    """A command-line mistake: the message says what to type instead."""


def sample_data(name: str = "support_tickets.jsonl") -> Path:
    """The bundled sample data, read from the installed package."""
    from tunewiz.core.data import samples

    try:
        return samples.path(name)
    except FileNotFoundError as exc:
        raise UserError(f"{exc}. Reinstall tunewiz (pip install tunewiz) to get it back.") from exc


def print_record_summary(doc: dict[str, Any]) -> None:
    print("\n".join(record_summary_lines(doc)))


def cmd_hw(ns) -> int:
    from tunewiz.core.planning import hardware

    hw = hardware.detect(runs.home(ns.home))
    if ns.json:
        print(json.dumps(hw.to_dict(), indent=2))
        return 0
    print(hang_all(hw.summary() + [f"-> {line}" for line in hw.advice()]))
    return 0


def apply_data_args(cfg: RunConfig, ns) -> RunConfig:
    """The data flags of any command into the request: --data, --eval-data and the column mapping
    (--prompt-column, --answer-column, --instruction, --system-prompt, --as-text); a flag not given
    leaves the config's value (a re-run's mapping stays)."""
    if getattr(ns, "data", None):
        cfg.data.path = str(absolute(ns.data))
    if getattr(ns, "eval_data", None):
        cfg.data.eval_path = str(absolute(ns.eval_data))
    for flag, key in (
        ("prompt_column", "prompt_column"),
        ("answer_column", "answer_column"),
        ("instruction", "instruction"),
        ("system_prompt", "system_prompt"),
    ):
        value = getattr(ns, flag, None)
        if value is not None:
            setattr(cfg.data, key, value)
    if getattr(ns, "as_text", False):
        cfg.data.as_text = True
    return cfg


def data_request(ns) -> RunConfig:
    """A request holding only what the data flags say (lint, preview): its [data] reads the file."""
    return apply_data_args(RunConfig(), ns)


def build_config(ns) -> RunConfig:
    from tunewiz.core.planning import presets

    if ns.config:
        cfg = RunConfig.from_toml(ns.config)
        if ns.preset and ns.preset != cfg.preset:
            raise UserError("--preset cannot be combined with --config; use --set to change single fields")
    else:
        cfg = presets.build_config(ns.preset or "balanced")
    if ns.model is not None:  # --model "" is an empty id (said so), not the default
        cfg.model.id = ns.model
    apply_data_args(cfg, ns)
    if ns.method:
        cfg.model.method = ns.method
    if ns.name:
        cfg.name = ns.name
    if ns.epochs is not None:
        cfg.training.num_epochs = ns.epochs
    if ns.max_steps is not None:
        cfg.training.max_steps = ns.max_steps
    if ns.max_seq_len is not None:
        cfg.data.max_seq_len = ns.max_seq_len
    if ns.no_eval:
        cfg.evaluation.enabled = False
    apply_overrides(cfg, ns.set or [])
    return cfg.validate()


def warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr, flush=True)


def launch(cfg: RunConfig, home_dir: Path) -> Path:
    """Submit the run: the remote-code warning first (checking loads the model's tokenizer), then
    every check (launcher.check) and its warnings, then the trainer starts."""
    from tunewiz.core.training import launcher

    remote = launcher.remote_code_warning(cfg)
    if remote:
        warn(remote)
    return launcher.submit(cfg, home_dir, warn=warn)


def follow_run(run_dir: Path, started_here: bool = False) -> int:
    """Print the run's events until it ends, then its summary. `started_here`: this command started
    the run, so a trainer that died is recorded crashed and its notify program told (runs.reconcile);
    a run only watched (attach) is read, never written."""
    from tunewiz.core.training import launcher

    doc, _ = runs.record_problem(run_dir / runs.RECORD)
    watching = (doc or {}).get("run", {}).get("status") in runs.ACTIVE
    try:
        for ev in launcher.follow(run_dir):
            line = describe(ev)
            if line:
                print(line, flush=True)
    except KeyboardInterrupt:
        print(
            f"\nDetached. Training goes on in the background.\n"
            f"  follow it:  tunewiz attach {run_dir.name}\n  stop it:    tunewiz stop {run_dir.name}"
        )
        return 0
    doc = runs.reconcile(run_dir) if started_here else runs.observe(run_dir)
    if watching and sys.stdout.isatty():  # seen ending on a terminal: bell and desktop notification
        from tunewiz.core.bookkeeping import notify

        sys.stdout.write(notify.terminal_alert(notify.title(doc), notify.summary(doc)))
    print()
    print_record_summary(doc)
    return 0 if doc["run"]["status"] == "completed" else 1


def cmd_train(ns) -> int:
    home_dir = runs.home(ns.home)
    cfg = build_config(ns)
    if ns.dry_run:
        return cmd_dry_run(cfg, home_dir)
    if ns.queue:
        from tunewiz.core.training import queue

        queued = queue.submit(cfg, home_dir, warn=warn)
        print(queued_line(queued))
        print(f"  record: {queued.run_dir / runs.RECORD}\n  queue:  `tunewiz queue` lists, moves and cancels")
        return follow_run(queued.run_dir) if ns.follow else 0
    run_dir = launch(cfg, home_dir)
    print(f"started run {run_dir.name}")
    print(f"  record: {run_dir / runs.RECORD}\n  log:    {run_dir / runs.LOG}")
    if not ns.follow:
        print(f"It trains in the background. Follow it with: tunewiz attach {run_dir.name}")
        return 0
    return follow_run(run_dir)


def queued_line(q) -> str:
    """What `tunewiz train --queue` says about the run it queued (a core.queue.Queued)."""
    head = f"queued run {q.run_dir.name} as #{q.place}"
    if not q.waits_for:
        return f"{head}\n  nothing else uses its device: it starts now"
    return f"{head}\n  it starts after {q.after()}"


def cmd_queue(ns) -> int:
    """`tunewiz queue [list | move RUN N | cancel RUN]`: the runs waiting their turn on this machine."""
    from tunewiz.core.training import launcher, queue

    home_dir = runs.home(ns.home)
    action = getattr(ns, "queue_command", None) or "list"
    if action == "move":
        run_dir = runs.find_run(home_dir, ns.run)
        place = queue.move(home_dir, run_dir, ns.place)
        print(f"{run_dir.name} is now #{place} in the queue")
        return 0
    if action == "cancel":
        run_dir = runs.find_run(home_dir, ns.run)
        queue.cancel(home_dir, run_dir)
        print(f"cancelled {run_dir.name}\n  it left the queue; its directory stays (`tunewiz runs` lists it)")
        return 0
    items = runs.list_runs(home_dir)
    active = [r for r in items if r.status in runs.ACTIVE]
    waiting = sorted((r for r in items if r.status == runs.WAITING), key=lambda r: r.queue_place)
    restarted = queue.ensure_runner(home_dir) if queue.waiting(home_dir) else None
    for r in active:
        where = ", ".join(launcher.device_name(d) for d in sorted(launcher.devices(r.record)))
        print(f"now   {r.id[:44]:<44} {'starting' if r.status == 'queued' else r.status:<8} {where}")
    if not waiting:
        print("nothing waits in the queue; `tunewiz train ... --queue` adds a run")
        return 0
    print(f"{'place':<6}{'run':<44} {'preset':<13}{'device':<8}")
    for r in waiting:
        where = ", ".join(launcher.device_name(d) for d in sorted(launcher.devices(r.record)))
        print(f"#{r.queue_place:<5}{r.id[:44]:<44} {r.preset[:12]:<13}{where:<8}")
    pid = queue.runner_pid(home_dir)
    root = runs.runs_root(home_dir)
    if restarted:
        print(f"no queue runner was alive: started one (pid {restarted})")
    elif pid:
        print(f"queue runner: pid {pid}")
    print(f"  its log: {root / queue.LOG}")
    print("They start in this order, one run per device at a time. To change the order:")
    print("`tunewiz queue move RUN N`; to take a run out: `tunewiz queue cancel RUN`.")
    return 0


def cmd_sweep(ns) -> int:
    """`tunewiz sweep --data FILE`: the three presets queued on the same data and held-out split;
    `tunewiz sweep show [ID|last]`: their ranking."""
    from tunewiz.core.planning import presets
    from tunewiz.core.training import sweep
    from tunewiz.tui.record_text import sweep_lines

    home_dir = runs.home(ns.home)
    if getattr(ns, "sweep_command", None) == "show":
        print("\n".join(sweep_lines(sweep.load(home_dir, sweep.find(home_dir, ns.sweep)))))
        return 0
    if not ns.data:
        raise UserError("give the data to try the presets on: `tunewiz sweep --data FILE` (or `tunewiz sweep show`)")
    base = presets.build_config("balanced")
    base.model.id = ns.model or DEFAULT_MODEL
    apply_data_args(base, ns)
    if ns.method:
        base.model.method = ns.method
    if ns.max_seq_len is not None:
        base.data.max_seq_len = ns.max_seq_len
    if ns.no_eval:
        base.evaluation.enabled = False
    overrides = list(ns.set or [])
    if ns.max_steps is not None:
        overrides.append(f"training.max_steps={ns.max_steps}")
    if ns.epochs is not None:
        overrides.append(f"training.num_epochs={ns.epochs}")
    sweep_id, queued = sweep.submit(base, home_dir, overrides, warn=warn)
    print(f"sweep {sweep_id}: the three presets on {Path(base.data.path).name}")
    for q in queued:
        print(f"  #{q.place:<3}{q.run_dir.name}" + ("" if q.waits_for else "  (starts now)"))
    print("They train one after another, on the same held-out rows. The ranking, as they finish:")
    print(f"  tunewiz sweep show {sweep_id}   (or s on one of them in `tunewiz history`)")
    return 0


def cmd_demo(ns) -> int:
    from tunewiz.core.planning import hardware, presets

    home_dir = runs.home(ns.home)
    hw = hardware.detect(home_dir)
    cfg = presets.build_config("balanced")
    cfg.name = "demo-support-tickets"
    cfg.model.id = DEFAULT_MODEL
    cfg.data.path = str(sample_data())
    if hw.device == "cpu" and ns.epochs is None:
        # The full preset takes ~15 minutes on 2 CPU cores; one epoch shows the effect in ~5.
        cfg.training.num_epochs = 1.0
        print("No GPU: the demo trains one epoch of the balanced preset so it finishes in minutes.")
    if ns.epochs is not None:
        cfg.training.num_epochs = ns.epochs
    cfg.validate()
    print(f"Fine-tuning {cfg.model.id} on {cfg.data.path} (support tickets -> JSON labels)")
    run_dir = launch(cfg, home_dir)
    print(f"started run {run_dir.name} (detached: closing this terminal does not stop it)")
    return follow_run(run_dir, started_here=True)


def settings_lines(section: str | None = None, width: int = 79) -> list[str]:
    """Every setting grouped by section: `name = default  (valid values)`, then its help wrapped to
    `width` columns (core.config: the help under each field, read once for the CLI and the wizard).

    >>> lines = settings_lines("training")
    >>> lines[0], lines[1]
    ('[training]', '  lora_r = 16  (1 to 4096)')
    >>> max(map(len, settings_lines())) <= 79
    True
    """
    import dataclasses
    import textwrap

    from tunewiz.core.config import _SECTIONS, setting_help, valid_values
    from tunewiz.core.toml import dumps

    helps = setting_help()
    out: list[str] = []
    for name, klass in _SECTIONS.items():
        if section and name != section:
            continue
        out.append(f"[{name}]")
        default = klass()
        for f in dataclasses.fields(klass):
            value = dumps({"v": getattr(default, f.name)}).strip().removeprefix("v = ")
            line = f"  {f.name} = {value}  ({valid_values(name, f.name)})"
            out.append(line if len(line) <= width else line[: width - 4] + "...)")
            indent = " " * 6
            out += textwrap.wrap(
                helps.get(f"{name}.{f.name}", ""), width, initial_indent=indent, subsequent_indent=indent
            )
        out.append("")
    return out[:-1]


def cmd_settings(ns) -> int:
    from tunewiz.core.config import _SECTIONS

    if ns.section and ns.section not in _SECTIONS:
        raise UserError(f"no section {ns.section!r}: use one of {', '.join(_SECTIONS)}")
    print("\n".join(settings_lines(ns.section)))
    print("\nSet one with --set NAME=VALUE (or SECTION.NAME=VALUE),\n  or under [SECTION] in a config.")
    return 0


def cmd_runs(ns) -> int:
    if ns.reconcile:
        for run_dir in runs.reconcile_all(runs.home(ns.home)):
            print(f"recorded {run_dir.name} as crashed (its trainer is gone)", file=sys.stderr)
    items = runs.list_runs(runs.home(ns.home))
    if ns.json:
        print(
            json.dumps(
                [{k: str(v) if isinstance(v, Path) else v for k, v in vars(r).items() if k != "record"} for r in items],
                indent=2,
            )
        )
        return 0
    if not items:
        print(f"no runs yet under {runs.runs_root(runs.home(ns.home))}; start one with `tunewiz demo`")
        return 0
    print("\n".join(runs_table(items, shutil.get_terminal_size((80, 24)).columns)))
    bad = runs.damaged(items)
    if len(bad) == 1:
        print(
            f"1 run's record is damaged: `tunewiz show {bad[0].id}` says what is left; "
            f"`tunewiz repair {bad[0].id}` rebuilds it"
        )
    elif bad:
        print(
            f"{len(bad)} runs' records are damaged ({', '.join(r.id for r in bad)}): "
            "`tunewiz show ID` says what is left; `tunewiz repair ID` rebuilds it"
        )
    for r in items:
        if r.note:
            print(f"{r.id}: {r.note}")
    return 0


def runs_table(items: list[runs.RunSummary], columns: int = 80) -> list[str]:
    """`tunewiz runs` as lines that fit `columns` (less one): an id longer than its column is cut and
    ends in '…'; the part shown still finds the run (`tunewiz show` takes a unique prefix)."""

    def loss(x: Any) -> str:
        return f"{x:.3f}" if isinstance(x, (int, float)) else "-"

    rest = f" {'status':<10} {'preset':<12} {'loss':>5} {'eval':>5} {'metric':<11} {'time':>6}"
    width = min(max(len(r.id) for r in items), max(16, columns - 1 - len(rest)))
    out = [f"{'id':<{width}}{rest}"]
    for r in items:
        shown = r.id if len(r.id) <= width else r.id[: width - 1] + "…"
        out.append(
            f"{shown:<{width}} {r.label:<10} {r.preset[:12]:<12} {loss(r.train_loss):>5} {loss(r.eval_loss):>5} "
            f"{r.metric[:11]:<11} {fmt_duration(r.duration_s):>6}"
        )
    return out


def cmd_show(ns) -> int:
    home_dir = runs.home(ns.home)
    run_dir = runs.find_run(home_dir, ns.run)
    doc, problem = runs.usable_record(run_dir)
    if doc is None:
        return show_damaged(ns, runs.damaged_summary(run_dir, problem))
    doc = runs.observe(run_dir)
    if ns.toml:
        print((run_dir / runs.RECORD).read_text(), end="")
    elif ns.json:
        print(json.dumps(doc, indent=2, default=str))
    else:
        print_record_summary(doc)
        lost = runs.missing_adapter(run_dir, doc)
        if lost:
            print(hang_all([f"  problem: {lost}"]))
        if doc.get("run", {}).get("status") == runs.WAITING:
            from tunewiz.core.training import queue

            place = queue.place_of(home_dir, run_dir)
            print(
                f"  queue   #{place} of {len(queue.waiting(home_dir, this_host=False))} waiting: "
                "`tunewiz queue` shows the order and what trains now"
            )
        if ns.examples:
            from tunewiz.core.judging.evaluate import PREDICTIONS, read_predictions

            preds, unreadable = read_predictions(run_dir)
            for p in preds[: ns.examples]:
                field = {k: str(p.get(k, ""))[:200] for k in ("prompt", "base", "finetuned")}
                print(
                    f"\n- prompt:     {field['prompt']!r}\n  expected:   {p.get('expected', '')!r}"
                    f"\n  base:       {field['base']!r}\n  fine-tuned: {field['finetuned']!r}"
                )
            if unreadable:
                warn(
                    f"{unreadable} line(s) of {run_dir / PREDICTIONS} could not be read (damaged) and are left "
                    f"out: `tunewiz eval {run_dir.name}` writes the comparison again"
                )
    return 0


def _tokenizer(ns):
    """The model's tokenizer (the bundled model is converted once, on first use)."""
    from tunewiz.core.data.lint import tokenizer_for

    return tokenizer_for(ns.model, runs.home(ns.home))


def max_seq_len_of(ns) -> int:
    """--max-seq-len, or what a run of this model would train with (the run config's default for the
    model and the default preset), so lint, preview and training agree."""
    from tunewiz.core.planning import presets

    if ns.max_seq_len is not None:
        return ns.max_seq_len
    cfg = presets.build_config("balanced")
    cfg.model.id = ns.model
    return cfg.data.max_seq_len


def cmd_lint(ns) -> int:
    from tunewiz.core.data import dataset as data
    from tunewiz.core.data import lint

    request = data_request(ns).validate_data()
    loaded = data.read_for(request.data, ns.data)  # a file that cannot be read is said before the model is loaded
    tok = None if ns.no_tokens else _tokenizer(ns)
    ns.max_seq_len = max_seq_len_of(ns)
    report = lint.lint(
        ns.data, tok, max_seq_len=ns.max_seq_len, eval_path=ns.eval_data, eval_fraction=ns.eval_fraction,
        loaded=loaded, mapping=Mapping.of(request.data), as_text=request.data.as_text,
    )  # fmt: skip
    if ns.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0 if report.ok else 1
    shown = [f for f in report.findings if ns.all or f.severity != "info"]
    limit = len(shown) if ns.all else ns.limit
    for f in shown[:limit]:
        print(f"{f.where}: {f.severity} [{f.rule}] {f.message}")  # one line a finding, as compilers write: grep-able
    if len(shown) > limit:
        print(f"... and {len(shown) - limit} more (--all lists every finding, --json gives them as data)")
    notes = [f for f in report.findings if f.severity == "info"]
    if notes and not ns.all:
        print(f"({len(notes)} note(s) not shown: " + ", ".join(sorted({f.rule for f in notes})) + "; --all shows them)")
    if shown:
        print()
    print(hang_all(report.summary_lines()))
    if report.errors:
        print("-> fix the errors above before training (each names its line)")
    elif tok is None:
        print("-> no structural errors; without --no-tokens the model's template and lengths are checked too")
    else:
        print("-> ready to train")
    return 0 if report.ok else 1


def preview_lines(rendered, plain: bool) -> Any:
    """One rendered example with its trained tokens marked: colour on a terminal, [[ ]] in plain text."""
    from rich.text import Text

    out = Text()
    cut_said = False
    for piece, kind in rendered.segments():
        if kind == "cut" and not cut_said:
            cut_said = True
            out.append(
                f"\n----- cut here by max_seq_len: {rendered.total_tokens - len(rendered.input_ids)} tokens "
                f"({rendered.cut_trained_tokens} trained) are not seen in training -----\n",
                style="bold red",
            )
        if plain:
            out.append(f"[[{piece}]]" if kind == "trained" else piece)
        else:
            out.append(piece, style={"trained": "black on green", "cut": "dim strike"}.get(kind, ""))
    return out


def cmd_preview(ns) -> int:
    from rich.console import Console
    from tunewiz.core.data import dataset as data

    loaded = data.read_for(data_request(ns).validate_data().data, ns.data)
    if not loaded.examples:
        unmapped = [f.message for f in loaded.findings if f.rule in ("unmapped-columns", "column-mapping")]
        if unmapped:
            raise UserError(f"{ns.data}: {unmapped[0]}")
        raise UserError(f"{ns.data}: no usable example to show; run `tunewiz lint {ns.data}` to see why")
    unmapped = next((f for f in loaded.findings if f.rule == "unmapped-columns"), None)
    if unmapped is not None:
        raise UserError(f"{unmapped.where}: {unmapped.message}")
    if ns.row is None:
        ex = loaded.examples[0]
    else:
        ex = next((e for e in loaded.examples if e.line == ns.row), None)
        if ex is None:
            bad = [str(f) for f in loaded.findings if f.line == ns.row and f.severity == "error"]
            if bad:
                raise UserError(f"row {ns.row} cannot be used: " + "; ".join(bad))
            lines = [e.line for e in loaded.examples]
            raise UserError(
                f"no example at line {ns.row} of {ns.data}; examples run from line {lines[0]} to {lines[-1]}"
            )
    tok = _tokenizer(ns)
    ns.max_seq_len = max_seq_len_of(ns)
    try:
        r = data.render_example(tok, ex, ns.max_seq_len)
    except data.TemplateError as exc:
        raise UserError(f"{loaded.path}:{ex.line}: {exc}") from None
    plain = ns.plain or not sys.stdout.isatty()
    console = Console(highlight=False, soft_wrap=True, no_color=plain)
    total = r.trained_tokens + r.cut_trained_tokens
    head = (
        f"{loaded.path}:{ex.line} ({ex.format}), as {ns.model} sees it: {r.total_tokens} tokens, "
        f"{total} trained{' (' + str(r.cut_trained_tokens) + ' of them cut)' if r.cut_trained_tokens else ''}, "
        f"max_seq_len {ns.max_seq_len}"
    )
    legend = "[[ ]] marks" if plain else "highlighted:"
    legend += " the trained tokens (what the model learns to write); the rest is context"
    console.print(head, markup=False)  # file:line first, whole, as compilers write it
    console.print(hang_all([legend]), markup=False)  # the example itself exactly as written (the terminal wraps it)
    console.print()
    console.print(preview_lines(r, plain))
    return 0


def cmd_eval(ns) -> int:
    from tunewiz.core.judging.evaluate import evaluate_run

    run_dir = runs.find_run(runs.home(ns.home), ns.run)
    print(f"evaluating {run_dir.name}: base vs fine-tuned on the held-out rows ...", flush=True)
    summary = evaluate_run(run_dir)
    print(comparison_table(summary))
    return 0


def cmd_export(ns) -> int:
    from tunewiz.core.shipping.export import export

    run_dir = runs.find_run(runs.home(ns.home), ns.run)
    what = f"gguf ({ns.type})" if ns.format == "gguf" else ns.format
    print(f"exporting {run_dir.name} as {what}, then checking it against the adapter model ...", flush=True)
    entry = export(run_dir, ns.format, quant=ns.type, verify=not ns.no_verify)  # ExportError: a TunewizError
    print(f"  written: {entry['path']}")
    if entry.get("modelfile"):
        print(f"  Ollama:  cd {Path(entry['modelfile']).parent} && ollama create NAME -f Modelfile")
        if entry.get("modelfile_note"):
            print(f"  note:    {entry['modelfile_note']}")
    elif entry.get("modelfile_note"):
        print(f"  no Modelfile: {entry['modelfile_note']}")
    if "agreement" in entry:
        print(
            f"  greedy answers identical to the adapter model's on {entry['agreement']:.0%} of "
            f"{entry['examples']} held-out prompts ({entry['token_agreement']:.0%} of tokens)"
        )
        stops = "yes" if entry["stops_at_end_of_turn"] else "NO"
        print(
            f"  stops at the end-of-turn token ({', '.join(entry['end_tokens'])}): {stops} "
            f"({entry['stop_rate']:.0%} of answers end there; adapter model: {entry['reference_stop_rate']:.0%})"
        )
        if entry.get("warning"):
            print(f"  WARNING {entry['warning']}")
    return 0


def cmd_stop(ns) -> int:
    from tunewiz.core.training import launcher

    run_dir = runs.find_run(runs.home(ns.home), ns.run)
    if runs.read_record(run_dir).get("run", {}).get("status") == runs.WAITING:
        raise UserError(f"{run_dir.name} is waiting in the queue: `tunewiz queue cancel {run_dir.name}` takes it out")
    if launcher.stop(run_dir, now=ns.now):
        if ns.now:
            print(
                f"stopped {run_dir.name} now, without a last checkpoint: `tunewiz show {run_dir.name}` says what "
                "it had saved (a run stopped during its comparison keeps its adapter and reads completed)"
            )
        else:
            print(
                f"asked {run_dir.name} to stop; it saves a checkpoint and the adapter first "
                "(during the comparison it ends it at the next batch, keeping the adapter)"
            )
        return 0
    print(f"{run_dir.name} is not running ({runs.observe(run_dir)['run'].get('status')})")
    return 1


def cmd_resume(ns) -> int:
    from tunewiz.core.training import launcher

    run_dir = runs.find_run(runs.home(ns.home), ns.run)
    doc = runs.reconcile(run_dir)
    if not runs.here(doc):
        raise UserError(
            f"{run_dir.name} was made on {doc['run'].get('host')}, not on this machine: resume it there, or "
            f"start it here afresh with `tunewiz train --config {run_dir / runs.RECORD}`"
        )
    status = doc["run"].get("status")
    if status not in runs.RESUMABLE:
        raise UserError(f"{run_dir.name} is {status}; only a stopped, crashed or failed run can be resumed")
    missing = repair.unnamed(doc)
    if missing:  # a repaired record may not know them: the trainer would fail on its first line
        raise UserError(
            f"{run_dir.name} cannot be resumed: its record does not say {' or '.join(missing)} (a repaired "
            f"record may not know them). Add {' and '.join(missing)} to {run_dir / runs.RECORD} by hand (the "
            f"model and the data file the run trained on), then `tunewiz resume {run_dir.name}` again"
        )
    data_path = Path(str(doc["data"]["path"])).expanduser()
    if data_path.is_absolute() and not data_path.exists():  # records keep absolute paths
        raise UserError(
            f"{run_dir.name} cannot be resumed: its data {data_path} is gone. Put the file back there, or set "
            f"[data] path in {run_dir / runs.RECORD} to where it is now, then `tunewiz resume {run_dir.name}` again"
        )
    from tunewiz.core.bookkeeping import checkpoints

    ckpt, skipped = checkpoints.newest_complete(run_dir / runs.CHECKPOINTS)
    for s in skipped:
        print(f"skipping {s.path.name}: {s.why}")
    start = ckpt.name if ckpt else "the start (no complete checkpoint was saved)"
    print(f"resuming {run_dir.name} from {start}")
    launcher.start(run_dir, resume=True)
    return follow_run(run_dir, started_here=True) if ns.follow else 0


def cmd_attach(ns) -> int:
    run_dir = runs.find_run(runs.home(ns.home), ns.run)
    if ns.plain or not sys.stdout.isatty():
        return follow_run(run_dir)
    return run_app(ns, start="attach", run=run_dir)


def run_app(
    ns, start: str = "wizard", run: Path | None = None, chat_options=None, review_rows: int | None = None
) -> int:
    from tunewiz.tui.app import create_app

    data = getattr(ns, "data", None)
    if start == "wizard" and not data:
        try:
            data = str(sample_data())
        except UserError:
            data = None
    app = create_app(
        runs.home(ns.home), start=start, run=run, data=data, chat_options=chat_options, review_rows=review_rows
    )
    result = app.run()
    if app.return_code:
        return app.return_code
    if isinstance(result, str):
        print(result)
    return 0


CHAT_HELP = (
    "Each line is a question. /base and /tuned switch the model that answers, /again asks the last "
    "question again with the other one, /reset forgets the conversation, /quit ends."
)


def cmd_chat(ns) -> int:
    """`tunewiz chat RUN`: the chat screen, or with --plain (or no terminal) questions from stdin."""
    from tunewiz.core.judging.chat import ChatOptions, require_adapter

    run_dir = runs.find_run(runs.home(ns.home), ns.run)
    options = ChatOptions(ns.max_new_tokens, ns.temperature, ns.top_p, ns.seed)  # ChatError: said by main
    require_adapter(run_dir)  # before loading anything
    if ns.plain or not sys.stdout.isatty() or not sys.stdin.isatty():  # piped questions: plain text too
        return chat_plain(run_dir, options)
    return run_app(ns, start="chat", run=run_dir, chat_options=options)


def chat_plain(run_dir: Path, options) -> int:
    """Questions from stdin, one a line; each answer printed to stdout as it streams, then a newline.
    What is not an answer (loading, the mode, timings) goes to stderr, so a script reads answers only."""
    import warnings

    from tunewiz.core.judging.chat import ChatError, ChatSession

    def note(line: str, end: str = "\n") -> None:
        print(line, file=sys.stderr, end=end, flush=True)

    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices, not the user's
    note(f"loading the model of {run_dir.name} ...")
    session = ChatSession.for_run(run_dir, options)
    note(f"chatting with {run_dir.name}: fine-tuned model, {options.describe()}, on {session.device}. {CHAT_HELP}")
    if session.system:
        note(f"system prompt: {session.system}")
    if session.note:
        note(session.note)
    interactive = sys.stdin.isatty()
    adapter, asked_with = True, True
    while True:
        if interactive:
            note(f"{'tuned' if adapter else 'base'}> ", end="")
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            note("")
            return 0
        if not line:
            return 0
        text = line.strip()
        again = False
        if text.startswith("/"):
            word = text[1:].lower()
            if word in ("quit", "exit", "q"):
                return 0
            if word in ("base", "tuned"):
                adapter = word == "tuned"
                note(f"now asking the {'fine-tuned' if adapter else 'base'} model")
            elif word == "reset":
                session.reset()
                note("conversation cleared" + (" (the system prompt stays)" if session.system else ""))
            elif word != "again":
                note(f"unknown command {text}. {CHAT_HELP}")
            if word != "again":
                continue
            again = True
        if not text:
            continue
        which = not asked_with if again else adapter
        if again or not interactive:
            note(f"[{'fine-tuned' if which else 'base'}]")
        try:
            for piece in session.again(which) if again else session.reply(text, which):
                print(piece, end="", flush=True)
        except ChatError as exc:
            note(f"tunewiz: {exc}")
            continue
        except KeyboardInterrupt:
            print(flush=True)
            note("(stopped)")
            continue
        asked_with = which
        print(flush=True)
        if interactive:
            note(f"({session.last.describe(options.max_new_tokens)})")


def cmd_wizard(ns) -> int:
    return run_app(ns)


def cmd_history(ns) -> int:
    return run_app(ns, start="history")


def cmd_review(ns) -> int:
    """`tunewiz review RUN [--rows N]`: the blind A/B review screen (core.review), continued where it stopped."""
    from tunewiz.core.judging import review

    run_dir = runs.find_run(runs.home(ns.home), ns.run)
    opened = review.Review.open(run_dir, ns.rows)  # no predictions, a bad --rows: one message, before the screen
    if not sys.stdout.isatty():
        raise UserError(
            f"the review needs a terminal; {review_progress(opened.summary().as_record())} "
            f"(`tunewiz show {run_dir.name}` prints the summary)"
        )
    return run_app(ns, start="review", run=run_dir, review_rows=ns.rows)


def _fit_hardware(ns):
    """The detected hardware, or a pretend GPU / RAM size given on the command line."""
    from tunewiz.core.planning import hardware

    hw = hardware.detect(runs.home(ns.home))
    if getattr(ns, "gpu_gb", None):
        hw.gpus = [hardware.GPU(0, f"{ns.gpu_gb:g} GB GPU (--gpu-gb)", ns.gpu_gb, ns.gpu_gb, "8.0", True)]
    if getattr(ns, "ram_gb", None):
        hw.ram_total_gb = hw.ram_available_gb = ns.ram_gb
    return hw


def data_shape_of(cfg: RunConfig, home_dir: Path):
    """The data's shape as the linter tokenizes it with the model's tokenizer: the same figures the
    wizard's data step plans with."""
    from tunewiz.core.data import lint

    tok = lint.tokenizer_for(cfg.model.id, home_dir, cfg.model.trust_remote_code)
    return lint.lint_run(cfg, tok).data_shape()


def cmd_fit(ns) -> int:
    """Will it fit: the planner's decisions for this model, preset and data on this machine (or a
    pretend one), with the memory breakdown and the verdict."""
    from tunewiz.core.models import catalog
    from tunewiz.core.planning import planner, presets
    from tunewiz.core.planning.memory import DataShape

    hw = _fit_hardware(ns)
    spec = catalog.lookup(ns.model)  # CatalogError: a TunewizError, printed by main
    cfg = presets.build_config(ns.preset)
    cfg.model.id = ns.model if catalog.find(ns.model) is None else planner.catalog_id(spec)
    cfg.model.method = ns.method
    cfg.data.max_seq_len = ns.seq_len
    if ns.batch:
        cfg.training.per_device_batch_size, cfg.training.auto_batch_split = ns.batch, False
    if ns.rank:
        cfg.training.lora_r, cfg.training.lora_alpha = ns.rank, 2 * ns.rank
    if ns.dtype:
        cfg.model.dtype = ns.dtype
    cfg.training.gradient_checkpointing = ns.gradient_checkpointing
    if ns.data:
        apply_data_args(cfg, ns)
        shape = data_shape_of(cfg, runs.home(ns.home))
    else:
        shape = DataShape(ns.seq_len, ns.tokens, 1.0, f"--seq-len {ns.seq_len}", 0) if ns.tokens else None
    p = planner.plan(cfg, hw, spec, shape, headroom=ns.headroom)
    head = (
        f"{spec.label}, {spec.hub_id or 'from config.json'}: {ns.method}, {ns.preset} preset, "
        f"{p.seq_len} tokens per example ({shape.source if shape else 'every example max_seq_len long'})"
    )
    print(hang_all([head, *p.lines(), f"-> {p.memory_line()}"]))
    return 0 if p.fits else 1


def cmd_dry_run(cfg: RunConfig, home_dir: Path) -> int:
    """`tunewiz train ... --dry-run`: every check a real start runs (the same errors, the same warnings),
    then the plan this machine would run the request with; nothing starts."""
    from tunewiz.core.planning import planner
    from tunewiz.core.training import launcher

    remote = launcher.remote_code_warning(cfg)
    if remote:
        warn(remote)
    checked = launcher.check(cfg, home_dir)
    for line in checked.warnings:
        warn(line)
    shape = checked.report.data_shape() if checked.tokenized else data_shape_of(cfg, home_dir)
    p = planner.plan(cfg, checked.hw, shape=shape, busy=checked.busy)
    head = f"dry run: {cfg.model.id} ({cfg.model.method}) on {cfg.data.path}, {cfg.preset} preset; nothing started"
    print(hang_all([head, *p.lines(), f"-> {p.memory_line()}"]))
    return 1 if p.problems else 0


def cmd_probe(ns) -> int:
    """A few real training steps at the data's longest example: predicted vs measured memory and speed."""
    from tunewiz.core.planning import hardware, presets
    from tunewiz.core.training import probe

    if ns.steps < 1:
        raise UserError(f"--steps {ns.steps}: probe at least 1 step (3 or more give a steadier time)")
    home_dir = runs.home(ns.home)
    hw = hardware.detect(home_dir)
    cfg = presets.build_config(ns.preset)
    cfg.model.id = ns.model
    cfg.model.method = ns.method
    apply_data_args(cfg, ns)
    if ns.max_seq_len is not None:
        cfg.data.max_seq_len = ns.max_seq_len
    if ns.batch is not None:
        cfg.training.per_device_batch_size, cfg.training.auto_batch_split = ns.batch, False
    cfg.validate()
    where = hw.best_gpu.name if hw.best_gpu else f"CPU, {hw.cpu_physical_cores} cores"
    print(
        f"probing {cfg.model.id} ({cfg.model.method}, {ns.preset} preset) on {where}: "
        f"{ns.steps} steps at the longest example of {Path(cfg.data.path).name} ...",
        flush=True,
    )
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices, not the user's
    result = probe.probe(cfg, home_dir, steps=ns.steps, hw=hw)
    print("\n".join(result.lines()))
    if ns.json:
        print(json.dumps(result.to_dict(), indent=2))
    return 1 if result.oom else 0


def cmd_recommend(ns) -> int:
    from tunewiz.core.planning import memory, planner, presets
    from tunewiz.core.planning.memory import DataShape

    hw = _fit_hardware(ns)
    cfg = presets.build_config("balanced")
    cfg.data.max_seq_len = ns.seq_len
    shape = DataShape(ns.seq_len, ns.tokens, 1.0, f"--seq-len {ns.seq_len}", 0) if ns.tokens else None
    recs = planner.recommend(cfg, hw, shape=shape, presets=True)
    where = f"GPU {hw.best_gpu.name}, {hw.best_gpu.free_gb:.1f} GB free" if hw.best_gpu else (
        f"CPU only, {hw.ram_available_gb:.1f} GB RAM available, {hw.cpu_physical_cores} cores")  # fmt: skip
    print(hang_all([f"{where}; {ns.seq_len} tokens per example, {planner.HEADROOM:.0%} headroom"]))
    head = f"{'model':<14}{'method':<7}{'peak':>9}  {'fits':<5}{'tok/s':>6}"
    head += f"{'3 epochs':>9}  " if ns.tokens else "  "
    print(head + "batches (cons/bal/aggr)")
    shown = 0
    for r in recs:
        if not r.fits and not ns.all:
            continue
        cells = []
        for name in ("conservative", "balanced", "aggressive"):
            b = r.batches.get(name)
            cells.append(f"{b[0]}x{b[1]}{'+gc' if b[2] else ''}" if b else "-")
        line = f"{r.spec.key:<14}{r.method:<7}{memory.gib(r.peak_mb):>9}  {'yes' if r.fits else 'no':<5}"
        line += f"{r.tokens_per_s:>6,.0f}"
        if ns.tokens:
            line += f"{fmt_duration(r.time_s):>9}"
        print(line + "  " + " / ".join(cells))
        shown += 1
    if not shown:
        print("nothing in the catalog fits; free memory or use a machine with more (see --all)")
    legend = (
        "batches: per-device batch x gradient accumulation for the conservative / balanced / aggressive "
        "presets; +gc: with gradient checkpointing. Peaks are for the balanced preset; "
        "`tunewiz fit --model M` explains one."
    )
    print(hang_all([legend]))
    return 0


def cmd_repair(ns) -> int:
    """Rebuild a run's missing or damaged run.toml from what its directory holds (core.repair)."""
    run_dir = runs.find_run(runs.home(ns.home), ns.run)
    doc, done = repair.repair(run_dir)  # RunError (a TunewizError) when it cannot be written
    if not done:
        lost = runs.missing_adapter(run_dir, doc)
        if lost:  # repair rebuilds a record, not an adapter: say what is wrong and what to do instead
            print(f"{run_dir.name}: {runs.RECORD} reads fine, but {lost}")
            return 1
        print(f"{run_dir.name}: {runs.RECORD} reads fine; nothing to repair")
        return 0
    print(f"repaired {run_dir.name}:")
    for line in done:
        print(f"  - {line}")
    print()
    print_record_summary(doc)
    return 0


def show_damaged(ns, r: runs.RunSummary) -> int:
    """`tunewiz show` of a run whose record is damaged: what is wrong and what is left; exit 2 (could not run)."""
    if ns.json:
        print(json.dumps({"id": r.id, "path": str(r.path), "status": r.status, "problem": r.problem, "left": r.left}))
        return 2
    if ns.toml:  # the file as it is, whatever is left of it; the words go to stderr
        record = r.path / runs.RECORD
        if record.is_file():
            print(record.read_bytes().decode("utf-8", "replace"), end="")
        print("\n".join(r.damage_lines()), file=sys.stderr)
        return 2
    print("\n".join(r.damage_lines()))
    return 2
