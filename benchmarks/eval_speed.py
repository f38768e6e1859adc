"""How long the held-out comparison takes: tunewiz's generation against a plain one-row-at-a-time loop.

    python benchmarks/eval_speed.py [--rows 200] [--home DIR] [--dtype float32 bfloat16]

The bundled SmolLM2-135M-Instruct with a LoRA adapter of small random weights (rank 16, all linear
layers: the speed does not depend on what the adapter learned) answers SST-2-like sentiment prompts (a short
review, one-word label), first as the fine-tuned model (adapter on), then as the base (adapter off),
the way `core.evaluate.compare` does. For each dtype it prints seconds per row of:

* ``per-row``: the textbook loop: for each prompt, ``apply_chat_template`` + ``model.generate``, greedy;
* ``tunewiz``: ``core.evaluate.generate`` (the comparison's own generation);

and how many of tunewiz's answers equal the per-row loop's (they must all be equal: batching may not
change what is measured).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SYSTEM = "Classify the sentiment of the movie review as positive or negative. Answer with one word."
GOOD = ["a triumph", "warm and funny", "beautifully acted", "the best film this year", "a joy to watch", "moving"]
BAD = ["a mess", "dull and far too long", "badly written", "a waste of two hours", "painfully slow", "forgettable"]
ABOUT = ["the plot", "the cast", "the script", "the ending", "this sequel", "the soundtrack", "the director's cut"]


def sst2_like(n: int, seed: int = 0) -> list[tuple[list[dict], str]]:
    """(prompt messages, expected label) pairs shaped like SST-2: one or two short clauses, two labels."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        words = GOOD if label == "positive" else BAD
        text = f"{rng.choice(ABOUT).capitalize()} is {rng.choice(words)}"
        if rng.random() < 0.5:
            text += f", and {rng.choice(ABOUT)} is {rng.choice(words)}"
        rows.append(([{"role": "system", "content": SYSTEM}, {"role": "user", "content": text + "."}], label))
    return rows


def per_row(model, tok, prompts, budget, stop_ids) -> list[str]:
    import torch

    out = []
    for p in prompts:
        ids = tok.apply_chat_template(p, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=budget, do_sample=False, eos_token_id=stop_ids)
        out.append(tok.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--home", help="TUNEWIZ_HOME with the converted model (default: a temporary one)")
    ap.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--skip-per-row", action="store_true", help="only tunewiz's generation")
    ns = ap.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from tunewiz.core.judging import evaluate
    from tunewiz.core.models import resolve as models
    from tunewiz.core.models.loading import answer_budget, end_of_turn_ids, load_base, load_tokenizer

    home = Path(ns.home) if ns.home else Path(tempfile.mkdtemp(prefix="tunewiz-evalbench-"))
    path = models.resolve(models.DEFAULT_MODEL, home).path
    tok = load_tokenizer(path)
    rows = sst2_like(ns.rows)
    prompts = [p for p, _ in rows]
    budget = answer_budget(tok, [a for _, a in rows])
    print(f"{ns.rows} SST-2-like rows, {budget} new tokens at most, {torch.get_num_threads()} threads")
    print(f"{'dtype':<10}{'model':<11}{'per-row s/row':>14}{'tunewiz s/row':>14}{'same answers':>14}")
    for dtype in ns.dtype:
        torch.manual_seed(0)
        base = load_base(path, dtype, for_training=False)
        model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
        with torch.no_grad():  # a small random change, as a short training makes (answers still end)
            for name, w in model.named_parameters():
                if "lora_B" in name:
                    w.normal_(0, 0.02)
        model.eval()
        stop = end_of_turn_ids(model, tok)
        for which in ("finetuned", "base"):
            ctx = model.disable_adapter() if which == "base" else _nothing()
            with ctx:
                t0 = time.perf_counter()
                ours, _ = evaluate.generate(model, tok, prompts, budget)
                t_ours = time.perf_counter() - t0
                if ns.skip_per_row:
                    print(f"{dtype:<10}{which:<11}{'-':>14}{t_ours / len(prompts):>14.3f}{'-':>14}", flush=True)
                    continue
                t0 = time.perf_counter()
                plain = per_row(model, tok, prompts, budget, stop)
                t_plain = time.perf_counter() - t0
            same = sum(a.strip() == b.strip() for a, b in zip(ours, plain, strict=True))
            print(
                f"{dtype:<10}{which:<11}{t_plain / len(prompts):>14.3f}{t_ours / len(prompts):>14.3f}"
                f"{f'{same}/{len(prompts)}':>14}",
                flush=True,
            )


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
