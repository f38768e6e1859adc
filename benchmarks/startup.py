"""How long until the wizard's first screen is painted, in a fresh interpreter each time.

Run: python benchmarks/startup.py [--runs 5]

Prints, per run, the time from interpreter start to Textual's `on_ready` (the first
screen painted, headless) and the whole process wall time; then the median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import os, sys, time
t0 = float(os.environ["T0"])
from pathlib import Path
from tunewiz.tui.app import TunewizApp

class Bench(TunewizApp):
    def on_ready(self):
        super().on_ready()
        self.painted = time.time() - t0
        self.heavy = sorted(m for m in ("torch", "transformers", "trl", "peft") if m in sys.modules)
        self.exit()

app = Bench(Path(os.environ["TUNEWIZ_HOME"]), start=os.environ.get("START", "wizard"))
app.run(headless=True, size=(80, 24))
print(f"READY {app.painted:.3f} heavy modules loaded by then: {app.heavy}")
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--start", default="wizard", choices=["wizard", "history"])
    ns = parser.parse_args()
    ready, walls = [], []
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TUNEWIZ_HOME": home, "START": ns.start}
        for i in range(ns.runs):
            t0 = time.time()
            out = subprocess.run(
                [sys.executable, "-c", CHILD], env={**env, "T0": repr(t0)}, capture_output=True, text=True, timeout=120
            )
            wall = time.time() - t0
            line = next((x for x in out.stdout.splitlines() if x.startswith("READY")), None)
            if line is None:
                sys.exit(f"run {i + 1}: no READY line\n{out.stdout}\n{out.stderr}")
            ready.append(float(line.split()[1]))
            walls.append(wall)
            detail = line.split(" ", 2)[2]
            print(f"run {i + 1}: first screen painted after {ready[-1]:.3f}s (process wall {wall:.3f}s) {detail}")
    print(
        f"median: first screen {statistics.median(ready):.3f}s, process wall {statistics.median(walls):.3f}s "
        f"({ns.runs} runs, {os.cpu_count()} CPUs, start={ns.start})"
    )


if __name__ == "__main__":
    main()
