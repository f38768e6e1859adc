"""The user's data files: `tunewiz lint` (what silently ruins a fine-tune, line by line) and `tunewiz
preview` (one example exactly as the model is trained on it, its trained tokens marked).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from tunewiz.core.bookkeeping import runs
from tunewiz.core.data.columns import Mapping
from tunewiz.tui.commands.request import UserError, data_request
from tunewiz.tui.record_text import hang_all


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
