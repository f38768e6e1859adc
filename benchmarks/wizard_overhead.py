"""Does watching a run slow it down? The same training through the engine alone, the CLI, and the wizard.

Run: python benchmarks/wizard_overhead.py [--steps 16] [--rounds 2]

Each way starts the same run (bundled SmolLM2-135M-Instruct, the sample tickets,
balanced preset, --steps optimizer steps, no evaluation) as a detached trainer
process, and differs only in what watches it:

- engine: nothing (this script waits on run.toml);
- cli: `tunewiz attach RUN --plain`, printing every event as it comes;
- wizard: the Textual app on the run's train screen (headless, 80x24): loss
  plot, live log, progress, refreshed as events arrive.

The ways alternate (engine, cli, wizard, engine, ...) so drift in machine load
hits all three. Printed: the trainer's own non-padding tokens/s per run (from
run.toml [results], first step excluded by the trainer's timing), and the median
of each way against the engine's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tunewiz.core.bookkeeping import runs
from tunewiz.core.models import resolve as models
from tunewiz.core.planning import presets
from tunewiz.core.toml import read_toml  # noqa: E402
from tunewiz.core.training import launcher


def make_config(steps: int):
    cfg = presets.build_config("balanced")
    cfg.name = "overhead"
    cfg.data.path = str(ROOT / "sample_data" / "support_tickets.jsonl")
    cfg.training.max_steps = steps
    cfg.evaluation.enabled = False
    return cfg.validate()


def watch_with_cli(run_dir: Path, home: Path) -> None:
    cmd = [sys.executable, "-m", "tunewiz.tui.cli", "--home", str(home), "attach", run_dir.name, "--plain"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def watch_with_wizard(run_dir: Path, home: Path) -> None:
    from tunewiz.tui.app import create_app

    async def run() -> None:
        app = create_app(home, start="attach", run=run_dir)
        async with app.run_test(size=(80, 24)) as pilot:
            while not launcher.is_finished(run_dir):
                await pilot.pause(0.5)
            await pilot.pause(1.0)

    asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--home", help="TUNEWIZ_HOME with the converted model (default: a temporary one)")
    ns = ap.parse_args()
    home = Path(ns.home) if ns.home else Path(tempfile.mkdtemp(prefix="tunewiz-overhead-")) / "home"
    models.resolve(models.DEFAULT_MODEL, home)  # convert once, outside the timings

    ways = {"engine": lambda d: launcher.wait(d), "cli": lambda d: watch_with_cli(d, home)}
    ways["wizard"] = lambda d: watch_with_wizard(d, home)
    got: dict[str, list[float]] = {w: [] for w in ways}
    print(f"{ns.steps} steps of the balanced preset on the sample tickets, {ns.rounds} round(s)")
    print(f"{'watched by':<10} {'tok/s':>8} {'train s':>8}")
    for _ in range(ns.rounds):
        for way, watch in ways.items():
            run_dir = launcher.submit(make_config(ns.steps), home)
            watch(run_dir)
            launcher.wait(run_dir)
            doc = read_toml(run_dir / runs.RECORD)
            if doc["run"]["status"] != "completed":
                sys.exit(f"run failed: {doc['run'].get('failure_reason')} (see {run_dir / runs.LOG})")
            r = doc["results"]
            got[way].append(r["tokens_per_s"])
            print(f"{way:<10} {r['tokens_per_s']:>8.1f} {r['train_time_s']:>8.0f}")
    base = statistics.median(got["engine"])
    for way in ("cli", "wizard"):
        m = statistics.median(got[way])
        print(f"median {way}: {m:.1f} tok/s, {m / base - 1:+.1%} against the engine alone ({base:.1f})")


if __name__ == "__main__":
    main()
