"""The merged export, and what every export shares: the run's model, its held-out prompts, and the
check that an exported model answers them as the evaluated adapter model does.

``merged``: the run's LoRA adapter merged into its base (``merge_and_unload``), saved as
safetensors in the base's dtype with the tokenizer, chat template and a generation config whose
end-of-sequence is the template's end-of-turn token, in ``RUN/export/merged/``; it loads with
``AutoModelForCausalLM.from_pretrained``. The GGUF export (:mod:`tunewiz.core.shipping.gguf_export`) is
made from it. The entry point for every format is :func:`tunewiz.core.shipping.export.export`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewiz.core.bookkeeping import runs
from tunewiz.core.errors import TunewizError
from tunewiz.core.models import loading as modeling

EXPORT_DIR = "export"


class ExportError(TunewizError, RuntimeError):
    """The export could not be made; the message says why and what to do."""


@dataclass
class HeldOut:
    """The held-out prompts of a run and the generation budget evaluation used for them."""

    prompts: list[list[dict[str, str]]]
    max_new_tokens: int


@dataclass
class RunModel:
    """What an export needs to know about a finished run."""

    run_dir: Path
    cfg: Any  # RunConfig
    base_path: Path
    adapter_dir: Path


def open_run(run_dir: Path) -> RunModel:
    """The run's config, base model directory and adapter; raises ExportError when there is no adapter."""
    from tunewiz.core.bookkeeping import finished

    try:
        run = finished.open_finished(run_dir)
    except finished.NoAdapter as exc:
        raise ExportError(str(exc)) from None
    return RunModel(run.run_dir, run.cfg, run.base_path, run.adapter_dir)


def held_out(rm: RunModel, tok) -> HeldOut:
    """The chat prompts evaluation answered (same split, same limit) and its token budget."""
    from tunewiz.core.data import dataset as data_mod
    from tunewiz.core.judging.evaluate import held_out_examples

    cfg = rm.cfg
    chats = [e for e in held_out_examples(cfg)[: cfg.evaluation.max_examples] if e.is_chat]
    if not chats:
        raise ExportError(f"{rm.run_dir.name} has no held-out chat rows to verify an export with")
    pairs = [data_mod.prompt_and_answer(e.messages) for e in chats]
    budget = cfg.evaluation.max_new_tokens or modeling.answer_budget(tok, [a for _, a in pairs])
    return HeldOut([p for p, _ in pairs], budget)


def agreement(reference: list[list[int]], exported: list[list[int]], stop_ids: list[int]) -> dict[str, Any]:
    """How the exported model's answers compare with the reference (adapter) model's.

    >>> agreement([[5, 6, 2], [7, 8]], [[5, 6, 2], [7, 9]], [2])
    {'examples': 2, 'agreement': 0.5, 'token_agreement': 0.8, 'stop_rate': 0.5, 'reference_stop_rate': 0.5}
    """
    n = len(reference)
    same = sum(r == e for r, e in zip(reference, exported, strict=True))
    # Tokens of the reference answer reproduced before the first divergence: partial credit.
    matched = total = 0
    for r, e in zip(reference, exported, strict=True):
        k = 0
        while k < min(len(r), len(e)) and r[k] == e[k]:
            k += 1
        matched += k
        total += len(r)

    def stopped(rows: list[list[int]]) -> float:
        return round(sum(bool(row) and row[-1] in stop_ids for row in rows) / n, 4) if n else 0.0

    return {
        "examples": n,
        "agreement": round(same / n, 4) if n else 0.0,
        "token_agreement": round(matched / total, 4) if total else 1.0,
        "stop_rate": stopped(exported),
        "reference_stop_rate": stopped(reference),
    }


def stops_verdict(reference: list[list[int]], exported: list[list[int]], ref_stop, exp_stop) -> bool:
    """True when the export ends where the adapter model ends: its end tokens include the reference's
    end-of-turn token, and every reference answer that stopped has a stopped counterpart."""
    configured = bool(ref_stop) and all(t in exp_stop for t in ref_stop)
    stopped_too = all(
        (not r or r[-1] not in ref_stop) or (bool(e) and e[-1] in exp_stop)
        for r, e in zip(reference, exported, strict=True)
    )
    return configured and stopped_too


REFERENCE = "reference-answers.json"
"""RUN/export/<this>: the adapter model's greedy answers, kept for the next export of the same adapter."""


def reference_answers(rm: RunModel, tok, dtype_name: str, held: HeldOut) -> tuple[list[list[int]], list[int]]:
    """The adapter model's greedy answers to the held-out prompts and its end-of-turn ids; computed once
    per adapter, dtype, prompts and budget (exporting several GGUF types answers them once)."""
    key = hashlib.sha256(json.dumps([dtype_name, held.prompts, held.max_new_tokens]).encode())
    for f in sorted(rm.adapter_dir.glob("adapter_*")):
        key.update(f.name.encode() + f.read_bytes())
    cache = rm.run_dir / EXPORT_DIR / REFERENCE
    try:
        doc = json.loads(cache.read_text(encoding="utf-8"))
        if doc["key"] == key.hexdigest():
            return doc["answers"], doc["stop"]
    except (OSError, ValueError, KeyError):
        pass
    model = modeling.adapter_model(rm.base_path, rm.adapter_dir, dtype_name, rm.cfg.model.trust_remote_code)
    stop = modeling.end_of_turn_ids(model, tok)
    answers = modeling.greedy(model, tok, held.prompts, held.max_new_tokens, stop)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".partial")
    tmp.write_text(json.dumps({"key": key.hexdigest(), "answers": answers, "stop": stop}), encoding="utf-8")
    tmp.replace(cache)
    return answers, stop


def fresh_partial(out_dir: Path) -> Path:
    """An empty `<out_dir>.partial` to write an export into before :func:`replace_dir` puts it in place."""
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def replace_dir(tmp: Path, final: Path) -> None:
    """Put the finished `tmp` where `final` was (a failed export never leaves half a model there)."""
    if final.exists():
        shutil.rmtree(final)
    tmp.replace(final)


def merge(rm: RunModel, out_dir: Path, dtype_name: str) -> Path:
    """Merge the adapter into the base and save it (safetensors, tokenizer, chat template) in `out_dir`.

    Written into a temporary sibling first, so a failed export never leaves a half-written model
    where a working one was.
    """
    model = modeling.adapter_model(rm.base_path, rm.adapter_dir, dtype_name, rm.cfg.model.trust_remote_code)
    model = model.merge_and_unload()
    tok = modeling.load_tokenizer(rm.base_path, rm.cfg.model.trust_remote_code)
    # Generation stops at the chat template's end-of-turn token (the tokenizer's eos).
    end = modeling.end_of_turn_ids(model, tok)
    model.generation_config.eos_token_id = end[0] if len(end) == 1 else end
    if model.generation_config.pad_token_id is None and tok.pad_token_id is not None:
        model.generation_config.pad_token_id = tok.pad_token_id
    tmp = fresh_partial(out_dir)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    replace_dir(tmp, out_dir)
    return out_dir


def verify_transformers(rm: RunModel, model_dir: Path, dtype_name: str, gguf_file: str | None = None):
    """(stats, reference, exported) for an exported model directory (or a GGUF file in it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = modeling.load_tokenizer(rm.base_path, rm.cfg.model.trust_remote_code)
    held = held_out(rm, tok)
    reference, ref_stop = reference_answers(rm, tok, dtype_name, held)

    kw: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {"use_safetensors": True}
    exported = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype_name), **kw).eval()
    # The export's own tokenizer and chat template render the prompts: that is what a server uses.
    etok = AutoTokenizer.from_pretrained(str(model_dir), **kw)
    if etok.pad_token is None:
        etok.pad_token = etok.eos_token
    exp_stop = modeling.eos_ids(exported, etok)
    answers = modeling.greedy(exported, etok, held.prompts, held.max_new_tokens, exp_stop)
    stats = agreement(reference, answers, ref_stop)
    stats["stop_rate"] = agreement(answers, answers, exp_stop)["stop_rate"]
    stats["stops_at_end_of_turn"] = stops_verdict(reference, answers, ref_stop, exp_stop)
    stats["end_tokens"] = [etok.convert_ids_to_tokens(i) for i in exp_stop]
    stats["max_new_tokens"] = held.max_new_tokens
    return stats


def export_merged(run_dir: Path, verify: bool = True) -> dict[str, Any]:
    """Merged safetensors in RUN/export/merged, verified against the adapter model; recorded in run.toml."""
    t0 = time.time()
    rm = open_run(run_dir)
    dtype_name = modeling.stored_dtype(rm.base_path)
    out = merge(rm, Path(run_dir) / EXPORT_DIR / "merged", dtype_name)
    entry: dict[str, Any] = {"path": str(out), "format": "merged", "dtype": dtype_name}
    if rm.cfg.model.method == "qlora":
        entry["note"] = "adapter merged into the full-precision base (merging into 4-bit weights loses precision)"
    if verify:
        entry.update(verify_transformers(rm, out, dtype_name))
    entry["seconds"] = round(time.time() - t0, 1)
    runs.update_record(run_dir, lambda rec: rec.artifacts.update({"merged": entry}))
    return entry
