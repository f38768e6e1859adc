"""Each GGUF export type, run by llama.cpp: size, answers identical to the adapter model's, stop rate, time.

    python benchmarks/gguf_exports.py [--steps 16] [--home DIR] [--run RUN_DIR] [--types f16 q8_0 ...]

Trains the bundled SmolLM2-135M-Instruct on the sample tickets (balanced preset, --steps optimizer steps;
or reuses --run), then exports it as each GGUF type (`tunewiz export RUN --format gguf --type T`) with the
held-out check on: every held-out prompt (36) answered greedily by llama.cpp from the GGUF (its chat
template, its vocabulary, its end-of-generation tokens) and compared token for token with the adapter
model's answers, which are computed once before the first export (they are cached per adapter) so each
type's time is its own: conversion, quantisation, Modelfile and the llama.cpp check. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TYPES = ["f16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0"]


def train(home: Path, steps: int) -> Path:
    from tunewiz.core.bookkeeping import runs
    from tunewiz.core.planning import presets
    from tunewiz.core.training import launcher
    from tunewiz.tui import commands

    cfg = presets.build_config("balanced")
    cfg.name = "gguf-bench"
    cfg.data.path = str(ROOT / "sample_data" / "support_tickets.jsonl")
    cfg.training.max_steps = steps
    cfg.evaluation.enabled = False  # the exports run their own comparison
    t0 = time.time()
    run_dir = commands.launch(cfg.validate(), home)
    doc = launcher.wait(run_dir, timeout=24 * 3600).to_dict()
    if doc["run"]["status"] != "completed":
        sys.exit(f"training {doc['run']['status']}: see {run_dir / runs.LOG}")
    print(f"trained {run_dir.name}: {steps} steps in {time.time() - t0:.0f} s, loss {doc['results'].get('train_loss')}")
    return run_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--home", help="TUNEWIZ_HOME with the converted model (default: a temporary one)")
    ap.add_argument("--run", help="an existing run directory to export instead of training one")
    ap.add_argument("--types", nargs="+", default=TYPES)
    ns = ap.parse_args()

    import llama_cpp
    from tunewiz.core.models import loading as modeling
    from tunewiz.core.models import resolve as models
    from tunewiz.core.shipping import export, merged_export

    if ns.run:
        run_dir = Path(ns.run).resolve()
    else:
        home = Path(ns.home) if ns.home else Path(tempfile.mkdtemp(prefix="tunewiz-ggufbench-")) / "home"
        models.resolve(models.DEFAULT_MODEL, home)  # convert once, outside the timings
        run_dir = train(home, ns.steps)

    t0 = time.time()
    rm = merged_export.open_run(run_dir)
    tok = modeling.load_tokenizer(rm.base_path)
    held = merged_export.held_out(rm, tok)
    ref, stop = merged_export.reference_answers(rm, tok, "float32", held)
    stopped = sum(bool(r) and r[-1] in stop for r in ref)
    print(
        f"adapter model: {len(ref)} held-out prompts, {held.max_new_tokens} new tokens at most, "
        f"{stopped}/{len(ref)} answers end at the end-of-turn token ({time.time() - t0:.0f} s); "
        f"llama-cpp-python {llama_cpp.__version__}, {os.cpu_count()} CPUs"
    )
    rows = []
    for q in ns.types:
        t = time.time()
        e = export.export(run_dir, "gguf", quant=q)
        rows.append((q, e, time.time() - t))
        print(f"  {q}: {e['agreement']:.0%} identical, stop {e['stop_rate']:.0%}, {time.time() - t:.0f} s", flush=True)

    print("\n| type | made by | size | identical answers | identical tokens | stops at end of turn | time |")
    print("|---|---|---|---|---|---|---|")
    for q, e, secs in rows:
        made = f"quantizer (from {e['quantized_from']})" if e.get("quantized_from") else "converter"
        print(
            f"| {q} | {made} | {e['size_mb']} MiB | {e['agreement']:.0%} | {e['token_agreement']:.0%} | "
            f"{e['stop_rate']:.0%} (adapter: {e['reference_stop_rate']:.0%}) | {secs:.0f} s |"
        )
    for q, e, _ in rows:
        if e.get("warning"):
            print(f"{q}: WARNING {e['warning']}")
    print(f"\nrun: {run_dir}; converter: {rows[0][1]['converter'] if rows else '-'}")


if __name__ == "__main__":
    main()
