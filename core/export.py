"""Export a finished run as the model people will serve, and prove it behaves like the evaluated one.

Formats (``tunewiz export RUN --format ...``):

* ``merged``: the run's LoRA adapter merged into its base (``merge_and_unload``), saved as
  safetensors in the base's dtype with the tokenizer, chat template and a generation config whose
  end-of-sequence is the template's end-of-turn token, in ``RUN/export/merged/``; it loads with
  ``AutoModelForCausalLM.from_pretrained``.
* ``gguf`` (see :mod:`core.gguf_export`): the merged model converted by llama.cpp's own converter,
  with an Ollama Modelfile.

Every export is verified the same way: the held-out prompts the run was evaluated on (the same
split and limit as :mod:`tunewiz.core.evaluate`) are answered greedily by the exported model and by the
adapter model (base + adapter, unmerged), and the record gets, under ``[artifacts.<format>]``:
the share of prompts whose answers agree token for token (``agreement``), the share of answers
that end with the end-of-turn token before the budget (``stop_rate``, with the adapter model's
as ``reference_stop_rate``), and ``stops_at_end_of_turn``: the exported model's configured
end-of-sequence includes the template's end-of-turn token, and it stops wherever the adapter
model did. A merged model in float32 must agree exactly; a quantised GGUF agrees at a rate.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewiz.core import runs
from tunewiz.core.errors import TunewizError

FORMATS = ("merged", "gguf")
EXPORT_DIR = "export"
GEN_BATCH = 16


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
    from tunewiz.core import models
    from tunewiz.core.config import RunConfig

    run_dir = Path(run_dir)
    doc = runs.read_record(run_dir)
    cfg = RunConfig.from_dict(doc, source=str(run_dir / runs.RECORD))
    adapter = run_dir / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        status = doc.get("run", {}).get("status")
        raise ExportError(f"{run_dir.name} has no saved adapter (status {status}): export a completed or stopped run")
    resolved = models.resolve(cfg.model.id, run_dir.parent.parent)
    return RunModel(run_dir, cfg, Path(resolved.path), adapter)


def base_dtype(model_dir: Path) -> str:
    """The dtype the base model's weights are stored in (config.json), float32 when it does not say."""
    try:
        conf = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "float32"
    name = conf.get("dtype") or conf.get("torch_dtype") or "float32"
    return name if name in ("float32", "float16", "bfloat16") else "float32"


def held_out(rm: RunModel, tok) -> HeldOut:
    """The chat prompts evaluation answered (same split, same limit) and its token budget."""
    from tunewiz.core import data as data_mod
    from tunewiz.core.evaluate import held_out_examples

    cfg = rm.cfg
    chats = [e for e in held_out_examples(cfg)[: cfg.evaluation.max_examples] if e.is_chat]
    if not chats:
        raise ExportError(f"{rm.run_dir.name} has no held-out chat rows to verify an export with")
    pairs = [data_mod.prompt_and_answer(e.messages) for e in chats]
    budget = cfg.evaluation.max_new_tokens or min(
        1024, max(len(tok(a, add_special_tokens=False)["input_ids"]) for _, a in pairs) + 16
    )
    return HeldOut([p for p, _ in pairs], budget)


def eos_ids(model, tok) -> list[int]:
    """The token ids that end generation for this model: its generation config's, else the tokenizer's."""
    gen = getattr(model, "generation_config", None)
    ids = getattr(gen, "eos_token_id", None) if gen is not None else None
    if ids is None:
        ids = tok.eos_token_id
    if ids is None:
        return []
    return [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])]


def end_of_turn_ids(model, tok) -> list[int]:
    """:func:`eos_ids` plus the tokenizer's eos, the chat template's end-of-turn token evaluation stops at."""
    ids = eos_ids(model, tok)
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.append(int(tok.eos_token_id))
    return ids


def generate_ids(model, tok, prompts: list[list[dict]], max_new_tokens: int, stop_ids: list[int]) -> list[list[int]]:
    """Greedy answers as token ids, each cut after its first end token (kept, so stopping shows)."""
    import torch

    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    side = tok.padding_side
    tok.padding_side = "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else (stop_ids[0] if stop_ids else 0)
    out: list[list[int]] = []
    try:
        for i in range(0, len(texts), GEN_BATCH):
            enc = tok(texts[i : i + GEN_BATCH], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                gen = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=stop_ids or None,
                    pad_token_id=pad,
                )
            for row in gen[:, enc["input_ids"].shape[1] :].tolist():
                cut = next((j + 1 for j, t in enumerate(row) if t in stop_ids), len(row))
                out.append(row[:cut])
    finally:
        tok.padding_side = side
    return out


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


def adapter_model(rm: RunModel, dtype_name: str):
    """The evaluated model: base (full precision, in `dtype_name`) with the run's adapter, unmerged."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(
        str(rm.base_path),
        dtype=getattr(torch, dtype_name),
        trust_remote_code=rm.cfg.model.trust_remote_code,
        use_safetensors=True,
    )
    return PeftModel.from_pretrained(base, str(rm.adapter_dir)).eval()


def reference_answers(rm: RunModel, tok, dtype_name: str, held: HeldOut) -> tuple[list[list[int]], list[int]]:
    model = adapter_model(rm, dtype_name)
    stop = end_of_turn_ids(model, tok)
    return generate_ids(model, tok, held.prompts, held.max_new_tokens, stop), stop


def fresh_partial(out_dir: Path) -> Path:
    """An empty `<out_dir>.partial` to write an export into before :func:`_replace_dir` puts it in place."""
    tmp = out_dir.with_name(out_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    tmp.replace(final)


def merge(rm: RunModel, out_dir: Path, dtype_name: str) -> Path:
    """Merge the adapter into the base and save it (safetensors, tokenizer, chat template) in `out_dir`.

    Written into a temporary sibling first, so a failed export never leaves a half-written model
    where a working one was.
    """
    from tunewiz.core.trainer import load_tokenizer

    model = adapter_model(rm, dtype_name).merge_and_unload()
    tok = load_tokenizer(rm.base_path, rm.cfg)
    # Generation stops at the chat template's end-of-turn token (the tokenizer's eos).
    end = end_of_turn_ids(model, tok)
    model.generation_config.eos_token_id = end[0] if len(end) == 1 else end
    if model.generation_config.pad_token_id is None and tok.pad_token_id is not None:
        model.generation_config.pad_token_id = tok.pad_token_id
    tmp = fresh_partial(out_dir)
    model.save_pretrained(str(tmp), safe_serialization=True)
    tok.save_pretrained(str(tmp))
    _replace_dir(tmp, out_dir)
    return out_dir


def verify_transformers(rm: RunModel, model_dir: Path, dtype_name: str, gguf_file: str | None = None):
    """(stats, reference, exported) for an exported model directory (or a GGUF file in it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from tunewiz.core.trainer import load_tokenizer

    tok = load_tokenizer(rm.base_path, rm.cfg)
    held = held_out(rm, tok)
    reference, ref_stop = reference_answers(rm, tok, dtype_name, held)

    kw: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {"use_safetensors": True}
    exported = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype_name), **kw).eval()
    # The export's own tokenizer and chat template render the prompts: that is what a server uses.
    etok = AutoTokenizer.from_pretrained(str(model_dir), **kw)
    if etok.pad_token is None:
        etok.pad_token = etok.eos_token
    exp_stop = eos_ids(exported, etok)
    answers = generate_ids(exported, etok, held.prompts, held.max_new_tokens, exp_stop)
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
    dtype_name = base_dtype(rm.base_path)
    out = merge(rm, Path(run_dir) / EXPORT_DIR / "merged", dtype_name)
    entry: dict[str, Any] = {"path": str(out), "format": "merged", "dtype": dtype_name}
    if rm.cfg.model.method == "qlora":
        entry["note"] = "adapter merged into the full-precision base (merging into 4-bit weights loses precision)"
    if verify:
        entry.update(verify_transformers(rm, out, dtype_name))
    entry["seconds"] = round(time.time() - t0, 1)
    runs.update_record(run_dir, {"artifacts": {"merged": entry}})
    return entry


def summary_lines(artifacts: dict[str, Any]) -> list[str]:
    """One line per export recorded in [artifacts], for `tunewiz show` and the history screen.

    >>> summary_lines({"adapter": "/r/adapter", "merged": {"format": "merged", "path": "/r/export/merged",
    ...     "examples": 10, "agreement": 1.0, "token_agreement": 1.0, "stops_at_end_of_turn": True}})
    ['  export  merged: 100% identical on 10 held-out prompts, stops at end of turn  /r/export/merged']
    """
    out = []
    for e in artifacts.values():
        if not isinstance(e, dict) or "format" not in e:
            continue
        label = f"{e['format']} {e['type']}" if e.get("type") else e["format"]
        if "agreement" in e:
            check = f"{e['agreement']:.0%} identical on {e['examples']} held-out prompts"
            if e.get("token_agreement", 1.0) < 1.0:
                check += f" ({e['token_agreement']:.0%} of tokens)"
            check += ", stops at end of turn" if e.get("stops_at_end_of_turn") else ", DOES NOT STOP at end of turn"
        else:
            check = "not verified"
        out.append(f"  export  {label}: {check}  {e.get('path', '')}")
    return out


def export(run_dir: Path, fmt: str, quant: str = "q8_0", verify: bool = True) -> dict[str, Any]:
    """Export a run in `fmt` (one of FORMATS); returns what was recorded under [artifacts.<name>]."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the de-quantising and loading bars say nothing a user needs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # library deprecation notices
        if fmt == "merged":
            return export_merged(run_dir, verify=verify)
        from tunewiz.core import gguf_export

        return gguf_export.export_gguf(run_dir, quant=quant, verify=verify)
