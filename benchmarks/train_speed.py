"""tunewiz's training defaults against the textbook recipe, on the same model, data and examples.

Run: python benchmarks/train_speed.py [--rows 96] [--rounds 2]

The textbook recipe is trl's SFTTrainer as the usual guides set it up: batch 2 x
accumulation 4, max length 2048, padding to the longest in the batch, gradient
checkpointing on, lora_dropout 0.05, every position through the output layer.
tunewiz's defaults: the planner's batch for this device, no dropout, length-grouped
batches, gradient checkpointing only when memory needs it, output layer on trained
positions only. Both: balanced preset (rank 16, lr 2e-4), effective batch 8, one
epoch over the same rows, through the real trainer process (`python -m tunewiz.core.training.trainer`).

The two recipes alternate (a b a b ...) so drift in machine load hits both. Printed per
run: non-padding tokens/s (whole training, first step included), padding fraction, peak
memory (RSS on CPU), final train loss, held-out loss; then the median ratio b/a.

On a GPU: `--arch KEY` trains a random-weight model of a catalog architecture instead
(e.g. qwen2.5-1.5b, llama3.2-3b, llama3.1-8b; built from the catalog's shapes, with the
bundled tokenizer), `--method qlora` for QLoRA, `--data FILE` for longer examples, and
each run also prints its model-FLOPs utilisation: tokens/s x (4N + 6 L d s) / the GPU's
dense bf16 peak (N: weight-matrix parameters, L layers, d hidden size, s mean tokens per
example; H100 SXM 989 TFLOP/s, not the sparse 1,979).
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

from tunewiz.core.bookkeeping import runs
from tunewiz.core.models import resolve as models
from tunewiz.core.planning import presets
from tunewiz.core.toml import read_toml  # noqa: E402

TEXTBOOK = {
    "per_device_batch_size": 2,
    "gradient_accumulation_steps": 4,
    "gradient_checkpointing": True,
    "lora_dropout": 0.05,
    "group_by_length": False,
    "lm_head_trained_only": False,
    "auto_batch_split": False,
}


def random_model(key: str, dest: Path, tokenizer_dir: Path) -> Path:
    """A random-weight model with a catalog architecture's shapes (speed does not depend on the weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from tunewiz.core.models import catalog

    spec = catalog.lookup(key)
    if spec.fused or spec.key.startswith(("gemma", "phi")):
        sys.exit(f"{key}: only Llama, Mistral, SmolLM and Qwen shapes are built here (Llama or Qwen blocks)")
    model_type = "qwen3" if spec.qk_norm else "qwen2" if spec.qkv_bias else "llama"
    config = AutoConfig.for_model(
        model_type, hidden_size=spec.hidden, num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads, intermediate_size=spec.intermediate, vocab_size=spec.vocab,
        tie_word_embeddings=spec.tied, head_dim=spec.hd, max_position_embeddings=8192,
    )  # fmt: skip
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(dest)
    return dest


def mfu(doc: dict) -> float | None:
    """Model-FLOPs utilisation of a finished run on a GPU: tokens/s x (4N + 6 L d s) / dense bf16 peak."""
    from tunewiz.core.models import catalog
    from tunewiz.core.planning import memory

    gpus = doc.get("hardware", {}).get("gpus") or []
    if not gpus:
        return None
    name = str(gpus[0].get("name", "")).lower()
    peak = 989e12 if "h100" in name and "pcie" not in name else memory.gpu_peak_flops(name)
    spec = catalog.from_dir(doc["model"]["resolved_path"])
    n = spec.layers * spec.layer_linear_params + spec.vocab * spec.hidden
    d = doc["data"]
    s = d["total_tokens"] / max(d["train_rows"], 1)
    return doc["results"]["tokens_per_s"] * (4 * n + 6 * spec.layers * spec.hidden * s) / peak


def make_config(data: Path, recipe: str, hw_device: str, model_id: str = "", method: str = "lora"):
    cfg = presets.build_config("balanced")
    cfg.name = f"bench-{recipe}"
    if model_id:
        cfg.model.id = model_id
    cfg.model.method = method
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
    parser.add_argument("--arch", help="a catalog architecture, random weights (GPU runs), e.g. llama3.1-8b")
    parser.add_argument("--method", default="lora", choices=["lora", "qlora"])
    parser.add_argument("--data", help="a data file instead of the sample tickets (its first --rows rows)")
    ns = parser.parse_args()

    from tunewiz.core.planning import hardware

    hw = hardware.detect()
    tmp = tempfile.mkdtemp(prefix="tunewiz-bench-")
    home = Path(ns.home) if ns.home else Path(tmp) / "home"
    models.resolve(models.DEFAULT_MODEL, home)  # convert once, outside the timings
    data = Path(tmp) / "rows.jsonl"
    source = Path(ns.data) if ns.data else ROOT / "sample_data" / "support_tickets.jsonl"
    lines = source.read_text(encoding="utf-8").splitlines()[: ns.rows]
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    model_id = ""
    if ns.arch:
        bundled = models.resolve(models.DEFAULT_MODEL, home).path
        model_id = str(random_model(ns.arch, Path(tmp) / f"random-{ns.arch}", bundled))

    where = ", ".join(f"{g.name}" for g in hw.gpus) or f"{hw.cpu_model}, {hw.cpu_physical_cores} cores"
    print(f"{where}; {ns.arch or 'bundled SmolLM2-135M'} ({ns.method}); {ns.rows} rows of {source.name}, 1 epoch each")
    print(
        f"{'recipe':<9} {'tok/s':>7} {'padding':>8} {'peak MB':>8} {'train loss':>10} {'eval loss':>9} {'time':>6}"
        f" {'MFU':>6}"
    )
    results: dict[str, list[dict]] = {"textbook": [], "tunewiz": []}
    for _ in range(ns.rounds):
        for recipe in ("textbook", "tunewiz"):
            run_dir = runs.create_run(make_config(data, recipe, hw.device, model_id, ns.method), home)
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            subprocess.run(
                [sys.executable, "-m", "tunewiz.core.training.trainer", str(run_dir)],
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
            u = mfu(doc)
            print(
                f"{recipe:<9} {r['tokens_per_s']:>7.1f} {r['padding_fraction']:>8.1%} {r['peak_memory_mb']:>8.0f} "
                f"{r['train_loss']:>10.4f} {r.get('eval_loss', float('nan')):>9.4f} {r['train_time_s']:>5.0f}s"
                f" {'n/a' if u is None else f'{u:.1%}':>6}"
            )
    a = statistics.median(r["tokens_per_s"] for r in results["textbook"])
    b = statistics.median(r["tokens_per_s"] for r in results["tunewiz"])
    ea = statistics.median(r.get("eval_loss", float("nan")) for r in results["textbook"])
    eb = statistics.median(r.get("eval_loss", float("nan")) for r in results["tunewiz"])
    print(f"median tokens/s: textbook {a:.1f}, tunewiz {b:.1f}; ratio b/a = {b / a:.2f}x")
    print(f"median held-out loss: textbook {ea:.4f}, tunewiz {eb:.4f}")


if __name__ == "__main__":
    main()
