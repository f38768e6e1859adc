"""What this machine can train, and with which settings: `tunewiz hw` (the hardware), `fit` (will a
model fit: the planner's decisions and memory breakdown), `probe` (a few real steps measured against
the estimate), `recommend` (the catalog ranked by what fits) and `settings` (every setting with its help).
"""

from __future__ import annotations

import json
from pathlib import Path

from tunewiz.core.bookkeeping import runs
from tunewiz.core.units import fmt_duration
from tunewiz.tui.commands.request import UserError, fit_request, probe_request
from tunewiz.tui.commands.shared import data_shape_of
from tunewiz.tui.record_text import hang_all


def cmd_hw(ns) -> int:
    from tunewiz.core.planning import hardware

    hw = hardware.detect(runs.home(ns.home))
    if ns.json:
        print(json.dumps(hw.to_dict(), indent=2))
        return 0
    print(hang_all(hw.summary() + [f"-> {line}" for line in hw.advice()]))
    return 0


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


def _fit_hardware(ns):
    """The detected hardware, or a pretend GPU / RAM size given on the command line."""
    from tunewiz.core.planning import hardware

    hw = hardware.detect(runs.home(ns.home))
    if getattr(ns, "gpu_gb", None):
        hw.gpus = [hardware.GPU(0, f"{ns.gpu_gb:g} GB GPU (--gpu-gb)", ns.gpu_gb, ns.gpu_gb, "8.0", True)]
    if getattr(ns, "ram_gb", None):
        hw.ram_total_gb = hw.ram_available_gb = ns.ram_gb
    return hw


def cmd_fit(ns) -> int:
    """Will it fit: the planner's decisions for this model, preset and data on this machine (or a
    pretend one), with the memory breakdown and the verdict."""
    from tunewiz.core.models import catalog
    from tunewiz.core.planning import planner
    from tunewiz.core.planning.memory import DataShape

    hw = _fit_hardware(ns)
    spec = catalog.lookup(ns.model)  # CatalogError: a TunewizError, printed by main
    cfg = fit_request(ns, spec)
    if ns.data:
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


def cmd_probe(ns) -> int:
    """A few real training steps at the data's longest example: predicted vs measured memory and speed."""
    from tunewiz.core.planning import hardware
    from tunewiz.core.training import probe

    if ns.steps < 1:
        raise UserError(f"--steps {ns.steps}: probe at least 1 step (3 or more give a steadier time)")
    home_dir = runs.home(ns.home)
    hw = hardware.detect(home_dir)
    cfg = probe_request(ns)
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
