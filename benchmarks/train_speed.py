"""tunewiz's training defaults against the textbook recipe, on the same model, data and examples.

Run: python benchmarks/train_speed.py [--rows 96] [--rounds 2]

The textbook recipe is trl's SFTTrainer as the usual guides set it up: batch 2 x
accumulation 4, max length 2048, padding to the longest in the batch, gradient
checkpointing on, lora_dropout 0.05, every position through the output layer.
tunewiz's defaults: the planner's batch for this device, no dropout, length-grouped
batches, gradient checkpointing only when memory needs it, output layer on trained
positions only. Both: balanced preset (rank 16, lr 2e-4), effective batch 8, one
epoch over the same rows, through the real trainer process (`python -m core.trainer`).

The two recipes alternate (a b a b ...) so drift in machine load hits both. Printed per
run: non-padding tokens/s (whole training, first step included), padding fraction, peak
memory (RSS on CPU), final train loss, held-out loss; then the median ratio b/a.
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
sys.path.insert(0, str(ROOT))

from core import models, presets, runs  # noqa: E402
from core.toml import read_toml  # noqa: E402

TEXTBOOK = {
    "per_device_batch_size": 2,
    "gradient_accumulation_steps": 4,
    "gradient_checkpointing": True,
    "lora_dropout": 0.05,
    "group_by_length": False,
    "lm_head_trained_only": False,
}


def make_config(data: Path, recipe: str, hw_device: str):
    cfg = presets.build_config("balanced", max_per_device=presets.max_per_device_batch(hw_device))
    cfg.name = f"bench-{recipe}"
    cfg.data.path = str(data)
    cfg.data.eval_fraction = 0.1
    cfg.training.num_epochs = 1.0
    cfg.evaluation.enabled = False
    if recipe == "textbook":
        cfg.data.max_seq_len = 2048
        for k, v in TEXTBOOK.items():
            setattr(cfg.training, k, v)
    return cfg.validate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=96, help="rows of sample_data/support_tickets.jsonl to use")
    parser.add_argument("--rounds", type=int, default=2, help="how many (textbook, tunewiz) pairs")
    parser.add_argument("--home", help="TUNEWIZ_HOME with the converted model (default: a temporary one)")
    ns = parser.parse_args()

    from core import hardware

    hw = hardware.detect()
    tmp = tempfile.mkdtemp(prefix="tunewiz-bench-")
    home = Path(ns.home) if ns.home else Path(tmp) / "home"
    models.resolve(models.DEFAULT_MODEL, home)  # convert once, outside the timings
    data = Path(tmp) / "tickets.jsonl"
    lines = (ROOT / "sample_data" / "support_tickets.jsonl").read_text().splitlines()[: ns.rows]
    data.write_text("\n".join(lines) + "\n")

    print(f"{hw.cpu_model}, {hw.cpu_physical_cores} cores, device {hw.device}; {ns.rows} rows, 1 epoch each")
    print(f"{'recipe':<9} {'tok/s':>7} {'padding':>8} {'peak MB':>8} {'train loss':>10} {'eval loss':>9} {'time':>6}")
    results: dict[str, list[dict]] = {"textbook": [], "tunewiz": []}
    for _ in range(ns.rounds):
        for recipe in ("textbook", "tunewiz"):
            run_dir = runs.create_run(make_config(data, recipe, hw.device), home)
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            subprocess.run(
                [sys.executable, "-m", "core.trainer", str(run_dir)],
                env=env,
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
            )
            doc = read_toml(run_dir / runs.RECORD)
            if doc["run"]["status"] != "completed":
                sys.exit(f"{recipe} run failed: {doc['run'].get('failure_reason')}\nsee {run_dir / runs.LOG}")
            r = doc["results"]
            results[recipe].append(r)
            print(
                f"{recipe:<9} {r['tokens_per_s']:>7.1f} {r['padding_fraction']:>8.1%} {r['peak_memory_mb']:>8.0f} "
                f"{r['train_loss']:>10.4f} {r.get('eval_loss', float('nan')):>9.4f} {r['train_time_s']:>5.0f}s"
            )
    a = statistics.median(r["tokens_per_s"] for r in results["textbook"])
    b = statistics.median(r["tokens_per_s"] for r in results["tunewiz"])
    ea = statistics.median(r.get("eval_loss", float("nan")) for r in results["textbook"])
    eb = statistics.median(r.get("eval_loss", float("nan")) for r in results["tunewiz"])
    print(f"median tokens/s: textbook {a:.1f}, tunewiz {b:.1f}; ratio b/a = {b / a:.2f}x")
    print(f"median held-out loss: textbook {ea:.4f}, tunewiz {eb:.4f}")


if __name__ == "__main__":
    main()
