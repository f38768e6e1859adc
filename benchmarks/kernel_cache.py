"""The CPU trainer's bounded bf16 kernel caches against the libraries' defaults: speed and peak memory.

Run: python benchmarks/kernel_cache.py [--rows 324] [--rounds 2] [--home H]

oneDNN's primitive cache and PyTorch's ideep cache keep a compiled kernel (and its buffers) per input
shape, 1024 entries each; length-grouped batches bring a new sequence length nearly every step, so the
resident size climbs. The trainer bounds both at core.process_memory.KERNEL_CACHE_CAPACITY (steady_cpu_memory);
"library" sets them back to 1024 through the environment. Same model, data, preset (balanced, one epoch,
no held-out comparison), through the real trainer process, alternating (a b a b) so drift in machine load
hits both. Printed per run: tokens/s, peak RSS (VmHWM), the plan's estimate and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from train_speed import make_config  # noqa: E402
from tunewiz.core.bookkeeping import runs
from tunewiz.core.models import resolve as models
from tunewiz.core.toml import read_toml  # noqa: E402
from tunewiz.core.training import process_memory

LIBRARY_DEFAULT = "1024"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=324, help="rows of sample_data/support_tickets.jsonl to use")
    parser.add_argument("--rounds", type=int, default=2, help="how many (bounded, library) pairs")
    parser.add_argument("--home", help="TUNEWIZ_HOME with the converted model (default: a temporary one)")
    ns = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="tunewiz-bench-")
    home = Path(ns.home) if ns.home else Path(tmp) / "home"
    models.resolve(models.DEFAULT_MODEL, home)  # convert once, outside the timings
    data = Path(tmp) / "rows.jsonl"
    lines = (ROOT / "sample_data" / "support_tickets.jsonl").read_text(encoding="utf-8").splitlines()[: ns.rows]
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    bound = process_memory.KERNEL_CACHE_CAPACITY
    print(f"bundled SmolLM2-135M, balanced preset, {ns.rows} rows, 1 epoch; bounded = {bound}")
    print(f"{'caches':<8} {'tok/s':>7} {'peak MB':>8} {'estimate':>8} {'vs est.':>8}")
    results: dict[str, list[dict]] = {"bounded": [], "library": []}
    for _ in range(ns.rounds):
        for side in results:
            cfg = make_config(data, "tunewiz", "cpu")
            run_dir = runs.create_run(cfg, home)
            env = {k: v for k, v in os.environ.items() if k not in process_memory.KERNEL_CACHE_ENV}
            if side == "library":
                env.update(dict.fromkeys(process_memory.KERNEL_CACHE_ENV, LIBRARY_DEFAULT))
            subprocess.run(
                [sys.executable, "-m", "tunewiz.core.training.trainer", str(run_dir)],
                env=env, check=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            doc = read_toml(run_dir / runs.RECORD)
            if doc["run"]["status"] != "completed":
                sys.exit(f"{side} run failed: {doc['run'].get('failure_reason')}\nsee {run_dir / runs.LOG}")
            r, est = doc["results"], doc.get("estimate", {})
            results[side].append(r)
            print(
                f"{side:<8} {r['tokens_per_s']:>7.1f} {r['peak_memory_mb']:>8.0f} {est.get('peak_memory_mb', 0):>8.0f}"
                f" {r.get('peak_memory_vs_estimate', float('nan')):>+8.2f}"
            )
    for key in ("tokens_per_s", "peak_memory_mb"):
        a = statistics.median(r[key] for r in results["library"])
        b = statistics.median(r[key] for r in results["bounded"])
        print(f"median {key}: library {a:.1f}, bounded {b:.1f}; bounded/library = {b / a:.3f}")


if __name__ == "__main__":
    main()
