"""A run's record in words: the figures, the summary and the base-vs-fine-tuned table that the
command line prints and the wizard's screens show. Plain strings, no textual import.
"""

from __future__ import annotations

from typing import Any

from tunewiz.core.bookkeeping.record import Record
from tunewiz.core.bookkeeping.runs import FINAL

# The headline in words is the engine's too (a run's notification says it): defined in core.metrics,
# and the screens read it from here.
from tunewiz.core.judging.metrics import HEADLINE_WORDS, dec, headline_text, pct, with_interval  # noqa: F401
from tunewiz.core.units import fmt_duration


def num(x: Any) -> str:
    """A loss with four decimals; '-' when it was not measured.

    >>> num(0.15274), num("?")
    ('0.1527', '-')
    """
    return f"{x:.4f}" if isinstance(x, (int, float)) else "-"


WIDTH = 78
"""Every line of a record's summary fits 80 columns, less a scrollbar or a border."""


def fit(line: str, width: int = WIDTH, indent: int = 10) -> list[str]:
    """A long line cut after its commas (or double spaces) into lines of at most `width`, continued
    under column `indent`; a single piece longer than that (a long path) stays whole.

    >>> fit("  result  train loss 0.42, eval loss 0.15, 127.5 tok/s", width=40)
    ['  result  train loss 0.42,', '          eval loss 0.15, 127.5 tok/s']
    >>> fit("  tracked tensorboard --logdir /a/long/path/of/runs/20300101-000000-tiny/tensorboard", width=40)
    ['  tracked tensorboard --logdir /a/long/path/of/runs/20300101-000000-tiny/tensorboard']
    """
    if len(line) <= width:
        return [line]
    import re

    pieces = re.split(r"(?<=,) |  (?=\S)", line)
    out = [pieces[0]]
    for piece in pieces[1:]:
        sep = " " if out[-1].endswith(",") else "  "
        if len(out[-1]) + len(sep) + len(piece) <= width or not out[-1].strip():  # no line of indent alone
            out[-1] += sep + piece
        else:
            out.append(" " * indent + piece)
    return out


def hang(line: str, width: int = WIDTH) -> list[str]:
    """A long `  name    text` line cut between words into lines of at most `width`, each continued
    under its text's column (two spaces in when it has none, under the text of a '-> ' line); words are
    never cut.

    >>> hang("  attention   sdpa: the fused attention (FlashAttention needs an NVIDIA GPU)", width=40)
    ['  attention   sdpa: the fused attention', '              (FlashAttention needs an', '              NVIDIA GPU)']
    >>> hang("-> No GPU: CPU training suits only very small models", width=30)
    ['-> No GPU: CPU training suits', '   only very small models']
    """
    if len(line) <= width:
        return [line]
    import re
    import textwrap

    column = re.match(r"\s*\S+(?: \S+)*  +(?=\S)", line)
    lead = len(line) - len(line.lstrip())
    indent = lead + (3 if line[lead:].startswith("-> ") else 2)
    if column and column.end() <= width // 2:
        indent = column.end()
    return textwrap.wrap(
        line, width, subsequent_indent=" " * indent, break_long_words=False, break_on_hyphens=False
    ) or [line]


def hang_all(lines: list[str], width: int = WIDTH) -> str:
    """Lines for the terminal, each long one cut by `hang`: what the plan and advice commands print."""
    return "\n".join(piece for line in lines for piece in (hang(line, width) if line else [line]))


KIND_WORDS = {"labels": "labels", "json": "JSON objects", "text": "free text"}


def review_progress(h: dict[str, Any]) -> str:
    """Where a blind A/B review ([results.human], core.review) stands, in one line.

    >>> review_progress({"rows": 30, "reviewed": 12, "finetuned": 8, "base": 2, "ties": 2, "skipped": 0})
    '12 of 30 reviewed; fine-tuned preferred 8, base 2, ties 2'
    """
    out = (
        f"{h.get('reviewed', 0)} of {h.get('rows', 0)} reviewed; fine-tuned preferred {h.get('finetuned', 0)}, "
        f"base {h.get('base', 0)}, ties {h.get('ties', 0)}"
    )
    return out + (f", skipped {h['skipped']}" if h.get("skipped") else "")


def preference(h: dict[str, Any]) -> str:
    """The fine-tuned model's preference share with its 95% interval: '80% (49-94%)'."""
    iv = h.get("interval")
    if not isinstance(h.get("share"), (int, float)) or not (isinstance(iv, list) and len(iv) == 2):
        return "-"
    return f"{pct(h['share'])} ({iv[0] * 100:.0f}-{iv[1] * 100:.0f}%)"


def human_text(h: dict[str, Any]) -> str:
    """A blind A/B review in one line of at most 78 columns (history's detail).

    >>> human_text({"rows": 30, "reviewed": 30, "judged": 26, "finetuned": 20, "share": 0.7692,
    ...             "interval": [0.5791, 0.8897]})
    'A/B review: fine-tuned preferred in 20 of 26, 77% (58-89%); 30 of 30 rows read'
    """
    if not h:
        return ""
    return (
        f"A/B review: fine-tuned preferred in {h.get('finetuned', 0)} of {h.get('judged', 0)}, {preference(h)}; "
        f"{h.get('reviewed', 0)} of {h.get('rows', 0)} rows read"
    )


def human_lines(h: dict[str, Any]) -> list[str]:
    """A blind A/B review's result, a few sentences, one per line (the review screen's summary wraps them
    between words to its width).

    >>> print("\\n".join(human_lines({"rows": 12, "reviewed": 12, "judged": 10, "finetuned": 8, "base": 2,
    ...     "ties": 1, "skipped": 1, "identical": 3, "share": 0.8, "interval": [0.4902, 0.9433]})))
    Fine-tuned preferred in 8 of 10 judged: 80% (95% interval 49-94%).
    Base preferred in 2. Counted apart: 1 tie, 1 skipped and 3 held-out rows whose two answers were identical
    (ties, not shown).
    Within what chance gives on 10 judged rows: review more rows (--rows 50) before concluding.
    """
    judged, iv = h.get("judged", 0), h.get("interval") or [0.0, 1.0]
    ties, skipped, same = h.get("ties", 0), h.get("skipped", 0), h.get("identical", 0)
    text = (
        f"Fine-tuned preferred in {h.get('finetuned', 0)} of {judged} judged: "
        f"{pct(h.get('share'))} (95% interval {iv[0] * 100:.0f}-{iv[1] * 100:.0f}%).\n"
        if judged
        else "No answer preferred yet.\n"
    )
    apart = [f"{ties} tie{'s' if ties != 1 else ''}", f"{skipped} skipped"]
    if same:
        apart.append(
            f"{same} held-out row{'s' if same != 1 else ''} whose two answers were identical (ties, not shown)"
        )
    text += f"Base preferred in {h.get('base', 0)}. Counted apart: {', '.join(apart[:-1])} and {apart[-1]}.\n"
    if h.get("set_aside"):
        text += f"{h['set_aside']} earlier verdicts were for answers generated again since, and are set aside.\n"
    if judged and iv[0] > 0.5:
        text += "Reviewers prefer the fine-tuned model beyond what chance gives.\n"
    elif judged and iv[1] < 0.5:
        text += "The base model's answers are preferred: the fine-tuning made them worse to read.\n"
    elif judged:
        more = "review more rows (--rows 50)" if h.get("rows", 0) < 50 else "hold out more rows"
        text += f"Within what chance gives on {judged} judged rows: {more} before concluding.\n"
    return text.splitlines()


def prf(entry: Any) -> str:
    """Precision, recall and F1 of one label: '0.91 0.83 0.87'."""
    if not isinstance(entry, dict):
        return "-"
    return " ".join(dec(entry.get(k)) for k in ("precision", "recall", "f1"))


def ratio(x: Any) -> str:
    return f"{x:.2f}x" if isinstance(x, (int, float)) else "-"


Row = tuple[str, str, str, str]
"""(what, base, fine-tuned, n): one line of the comparison."""


def summary_rows(results: dict[str, Any]) -> list[Row]:
    """The figures of the whole held-out set: headline with its interval first, then the rest of its kind."""
    base, ft = results.get("base", {}), results.get("finetuned", {})
    kind = ft.get("kind")
    n = str(ft.get("examples", ""))
    rows: list[Row] = []
    if kind in HEADLINE_WORDS:
        rows.append((f"{HEADLINE_WORDS[kind]} (95% interval)", with_interval(base), with_interval(ft), n))
    if kind == "labels":
        rows.append(("macro-F1", dec(base.get("macro_f1")), dec(ft.get("macro_f1")), ""))
    if kind == "text":
        rows.append(("word overlap (F1)", dec(base.get("word_f1")), dec(ft.get("word_f1")), ""))
        rows.append(("length / expected", ratio(base.get("length_ratio")), ratio(ft.get("length_ratio")), ""))
    precision = results.get("precision")  # what the answers (and this loss) ran in: float32 on a CPU
    loss = f"eval loss, {precision} (lower better)" if precision else "eval loss (lower is better)"
    rows.append((loss, num(base.get("eval_loss")), num(ft.get("eval_loss")), n))
    if kind != "text" and kind != "labels":
        rows.append(("exact match", pct(base.get("exact_match")), pct(ft.get("exact_match")), ""))
    if "json_valid" in ft:
        rows.append(("valid JSON", pct(base.get("json_valid")), pct(ft.get("json_valid")), ""))
        if kind is None:  # a record from before the metrics by kind
            rows.append(("fields correct", pct(base.get("field_match")), pct(ft.get("field_match")), ""))
    if "stop_rate" in ft:
        rows.append(("stopped at end of turn", pct(base.get("stop_rate")), pct(ft.get("stop_rate")), ""))
    return rows


def label_rows(base: dict[str, Any], ft: dict[str, Any], indent: str = "") -> list[Row]:
    """Precision, recall and F1 of each label (the fine-tuned model's order), n = expected answers."""
    rows: list[Row] = []
    for name in ft.get("label_order", []):
        b, f = base.get("labels", {}).get(name), ft.get("labels", {}).get(name, {})
        rows.append((indent + name, prf(b), prf(f), str(f.get("support", ""))))
    return rows


def detail_rows(results: dict[str, Any]) -> list[Row]:
    """Per label (a label task) or per field (JSON): the lines after the summary, with their header."""
    base, ft = results.get("base", {}), results.get("finetuned", {})
    if ft.get("kind") == "labels":
        return [("per label: precision recall F1", "base", "fine-tuned", "n"), *label_rows(base, ft)]
    if ft.get("kind") != "json" or not ft.get("fields"):
        return []
    rows: list[Row] = [("per field: share correct", "base", "fine-tuned", "n")]
    for name, f in ft["fields"].items():
        b = base.get("fields", {}).get(name, {})
        rows.append((name, pct(b.get("accuracy")), pct(f.get("accuracy")), str(f.get("support", ""))))
        if "label_order" in f:
            rows.append(("  macro-F1", dec(b.get("macro_f1")), dec(f.get("macro_f1")), ""))
            rows.append(("  per value: P R F1", "", "", ""))
            rows += label_rows(b, f, indent="    ")
    return rows


def figures(m: dict[str, Any]) -> dict[str, str]:
    """One model's held-out figures by name, in reading order: what the compare screen puts side by side
    for two runs (the same words as the table).

    >>> figures({"kind": "labels", "headline": "exact_match", "exact_match": 0.8, "interval": [0.7, 0.9],
    ...          "macro_f1": 0.75, "label_order": ["neg"], "labels": {"neg": {"precision": 1, "recall": 0.5,
    ...          "f1": 0.6667, "support": 2}}})
    {'accuracy (95% interval)': '80% (70-90%)', 'macro-F1': '0.75', 'neg: P R F1': '1.00 0.50 0.67'}
    """
    kind = m.get("kind")
    out: dict[str, str] = {}
    if kind in HEADLINE_WORDS:
        out[f"{HEADLINE_WORDS[kind]} (95% interval)"] = with_interval(m)
    if kind == "labels":
        out["macro-F1"] = dec(m.get("macro_f1"))
        for name in m.get("label_order", []):
            out[f"{name}: P R F1"] = prf(m.get("labels", {}).get(name))
    elif kind == "json":
        for field, f in m.get("fields", {}).items():
            out[f"{field}: correct"] = pct(f.get("accuracy"))
            if "label_order" in f:
                out[f"{field}: macro-F1"] = dec(f.get("macro_f1"))
                for name in f["label_order"]:
                    out[f"{field}={name}: P R F1"] = prf(f.get("labels", {}).get(name))
    elif kind == "text":
        out["word overlap (F1)"] = dec(m.get("word_f1"))
        out["length / expected"] = ratio(m.get("length_ratio"))
    if "stop_rate" in m:
        out["stopped at end of turn"] = pct(m.get("stop_rate"))
    return out


DETAIL_KEYS = ("labels", "fields", "confusion", "label_order", "interval", "headline")
"""Keys of a model's results that figures() and the tables show in words, not as raw values."""


def confusion_lines(m: dict[str, Any], title: str, width: int = WIDTH) -> list[str]:
    """A confusion matrix (rows: expected label; columns: the label answered, then other) as text, or
    a line saying where it is when it cannot fit `width` columns even with numbered columns.

    >>> print("\\n".join(confusion_lines({"label_order": ["neg", "pos"], "confusion": [[3, 1, 0], [0, 4, 2]]}, "t")))
    t: rows expected, columns answered
           neg   pos other
    neg      3     1     0
    pos      0     4     2
    """
    labels, matrix = m.get("label_order", []), m.get("confusion", [])
    if not labels or len(matrix) != len(labels):
        return []
    cells = max(len(str(c)) for row in matrix for c in row)
    names = [name[:24] for name in labels]
    head = max(len(n) for n in names)
    col = max(cells, 5, *(len(n) for n in names)) + 1
    columns = [*names, "other"]
    if head + col * len(columns) > width:  # numbered columns: "1 negative" rows, "1" headers
        col = max(cells, len(str(len(labels))), 2) + 1
        columns = [*(str(i) for i in range(1, len(labels) + 1)), "x"]
        room = width - col * len(columns)  # what is left for the row names, cut to fit (8 at least)
        if room < 8:
            return [f"{title}: {len(labels)} labels, too many for {width + 2} columns (run.toml has the matrix)"]
        digits = len(str(len(labels)))
        numbered = [f"{i:>{digits}} {n}" for i, n in enumerate(labels, 1)]
        names = [n if len(n) <= room else n[: room - 1] + "…" for n in numbered]
        head = max(len(n) for n in names)
    out = [f"{title}: rows expected, columns answered", " " * head + "".join(f"{c:>{col}}" for c in columns)]
    out += [f"{n:<{head}}" + "".join(f"{c:>{col}}" for c in row) for n, row in zip(names, matrix, strict=True)]
    if columns[-1] == "x":
        out.append("columns: the rows' numbers; x: an answer none of the labels")
    return out


def comparison_table(results: dict[str, Any], width: int = WIDTH) -> str:
    """The held-out metrics of the base and the fine-tuned model side by side, as a fixed-width table
    of at most WIDTH columns: the headline with its interval, the rest of its kind, per label or per
    field, then the fine-tuned model's confusion matrices."""
    base, ft = results.get("base", {}), results.get("finetuned", {})
    if not base or not ft:
        return "(no base-vs-fine-tuned comparison in this run)"
    kind = ft.get("kind")
    what = KIND_WORDS.get(kind, "")
    if kind == "labels":
        what = f"{len(ft.get('label_order', []))} labels"
    title = f"held-out answers: {ft.get('examples', '?')}" + (f", {what}" if what else "")
    lines = [_row((title, "base", "fine-tuned", "n")), "-" * len(_row(("", "", "", "n")))]  # the full width
    lines += [_row(r) for r in summary_rows(results)]
    details = detail_rows(results)
    if details:
        lines += ["", *(_row(r) for r in details)]
    if kind == "labels":
        lines += ["", *confusion_lines(ft, "fine-tuned answers", width)]
    elif kind == "json":
        for name, f in ft.get("fields", {}).items():
            if "label_order" in f:
                lines += ["", *confusion_lines(f, f"fine-tuned {name}", width)]
    return "\n".join(lines)


def _row(r: Row) -> str:
    what, b, f, n = r
    return f"{what[:34]:<34}{b:>16}{f:>16}{n:>6}".rstrip()


def tracking_lines(rec: Record) -> list[str]:
    """Where the run's training curves were reported ([training] report_to), for `tunewiz show`.

    >>> R = Record.from_dict
    >>> tracking_lines(R({"training": {"report_to": "tensorboard"}, "artifacts": {"tensorboard": "/r/tensorboard"}}))
    ['  tracked tensorboard --logdir /r/tensorboard']
    >>> tracking_lines(R({"training": {"report_to": "wandb"}})), tracking_lines(R({"training": {"report_to": "none"}}))
    (['  tracked reported to wandb'], [])
    """
    tb = rec.artifacts.tensorboard
    if tb:
        return [f"  tracked tensorboard --logdir {tb}"]
    report = rec.training.get("report_to")
    return [f"  tracked reported to {report}"] if report and report != "none" else []


def record_summary_lines(rec: Record) -> list[str]:
    """A run record (run.toml) as the lines `tunewiz show` prints and the run screen shows."""
    run, res = rec.run, rec.results.to_dict()
    out = [f"run {run.id or run.extra.get('id')}: {run.status}"]
    if run.failure_reason:
        out.append(f"  reason: {run.failure_reason}")
    if run.log_tail:
        out.append("  last lines of train.log:\n    " + "\n    ".join(run.log_tail.splitlines()[-8:]))
    m, d, t = rec.model, rec.data, rec.training
    out.append(f"  model   {m.id} ({m.method}, {m.effective_dtype or m.dtype})")
    rows = ["?" if n is None else n for n in (d.train_rows, d.eval_rows)]
    out.append(f"  data    {d.path}  train {rows[0]} / eval {rows[1]} rows")
    processes = t.get("processes")
    out.append(
        f"  preset  {rec.preset}: rank {t.get('lora_r')}, lr {t.get('learning_rate')}, "
        f"epochs {t.get('num_epochs')}, batch {t.get('per_device_batch_size')} x {t.get('gradient_accumulation_steps')}"
        + (f" x {processes} processes" if isinstance(processes, int) and processes > 1 else "")
    )
    if res:
        # The trainer's eval loss, in the precision it trained in; the comparison's (below) is in the one it
        # answers in (float32 on a CPU), on the rows compared: the two may differ in the third decimal.
        where = [f"in training, {m.effective_dtype}"] if m.effective_dtype else []
        if d.eval_rows is not None:
            where.append(f"all {d.eval_rows} held-out rows")
        out.append(
            f"  result  train loss {num(res.get('train_loss'))}, eval loss {num(res.get('eval_loss'))}"
            + (f" ({', '.join(where)}), " if where and "eval_loss" in res else ", ")
            + f"{res.get('tokens_per_s', '?')} tok/s, peak {res.get('peak_memory_mb', '?')} MB, "
            f"{fmt_duration(res.get('wall_time_s'))}"
        )
    human = res.get("human")
    if isinstance(human, dict) and human:
        out.append(
            f"  human   blind A/B review: fine-tuned preferred in {human.get('finetuned', 0)} of "
            f"{human.get('judged', 0)} judged, {preference(human)}, base {human.get('base', 0)}, "
            f"ties {human.get('ties', 0)}, skipped {human.get('skipped', 0)}, identical answers "
            f"{human.get('identical', 0)}, {review_progress(human).split(';')[0]}"
        )
    out += tracking_lines(rec)
    from tunewiz.core.shipping.export import summary_lines

    out += summary_lines(rec.artifacts.to_dict())
    out = [piece for text in out for line in text.split("\n") for piece in fit(line)]
    if "finetuned" in res:
        out += ["", *comparison_table(res).splitlines()]
    return out


def flatten(doc: dict, prefix: str = "") -> dict[str, object]:
    """A record's nested tables as dotted keys, to compare two runs setting by setting.

    >>> flatten({"training": {"lora_r": 16, "reasons": {"batch": "fits"}}, "preset": "balanced"})
    {'training.lora_r': 16, 'training.reasons.batch': 'fits', 'preset': 'balanced'}
    """
    out: dict[str, object] = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def basis_words(sweep) -> str:
    """What ranks a sweep's runs, in words: 'held-out fields correct, then held-out loss'."""
    if sweep.basis == "eval_loss":
        return "held-out loss (lower is better; no comparison of answers to rank by)"
    return f"held-out {HEADLINE_WORDS.get(sweep.kind, sweep.basis)}, then held-out loss"


def sweep_figure(sweep, e) -> str:
    """The ranking's figure of one run: the headline with its interval, or its eval loss."""
    if e.status != "completed":
        return "-"
    if sweep.basis == "eval_loss":
        return num(e.eval_loss)
    return with_interval(e.results.finetuned or {})


def peak_text(mb: Any) -> str:
    """
    >>> peak_text(2570.3), peak_text(812.0), peak_text(None)
    ('2.5 GB', '812 MB', '-')
    """
    if not isinstance(mb, (int, float)):
        return "-"
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def curve_text(points: list[tuple[int, float]], what: str = "steps") -> str:
    """A loss curve in a few characters: first and last value, and how many points.

    >>> curve_text([(1, 2.1), (2, 1.0), (8, 0.42)]), curve_text([(4, 1.5)], "evals"), curve_text([])
    ('2.100 -> 0.420 (3 steps)', '1.500 at step 4', '-')
    """
    if not points:
        return "-"
    if len(points) == 1:
        return f"{points[0][1]:.3f} at step {points[0][0]}"
    return f"{points[0][1]:.3f} -> {points[-1][1]:.3f} ({len(points)} {what})"


def overfit_text(preset: str, o) -> str:
    """The guides' advice where a run's held-out loss rose while its training loss fell (core.sweep.Overfit).

    >>> from tunewiz.core.training.sweep import Overfit
    >>> print("\\n".join(wrap(overfit_text("aggressive", Overfit(10, 1.1, 15, 1.3, 1.2, 0.7, 2.0)), 78)))
    aggressive is overfitting: its held-out loss rose from 1.100 (step 10) to
    1.300 (step 15) while its training loss fell from 1.200 to 0.700. It is
    memorising the training rows: train fewer epochs (its held-out loss was lowest
    at epoch 2.0), or take a gentler preset.
    """
    when = f"at epoch {o.best_epoch:.1f}" if o.best_epoch is not None else f"at step {o.best_step}"
    text = (
        f"{preset} is overfitting: its held-out loss rose from {o.best_eval:.3f} (step {o.best_step}) to "
        f"{o.last_eval:.3f} (step {o.last_step}) while its training loss fell from {o.train_then:.3f} to "
        f"{o.train_now:.3f}. It is memorising the training rows: train fewer epochs (its held-out loss was "
        f"lowest {when}), or take a gentler preset."
    )
    return text


def wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width)


SWEEP_HEAD = f"  {'#':<2}{'preset':<13}{'status':<13}{'result':<15}{'eval loss':>10}{'time':>8}{'peak':>8}"


def sweep_row(sweep, e) -> str:
    """One run of a sweep as a line of the ranking (71 columns), '*' before the best."""
    mark = "* " if e.best else "  "
    time_text = fmt_duration(e.time_s) if e.time_s else "-"
    return (
        f"{mark}{e.rank:<2}{e.preset[:12]:<13}{e.label[:12]:<13}{sweep_figure(sweep, e)[:14]:<15}"
        f"{num(e.eval_loss)[:9]:>10}{time_text:>8}{peak_text(e.peak_mb):>8}"
    )


def sweep_lines(sweep, width: int = WIDTH) -> list[str]:
    """A sweep (core.sweep.Sweep) as `tunewiz sweep show` prints it: the ranking, each run's loss curves,
    the best run and what to do with it, and the overfitting advice where it applies; within 80 columns."""
    from pathlib import Path

    held = f", {sweep.eval_rows} held-out rows" if sweep.eval_rows else ""
    out = [
        f"sweep {sweep.id}: the three presets, one after another",
        f"data  {Path(sweep.data).name}{held}, the same for all three",
        f"model {sweep.model}",
        f"ranked by {basis_words(sweep)}; time is training time",
        "",
        SWEEP_HEAD,
        *(sweep_row(sweep, e) for e in sweep.entries),
        "",
        "loss curves: training; held-out",
    ]
    for e in sweep.entries:
        out.append(f"  {e.preset[:12]:<13}{curve_text(e.train)}; {curve_text(e.evals, 'evals')}")
    best = sweep.best
    out.append("")
    if best is not None:
        out.append(f"* best: {best.preset} ({best.run_id})")
        out.append(f"  its record: tunewiz show {best.run_id}")
        out.append(f"  export it:  tunewiz export {best.run_id}")
    elif sweep.done:
        out.append("no run completed: `tunewiz show RUN` says why each ended")
    else:
        left = sum(e.status not in FINAL for e in sweep.entries)
        out.append(f"{left} of {len(sweep.entries)} still to finish: `tunewiz queue` shows where they stand")
    for e in sweep.entries:
        if e.overfit is not None:
            out += ["", *wrap(overfit_text(e.preset, e.overfit), width)]
    return [piece for line in out for piece in (fit(line, width) if line else [line])]
