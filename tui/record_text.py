"""A run's record in words: the figures, the summary and the base-vs-fine-tuned table that the
command line prints and the wizard's screens show. Plain strings, no textual import.
"""

from __future__ import annotations

from typing import Any

from tunewiz.core.events import fmt_duration


def pct(x: Any) -> str:
    """A share as a percentage; '-' when it was not measured.

    >>> pct(0.583), pct(None)
    ('58%', '-')
    """
    return f"{x:.0%}" if isinstance(x, (int, float)) else "-"


def num(x: Any) -> str:
    """A loss with four decimals; '-' when it was not measured.

    >>> num(0.15274), num("?")
    ('0.1527', '-')
    """
    return f"{x:.4f}" if isinstance(x, (int, float)) else "-"


def comparison_table(results: dict[str, Any]) -> str:
    """The held-out metrics of the base and the fine-tuned model, one row each, as a fixed-width table."""
    base, ft = results.get("base", {}), results.get("finetuned", {})
    if not base or not ft:
        return "(no base-vs-fine-tuned comparison in this run)"
    rows = [("eval loss (lower is better)", num, "eval_loss"), ("exact match", pct, "exact_match")]
    if "json_valid" in ft:
        rows += [("valid JSON", pct, "json_valid"), ("fields correct", pct, "field_match")]
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{'held-out rows: ' + str(ft.get('examples', '?')):<{width}}{'base':>12}{'fine-tuned':>12}"]
    lines.append("-" * (width + 24))
    for label, f, key in rows:
        lines.append(f"{label:<{width}}{f(base.get(key)):>12}{f(ft.get(key)):>12}")
    return "\n".join(lines)


def record_summary_lines(doc: dict[str, Any]) -> list[str]:
    """A run record (run.toml) as the lines `tunewiz show` prints and the run screen shows."""
    run, res = doc.get("run", {}), doc.get("results", {})
    out = [f"run {run.get('id')}: {run.get('status')}"]
    if run.get("failure_reason"):
        out.append(f"  reason: {run['failure_reason']}")
    if run.get("log_tail"):
        out.append("  last lines of train.log:\n    " + "\n    ".join(run["log_tail"].splitlines()[-8:]))
    m, d, t = doc.get("model", {}), doc.get("data", {}), doc.get("training", {})
    out.append(f"  model   {m.get('id')} ({m.get('method')}, {m.get('effective_dtype', m.get('dtype'))})")
    out.append(f"  data    {d.get('path')}  train {d.get('train_rows', '?')} / eval {d.get('eval_rows', '?')} rows")
    out.append(
        f"  preset  {doc.get('preset', {}).get('name')}: rank {t.get('lora_r')}, lr {t.get('learning_rate')}, "
        f"epochs {t.get('num_epochs')}, batch {t.get('per_device_batch_size')} x {t.get('gradient_accumulation_steps')}"
        + (f" x {t['processes']} processes" if t.get("processes", 1) > 1 else "")
    )
    if res:
        out.append(
            f"  result  train loss {num(res.get('train_loss'))}, eval loss {num(res.get('eval_loss'))}, "
            f"{res.get('tokens_per_s', '?')} tok/s, peak {res.get('peak_memory_mb', '?')} MB, "
            f"{fmt_duration(res.get('wall_time_s'))}"
        )
    from tunewiz.core.export import summary_lines

    out += summary_lines(doc.get("artifacts", {}))
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
