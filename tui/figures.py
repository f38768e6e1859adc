"""The wizard's figures and rows as plain text: memory bars, model rows, preset figures, the preview.

No widget and no textual import here: each function takes plain values (a recommendation, a
config, the hardware, a rendered example) and returns a string or a rich Text, so it can be
tested, and read, without starting an app.
"""

from __future__ import annotations

import re

from rich.text import Text
from tunewiz.core.config import hint
from tunewiz.core.planning.planner import catalog_id

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

# The preset step's advanced fields: (config key, label). Sections other than [training] are named.
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
    ("report_to", "experiment tracker"),
]
# What a field means, on the line above the fields while it has focus: its setting's help (core.config).
HINTS = {key: hint(key) for key, _ in ADVANCED}
# The same fields in a word or two, for the preset card's "kept:" line (24 columns inside a card).
SHORT = {
    "learning_rate": "lr",
    "num_epochs": "epochs",
    "max_steps": "max steps",
    "lora_r": "rank",
    "lora_alpha": "alpha",
    "per_device_batch_size": "batch/device",
    "gradient_accumulation_steps": "accumulation",
    "data.max_seq_len": "seq len",
    "evaluation.max_examples": "compared",
    "report_to": "tracker",
}
LABELS = {k.split(".")[-1]: label for k, label in ADVANCED}


# -- model step ----------------------------------------------------------------------


def memory_bar(used_mb: float, available_mb: float, width: int = BAR_WIDTH) -> str:
    """The share of the available memory a run needs; full when it does not fit.

    >>> memory_bar(512, 1024), memory_bar(4096, 1024), memory_bar(1, 1024)
    ('█████░░░░░', '██████████', '█░░░░░░░░░')
    """
    filled = min(width, max(1, round(used_mb / max(available_mb, 1e-9) * width)))
    return "█" * filled + "░" * (width - filled)


def size_label(params: float) -> str:
    """'135M', '1.5B'.

    >>> size_label(134_515_008), size_label(1.54e9)
    ('135M', '1.5B')
    """
    return f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.0f}M"


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


def memory_label(hw, available_mb: float) -> str:
    """'22.0 GiB RAM' or '23.6 GiB GPU': what the memory bars are a share of (`available_mb`, the plans'
    figure for the device they chose).

    >>> from tunewiz.core.planning.hardware import GPU, Hardware
    >>> memory_label(Hardware(gpus=[GPU(0, "A", 80, 20, "9.0", True)]), 20 * 1024), memory_label(Hardware(), 2048)
    ('20.0 GiB GPU', '2.0 GiB RAM')
    """
    where = "GPU" if getattr(hw, "gpus", None) or getattr(hw, "mps", False) else "RAM"  # MPS: its share of RAM
    return f"{available_mb / 1024:.1f} GiB {where}"


# -- data step -----------------------------------------------------------------------


def preview_text(rendered, limit: int = 4000) -> Text:
    """The rendered example with the trained tokens highlighted and the truncated tail struck out.

    Built from ``Rendered.segments``: the same mask the trainer's labels come from.
    """
    styles = {"trained": "black on green", "cut": "dim strike", "prompt": ""}
    text = Text()
    for piece, kind in rendered.segments(limit):
        text.append(piece, style=styles[kind])
    return text


# -- preset step ---------------------------------------------------------------------


def friendly(problem: str) -> str:
    """A config problem in the words of the preset step's fields; other problems as they are.

    >>> friendly("override 'training.max_steps=x': expected int")
    'max steps (-1: all epochs): expected a whole number'
    >>> friendly("learning_rate must be > 0")
    'learning_rate must be > 0'
    """
    m = re.match(r"override '(?:\w+\.)?(\w+)=.*': expected (\w+)", problem)
    if m:
        kind = {"int": "a whole number", "float": "a number", "bool": "true or false"}.get(m[2], m[2])
        return f"{LABELS.get(m[1], m[1])}: expected {kind}"
    return problem


def preset_figures(cfg, hw, shape, busy=()) -> tuple[str, str]:
    """(memory, time) lines of a preset card, from the plan (tunewiz.core.planning.planner) of this config on
    this hardware for this data: the figure the trainer records, `tunewiz fit` and the other steps show.
    `busy`: the devices other runs train on (planner.plan).

    >>> from tunewiz.core.config import RunConfig
    >>> from tunewiz.core.planning.hardware import Hardware
    >>> from tunewiz.core.planning.memory import DataShape
    >>> cfg = RunConfig()
    >>> cfg.model.id = "bundled:smollm2-135m-instruct"
    >>> preset_figures(cfg, Hardware(cpu_physical_cores=2, ram_available_gb=16), DataShape(120, 30_000, 0.2, "", 300))
    ('peak 2.14 GiB, fits', 'training ~10m37s')
    """
    from tunewiz.core.planning import planner
    from tunewiz.core.units import fmt_duration

    if hw is None:
        return "peak ?", "training ?"
    p = planner.plan(cfg, hw, shape=shape, busy=busy)
    if p.estimate is None:
        return p.memory_line(), "training ?"
    peak = p.memory_line().replace("too big", "[red]too big[/red]")
    est = p.estimate
    return peak, f"training ~{fmt_duration(est.train_time_s)}" if est.train_time_s else "training ?"


def kept_line(edited: list[str], width: int = 24) -> str:
    """The preset card's line naming the settings you edited, which a preset change keeps; as many as fit
    in `width`, then how many more.

    >>> kept_line(["max_steps"])
    'kept: max steps'
    >>> kept_line(["max_steps", "learning_rate", "lora_r", "report_to", "data.max_seq_len"])
    'kept: max steps, lr +3'
    """
    names = [SHORT.get(k, k) for k in edited]
    for n in range(len(names), 0, -1):
        more = f" +{len(names) - n}" if n < len(names) else ""
        line = "kept: " + ", ".join(names[:n]) + more
        if len(line) <= width:
            return line
    return f"kept: {len(names)} settings"


def preset_lines(t, edited: set[str]) -> list[str]:
    """A preset card's settings (markup): rank and learning rate, then epochs (or max steps) and the
    effective batch, from `t`, the training that picking the card's preset gives; the values you set (`edited`,
    kept over the preset's) in yellow.

    >>> from tunewiz.core.planning import presets
    >>> t = presets.training_for("balanced")
    >>> preset_lines(t, set())
    ['rank 16, lr 0.0002', '3 epochs, batch 8']
    >>> t.max_steps, t.learning_rate = 2, 1e-4
    >>> preset_lines(t, {"max_steps", "learning_rate"})
    ['rank 16, lr [yellow]0.0001[/yellow]', '[yellow]2 steps[/yellow], batch 8']
    """

    def mark(text: str, *keys: str) -> str:
        return f"[yellow]{text}[/yellow]" if edited & set(keys) else text

    rank = mark(str(t.lora_r), "lora_r")
    lr = mark(f"{t.learning_rate:g}", "learning_rate")
    if t.max_steps > 0:
        length = mark(f"{t.max_steps} step{'s' if t.max_steps != 1 else ''}", "max_steps")
    else:
        length = mark(f"{t.num_epochs:g} epochs", "num_epochs", "max_steps")
    batch = mark(str(t.effective_batch), "per_device_batch_size", "gradient_accumulation_steps")
    return [f"rank {rank}, lr {lr}", f"{length}, batch {batch}"]


def sweep_question(cfgs, hw, shape, kept: list[str] = (), ignored: list[str] = (), busy=()) -> str:
    """What Ctrl+T (try all three presets) is about to do, asked before anything is queued: three full
    runs of `cfgs` (core.sweep.configs), one after another, and their training time in all when the plan
    gives one. `kept`: the fields you edited that all three keep; `ignored`: those each preset sets instead."""
    from tunewiz.core.planning import planner
    from tunewiz.core.units import fmt_duration

    times = []
    for c in cfgs:
        est = planner.plan(c, hw, shape=shape, busy=busy).estimate if hw is not None else None
        times.append(est.train_time_s if est is not None and est.train_time_s else None)
    names = ", ".join(c.preset for c in cfgs)
    text = f"Queue {len(cfgs)} training runs ({names}) on this model and data? They train one after another"
    if all(times):
        each = ", ".join(f"~{fmt_duration(t)}" for t in times)
        text += f": about {fmt_duration(sum(times))} of training in all ({each})"
        text += ", plus the comparisons with the base model." if cfgs[0].evaluation.enabled else "."
    else:
        text += "; how long they take is not known here."

    def named(keys) -> str:
        return ", ".join(re.sub(r" \(.*\)$", "", LABELS.get(k.split(".")[-1], k)) for k in keys)

    notes = []
    if kept:
        notes.append(f"All three keep your {named(kept)}.")
    if ignored:
        notes.append(f"Each takes its own preset's {named(ignored)}: your edit there is not used.")
    if notes:
        text += "\n\n" + " ".join(notes)
    return text + "\n\nThe ranking opens once they are queued; n or Esc queues nothing."
