"""Base model vs fine-tuned model on held-out rows the model never trained on.

Both answers come from one PEFT model (the base is the same model with its
adapter disabled), with greedy decoding, so the only difference is the
adapter. Metrics per model:

* ``eval_loss``: mean loss over the trained (assistant) tokens of the held-out rows;
* ``exact_match``: the answer equals the expected one (after stripping whitespace);
* where expected answers are JSON objects: ``json_valid`` (share that parse as a
  JSON object) and ``field_match`` (share of expected fields with the expected value);
* by kind of answer (labels, JSON objects, free text), core.metrics: the headline's 95%
  interval, precision / recall / F1 per label and the confusion matrix, accuracy per field,
  the share of answers that stopped at the end of the turn, length and word overlap.

Per-example outputs go to ``eval/predictions.jsonl`` in the run directory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tunewiz.core.data.dataset import Example, prompt_and_answer, render_example
from tunewiz.core.judging.metrics import score, summarize

PREDICTIONS = "eval/predictions.jsonl"


class Stopped(Exception):
    """A stop was asked for during the comparison: it ends at the batch it was in (the caller says so)."""


def check(should_stop) -> None:
    if should_stop is not None and should_stop():
        raise Stopped()


def generate(
    model, tok, prompts: list[list[dict]], max_new_tokens: int, should_stop=None
) -> tuple[list[str], list[bool]]:
    """Greedy answers for chat prompts, stopping at the end of the turn (the generation shared with export),
    and whether each one stopped there rather than at the token budget (greedy keeps the end token).
    `should_stop`: asked before each batch; True raises Stopped."""
    from tunewiz.core.models.loading import end_of_turn_ids, greedy

    stop = end_of_turn_ids(model, tok)
    rows = greedy(model, tok, prompts, max_new_tokens, stop, before_batch=lambda: check(should_stop))
    return [tok.decode(row, skip_special_tokens=True) for row in rows], [bool(row) and row[-1] in stop for row in rows]


def mean_loss(model, tok, examples: list[Example], max_seq_len: int, batch: int = 32, should_stop=None) -> float:
    """Mean cross-entropy per trained token (the same mask as training), in padded batches."""
    import torch

    device = next(model.parameters()).device
    rendered = [r for r in (render_example(tok, ex, max_seq_len) for ex in examples) if r.trained_tokens]
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rendered), batch):
            check(should_stop)
            chunk = rendered[i : i + batch]
            width = max(len(r.input_ids) for r in chunk)
            ids = torch.full((len(chunk), width), tok.pad_token_id, dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            attn = torch.zeros((len(chunk), width), dtype=torch.long)
            for j, r in enumerate(chunk):
                n = len(r.input_ids)
                ids[j, :n], labels[j, :n], attn[j, :n] = torch.tensor(r.input_ids), torch.tensor(r.labels), 1
            logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits[:, :-1].float()
            target = labels[:, 1:].to(device)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum"
            )
            total += float(loss)
            count += int((target != -100).sum())
    return round(total / count, 4) if count else float("nan")


def compare(
    model, tok, examples: list[Example], cfg, run_dir: Path, events=None, precision: str = "", should_stop=None
) -> dict[str, Any]:
    """Evaluate base (adapter off) and fine-tuned (adapter on); write predictions; return the summary:
    per model summarize's figures, core.metrics.measure's (kind, interval, per label / per field), the loss.
    `should_stop`: asked before every batch; True raises Stopped (nothing is written)."""
    from tunewiz.core.judging import metrics
    from tunewiz.core.models.loading import answer_budget

    # Plain-text rows have no prompt to answer: they count in the held-out loss only.
    scored = examples[: cfg.evaluation.max_examples]
    examples = [e for e in scored if e.is_chat]
    prompts, expected = zip(*(prompt_and_answer(e.messages) for e in examples), strict=False) if examples else ((), ())
    budget = cfg.evaluation.max_new_tokens or answer_budget(tok, expected)
    labels = mapped_labels(cfg, expected)
    model.eval()
    results: dict[str, Any] = {}
    outputs: dict[str, list[str]] = {}
    stops: dict[str, list[bool]] = {}
    for which in ("base", "finetuned"):
        t0 = time.time()
        if events:
            events.emit("status", status="evaluating", message=f"generating with the {which} model")
        if which == "base":
            with model.disable_adapter():
                outputs[which], stops[which] = generate(model, tok, list(prompts), budget, should_stop)
                loss = mean_loss(model, tok, scored, cfg.data.max_seq_len, should_stop=should_stop)
        else:
            outputs[which], stops[which] = generate(model, tok, list(prompts), budget, should_stop)
            loss = mean_loss(model, tok, scored, cfg.data.max_seq_len, should_stop=should_stop)
        scores = [score(e, o) for e, o in zip(expected, outputs[which], strict=False)]
        results[which] = {
            "eval_loss": loss,
            **summarize(scores),
            **metrics.measure(list(expected), outputs[which], stops[which], labels),
            "seconds": round(time.time() - t0, 1),
        }
        if events:
            events.emit("eval_result", model=which, **results[which])

    path = run_dir / PREDICTIONS
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        rows = zip(examples, prompts, expected, outputs["base"], outputs["finetuned"], strict=False)
        for i, (ex, p, e, b, f) in enumerate(rows):
            fh.write(
                json.dumps(
                    {
                        "line": ex.line,
                        "prompt": p[-1]["content"],
                        "expected": e,
                        "base": b,
                        "finetuned": f,
                        "base_score": score(e, b),
                        "finetuned_score": score(e, f),
                        "base_stopped": stops["base"][i],
                        "finetuned_stopped": stops["finetuned"][i],
                    }
                )
                + "\n"
            )
    tmp.replace(path)
    results["max_new_tokens"] = budget
    if precision:
        results["precision"] = precision  # what the answers were generated in (serving_dtype)
    return results


def mapped_labels(cfg, expected) -> list[str] | None:
    """The label set of a run whose answers come from a mapped column that holds labels (core.data.columns:
    a label set by construction, whatever the length of the label names); None otherwise."""
    from tunewiz.core.data import columns
    from tunewiz.core.data import dataset as data_mod

    if not cfg.data.answer_column or not expected:
        return None
    try:  # the whole column decides, not the held-out rows alone (a few per label: too few to tell)
        answers = [ex.messages[-1]["content"].strip() for ex in data_mod.load_for(cfg.data).examples]
    except (OSError, data_mod.DataError):
        answers = list(expected)
    if columns.label_set(answers) is None:
        return None
    return sorted({*answers, *(e.strip() for e in expected)})


def load_predictions(run_dir: Path) -> list[dict[str, Any]]:
    """The run's held-out answers (eval/predictions.jsonl), skipping lines that cannot be read."""
    return read_predictions(run_dir)[0]


def read_predictions(run_dir: Path) -> tuple[list[dict[str, Any]], int]:
    """The run's held-out answers and how many lines of eval/predictions.jsonl could not be read (bytes
    that are not UTF-8, a line torn by a full disk or a crash, anything but a JSON object): a damaged file
    shows what it still holds instead of failing. No file: ([], 0)."""
    path = Path(run_dir) / PREDICTIONS
    try:
        raw = path.read_bytes()
    except OSError:  # missing, or not a file: no answers to show
        return [], 0
    return parse_prediction_lines(raw)


def parse_prediction_lines(raw: bytes) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects among the lines of `raw`, and how many non-blank lines were something else.

    >>> parse_prediction_lines(b'{"line": 1}\\n{"line": 2, "exp\\n\\xff\\xfe\\n[1]\\n\\n{"line": 3}\\n')
    ([{'line': 1}, {'line': 3}], 3)
    """
    rows, bad = [], 0
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def held_out_examples(cfg) -> list:
    """The run's held-out examples: its eval file, or the split training held back (same seed)."""
    from tunewiz.core.data import dataset as data_mod

    if cfg.data.eval_path:
        return data_mod.load_for(cfg.data, cfg.data.eval_path).examples
    _, eval_ex = data_mod.split(data_mod.load_for(cfg.data).examples, cfg.data.eval_fraction, cfg.data.split_seed)
    return eval_ex


def evaluate_run(run_dir: Path) -> dict[str, Any]:
    """Re-run the comparison for a finished run from its saved adapter (`tunewiz eval RUN`)."""
    from tunewiz.core.bookkeeping import finished, runs
    from tunewiz.core.models.loading import adapter_model, load_tokenizer

    run = finished.open_finished(run_dir)
    cfg = run.cfg
    device, dtype = run.placement()
    tok = load_tokenizer(run.tokenizer_dir, cfg.model.trust_remote_code)
    model = adapter_model(run.base_path, run.adapter_dir, dtype, cfg.model.trust_remote_code, device)
    summary = compare(model, tok, held_out_examples(cfg), cfg, run.run_dir, precision=dtype)

    def record(rec: runs.Record) -> None:
        rec.results.update(summary)
        rec.artifacts.predictions = str(run.run_dir / PREDICTIONS)

    runs.update_record(run.run_dir, record)
    return summary
