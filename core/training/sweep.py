"""Try all three presets: conservative, balanced and aggressive queued on the same data and the same
held-out split, then ranked by the held-out result.

The three runs go through the run queue (core.queue), so they train one after another on this
machine's device, each with its own record; each record names the sweep under [run] (``sweep = ID``).
:func:`load` reads them back as a :class:`Sweep`: ranked by the fine-tuned model's held-out headline
figure (the same kind for all three: accuracy, fields correct or exact match), ties and runs without
a comparison by the held-out loss; with the training time, the peak memory and the loss curves from
events.jsonl; and, where the held-out loss rose while the training loss fell, the overfitting the
guides warn about (:class:`Overfit`). The words are tunewiz.tui.record_text's (sweep_lines).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tunewiz.core.bookkeeping import record, runs
from tunewiz.core.bookkeeping.events import read_events
from tunewiz.core.config import RunConfig, TrainingConfig, apply_overrides
from tunewiz.core.planning import presets

KEY = "sweep"
"""[run] sweep = ID: the sweep a run belongs to."""
PRESET_KEYS = {
    "lora_r",
    "lora_alpha",
    "learning_rate",
    "num_epochs",
    "per_device_batch_size",
    "gradient_accumulation_steps",
    "auto_batch_split",
}
"""The training settings a preset decides: each run of a sweep takes its own preset's."""


class SweepError(runs.RunError):
    """No such sweep, or an ambiguous reference to one; says what to type instead."""


def configs(base: RunConfig, overrides: list[str] | tuple[str, ...] = ()) -> list[RunConfig]:
    """The three presets on `base`'s model, data, held-out split and evaluation. The training settings
    of `base` that its own preset does not set (max_steps, threads, ...) stay; `overrides` (key=value,
    as --set) then apply to all three."""
    mine = presets.training_for(base.preset) if base.preset in presets.PRESETS else TrainingConfig()
    kept = {
        f.name: getattr(base.training, f.name)
        for f in dataclasses.fields(TrainingConfig)
        if f.name not in PRESET_KEYS and getattr(base.training, f.name) != getattr(mine, f.name)
    }
    stem = Path(base.data.path).stem or "data"
    out = []
    for name in presets.PRESETS:
        cfg = copy.deepcopy(base)
        cfg.preset, cfg.name = name, f"{stem}-{name}"
        cfg.training = presets.training_for(name)
        for key, value in kept.items():
            setattr(cfg.training, key, copy.deepcopy(value))
        apply_overrides(cfg, list(overrides))
        out.append(cfg.validate())
    return out


def new_id(data_path: str) -> str:
    """A sweep's id: when it was made and the data's name, like a run's."""
    return f"{datetime.now():%Y%m%d-%H%M%S}-{runs.slug(Path(data_path).stem or 'data')}"


def submit(base: RunConfig, home_dir: Path, overrides=(), hw=None, warn=None):
    """Check the three runs, then queue them one after another (nothing is queued if one is refused).
    Returns (the sweep's id, the core.queue.Queued of each run, conservative first)."""
    from tunewiz.core.training import queue

    cfgs = configs(base, overrides)
    sweep_id = new_id(base.data.path)
    return sweep_id, queue.submit_many(cfgs, home_dir, hw=hw, warn=warn, extra={"run": {KEY: sweep_id}})


# -- reading a sweep back ---------------------------------------------------------------------------


def members(home_dir: Path) -> dict[str, list[tuple[Path, runs.Record]]]:
    """Sweep id -> its runs with their records (readable records only)."""
    out: dict[str, list[tuple[Path, runs.Record]]] = {}
    for run_dir in runs._run_dirs(runs.runs_root(home_dir)):
        rec, _ = runs.record_problem(run_dir / runs.RECORD)
        if rec is not None and rec.run.sweep:
            out.setdefault(rec.run.sweep, []).append((run_dir, rec))
    return out


def find(home_dir: Path, ref: str = "last") -> str:
    """A sweep's id from `last`, its id, or a unique part of it."""
    known = members(home_dir)
    if not known:
        raise SweepError(
            f"no sweep under {runs.runs_root(home_dir)}; `tunewiz sweep --data FILE` queues the three presets"
        )
    if ref == "last":
        return max(known, key=lambda s: max(runs._created_unix(doc) for _, doc in known[s]))
    if ref in known:
        return ref
    matches = sorted(s for s in known if ref in s)
    if len(matches) == 1:
        return matches[0]
    listed = ", ".join(sorted(known)[-5:])
    if not matches:
        raise SweepError(f"no sweep {ref!r}; the latest: {listed} (`tunewiz sweep show last`)")
    raise SweepError(f"{ref!r} matches {len(matches)} sweeps ({', '.join(matches[:5])}); give more of the id")


@dataclass
class Overfit:
    """The held-out loss rose while the training loss fell: at its lowest at `best_step`, higher by
    `last_step`, while the training loss went from `train_then` to `train_now`."""

    best_step: int
    best_eval: float
    last_step: int
    last_eval: float
    train_then: float
    train_now: float
    best_epoch: float | None = None


def curve(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """(step, value) by step, the last value of a step kept (a resumed run repeats the steps after its
    checkpoint).

    >>> curve([(1, 2.0), (2, 1.5), (2, 1.4), (3, 1.2)])
    [(1, 2.0), (2, 1.4), (3, 1.2)]
    """
    return sorted(dict(points).items())


def overfitting(train: list[tuple[int, float]], evals: list[tuple[int, float]], rise: float = 0.01) -> Overfit | None:
    """Whether the held-out loss rose (by more than `rise`, relative) after its lowest point while the
    training loss fell over the same steps (the mean of the last three training losses up to each).

    >>> train = [(s, 2.0 - 0.1 * s) for s in range(1, 16)]
    >>> o = overfitting(train, [(5, 1.2), (10, 1.1), (15, 1.3)])
    >>> (o.best_step, o.last_step, o.best_eval, o.last_eval)
    (10, 15, 1.1, 1.3)
    >>> overfitting(train, [(5, 1.2), (10, 1.1), (15, 1.05)]) is None
    True
    """
    if len(evals) < 2 or not train:
        return None
    best_step, best_eval = min(evals, key=lambda p: (p[1], p[0]))
    last_step, last_eval = evals[-1]
    if last_step <= best_step or last_eval <= best_eval * (1 + rise):
        return None

    def near(step: int) -> float | None:
        values = [v for s, v in train if s <= step][-3:]
        return sum(values) / len(values) if values else None

    then, now = near(best_step), near(last_step)
    if then is None or now is None or now >= then:
        return None
    return Overfit(best_step, best_eval, last_step, last_eval, round(then, 4), round(now, 4))


@dataclass
class Entry:
    """One run of a sweep, as the ranking shows it."""

    run_id: str
    path: Path
    preset: str
    status: str
    label: str
    """The status as listings show it ('queued #2', 'running 3/10')."""
    results: record.Results
    value: float | None = None
    """The ranking's figure: the headline share (higher is better) or the eval loss (lower)."""
    eval_loss: float | None = None
    train_loss: float | None = None
    time_s: float | None = None
    """Training time (the comparison's time apart)."""
    peak_mb: float | None = None
    train: list[tuple[int, float]] = field(default_factory=list)
    evals: list[tuple[int, float]] = field(default_factory=list)
    overfit: Overfit | None = None
    rank: int = 0
    best: bool = False


@dataclass
class Sweep:
    id: str
    entries: list[Entry]
    """Ranked: completed runs by the ranking's figure first, the others after, in preset order."""
    basis: str
    """What ranks the runs: a headline key of [results.finetuned] ('field_match', ...) or 'eval_loss'."""
    kind: str = ""
    """The answers' kind when ranked by the headline: labels, json or text."""
    data: str = ""
    model: str = ""
    eval_rows: Any = None

    @property
    def best(self) -> Entry | None:
        return next((e for e in self.entries if e.best), None)

    @property
    def done(self) -> bool:
        return all(e.status in runs.FINAL for e in self.entries)


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def entry(r: runs.RunSummary) -> Entry:
    res = r.record.results
    events, _ = read_events(r.path)

    def points(kind: str, key: str) -> list[tuple[int, float]]:
        return curve([(e["step"], e[key]) for e in events if e.get("event") == kind and _num(e.get(key)) is not None])

    train, evals = points("step", "loss"), points("eval", "eval_loss")
    label = r.label
    if r.status in runs.ACTIVE:
        steps = [e for e in events if e.get("event") == "step"]
        if steps:
            label = f"{r.status} {steps[-1].get('step')}/{steps[-1].get('max_steps') or '?'}"
    e = Entry(
        run_id=r.id,
        path=r.path,
        preset=r.preset,
        status=r.status,
        label=label,
        results=res,
        eval_loss=res.finetuned_eval_loss,
        train_loss=res.train_loss,
        time_s=res.train_time_s if res.train_time_s is not None else res.wall_time_s,
        peak_mb=res.peak_memory_mb,
        train=train,
        evals=evals,
        overfit=overfitting(train, evals),
    )
    if e.overfit is not None:
        epochs = {s: ev.get("epoch") for ev in events if ev.get("event") == "step" for s in [ev.get("step")]}
        e.overfit.best_epoch = _num(epochs.get(e.overfit.best_step))
    return e


def load(home_dir: Path, sweep_id: str) -> Sweep:
    """The sweep's runs, refreshed (a dead trainer is crashed), ranked; the best marked."""
    order = list(presets.PRESETS)
    found = members(home_dir).get(sweep_id)
    if not found:
        raise SweepError(f"no sweep {sweep_id!r} under {runs.runs_root(home_dir)}")
    listed = {r.id: r for r in runs.list_runs(home_dir)}  # queue places, refreshed statuses
    items = [listed[d.name] if d.name in listed else runs.summary_of(d) for d, _ in found]
    entries = [entry(r) for r in items]
    done = [e for e in entries if e.status == "completed"]
    fts = [e.results.finetuned or {} for e in done]
    kinds = {ft.get("kind") for ft in fts}
    heads = {ft.get("headline") for ft in fts}
    basis, kind = "eval_loss", ""
    if done and len(kinds) == 1 and len(heads) == 1 and None not in kinds | heads:
        basis, kind = str(heads.pop()), str(kinds.pop())
        if not all(_num(ft.get(basis)) is not None for ft in fts):
            basis, kind = "eval_loss", ""

    def value(e: Entry) -> float | None:
        if basis == "eval_loss":
            return e.eval_loss
        return _num((e.results.finetuned or {}).get(basis))

    for e in done:
        e.value = value(e)
    big = float("inf")

    def key(e: Entry):
        place = order.index(e.preset) if e.preset in order else len(order)
        if e.status != "completed" or e.value is None:
            return (1, 0.0, 0.0, place)
        first = e.value if basis == "eval_loss" else -e.value
        return (0, first, e.eval_loss if e.eval_loss is not None else big, place)

    entries.sort(key=key)
    for n, e in enumerate(entries, 1):
        e.rank = n
    if entries and entries[0].status == "completed" and entries[0].value is not None:
        entries[0].best = True
    first = found[0][1]
    rows = [rec.data.eval_rows for _, rec in found]
    return Sweep(
        id=sweep_id,
        entries=entries,
        basis=basis,
        kind=kind,
        data=first.data.path or "",
        model=first.model.id or "",
        eval_rows=next((n for n in rows if n), None),
    )
