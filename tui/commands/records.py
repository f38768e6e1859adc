"""The run records: `tunewiz runs` (every run in a table that fits the terminal), `tunewiz show` (one
run's record, also a damaged one) and `tunewiz repair` (a damaged record rebuilt from the run directory).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from tunewiz.core.bookkeeping import repair, runs
from tunewiz.core.units import fmt_duration
from tunewiz.tui.commands.shared import print_record_summary, warn
from tunewiz.tui.record_text import hang_all


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
        print(json.dumps(doc.to_dict(), indent=2, default=str))
    else:
        print_record_summary(doc)
        lost = runs.missing_adapter(run_dir, doc)
        if lost:
            print(hang_all([f"  problem: {lost}"]))
        if doc.run.status == runs.WAITING:
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
