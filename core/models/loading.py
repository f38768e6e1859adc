"""Loading models and generating with them: the one place the trainer, the probe, evaluation and
export get a tokenizer, a base model in its precision (4-bit NF4 for QLoRA), a LoRA model, the
adapter model of a finished run, and greedy answers that stop at the end of the turn.

Only safetensors weights are loaded: a pickled ``.bin`` checkpoint can run code when it is read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Prompts per generate() call: fewer, wider decode steps; per-step overhead dominates on the CPU.
GEN_BATCH = 32


def load_tokenizer(path: str | Path, trust_remote_code: bool = False):
    """The model's tokenizer, with a pad token (its eos when it has none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_base(
    path: str | Path,
    dtype_name: str,
    *,
    method: str = "lora",
    attention: str = "",
    device: str = "cpu",
    trust_remote_code: bool = False,
    for_training: bool = True,
    gradient_checkpointing: bool = False,
):
    """The base model in `dtype_name`; for QLoRA its block linear layers in 4-bit NF4 (double
    quantisation, computing in `dtype_name`), placed on `device` ("cuda:N" for rank N's GPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, dtype_name)
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code, "use_safetensors": True}
    if attention:
        kwargs["attn_implementation"] = attention
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        if device.startswith("cuda"):
            # Each rank quantises onto its own GPU (every rank on GPU 0 would run it out of memory).
            kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    if method == "qlora" and for_training:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    return model


def add_lora(model, t, gradient_checkpointing: bool = False):
    """`model` with LoRA adapters as [training] asks (r, alpha, dropout, target modules), their initial
    weights drawn from the run's seed: the same request and seed start from the same adapters (the
    Trainer seeds only when it is built, after them)."""
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    set_seed(t.seed)

    target = t.target_modules[0] if list(t.target_modules) == ["all-linear"] else list(t.target_modules)
    peft_cfg = LoraConfig(
        r=t.lora_r, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout, target_modules=target, task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, peft_cfg)
    if gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def module_kinds(model_dir: str | Path, trust_remote_code: bool = False) -> dict[str, str]:
    """Every module of the model in `model_dir` (name -> class name), built from its config.json (or a
    .gguf file's metadata) on the meta device: no weight is read or allocated, so checking
    target_modules costs seconds."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(model_dir)
    where = {"gguf_file": path.name} if path.suffix == ".gguf" else {}
    conf = AutoConfig.from_pretrained(str(path.parent if where else path), trust_remote_code=trust_remote_code, **where)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(conf, trust_remote_code=trust_remote_code)
    return {name: type(module).__name__ for name, module in model.named_modules()}


def stored_dtype(model_dir: str | Path) -> str:
    """The dtype the model's weights are stored in (config.json), float32 when it does not say."""
    try:
        conf = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "float32"
    name = conf.get("dtype") or conf.get("torch_dtype") or "float32"
    return name if name in ("float32", "float16", "bfloat16") else "float32"


def adapter_model(
    base_path: str | Path,
    adapter_dir: str | Path,
    dtype_name: str,
    trust_remote_code: bool = False,
    device: str = "cpu",
):
    """A finished run's model: the full-precision base in `dtype_name` with its adapter, unmerged, in eval
    mode, on `device` (the plan's placement: "cuda:0" on a GPU box, "mps", "cpu")."""
    from peft import PeftModel

    base = load_base(base_path, dtype_name, trust_remote_code=trust_remote_code, for_training=False)
    return PeftModel.from_pretrained(base, str(adapter_dir)).to(device).eval()


def portable_adapter_config(adapter_dir: str | Path, hub_id: str, revision: str = "") -> None:
    """Name the base by its hub id (and revision) in adapter_config.json, not this machine's cache path,
    so the adapter loads anywhere with plain ``PeftModel.from_pretrained``."""
    path = Path(adapter_dir) / "adapter_config.json"
    conf = json.loads(path.read_text(encoding="utf-8"))
    conf["base_model_name_or_path"] = hub_id
    if revision:
        conf["revision"] = revision
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


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
    """:func:`eos_ids` plus the tokenizer's eos: the chat template's end-of-turn token generation stops at."""
    ids = eos_ids(model, tok)
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.append(int(tok.eos_token_id))
    return ids


def greedy(
    model, tok, prompts: list[list[dict]], max_new_tokens: int, stop_ids: list[int], before_batch=None
) -> list[list[int]]:
    """Greedy answers to chat prompts as token ids, in left-padded batches, each cut after its first
    end token (kept, so whether it stopped shows)."""
    import torch

    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    # Prompts of similar length batched together: less padding to compute; answers go back in order.
    lengths = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]] if texts else []
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    side = tok.padding_side
    tok.padding_side = "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else (stop_ids[0] if stop_ids else 0)
    device = next(model.parameters()).device
    out: list[list[int]] = []
    try:
        for i in range(0, len(texts), GEN_BATCH):
            if before_batch is not None:
                before_batch()  # a stop asked for during the comparison raises here, between batches
            chunk = [texts[j] for j in order[i : i + GEN_BATCH]]
            enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(device) for k, v in enc.items()}
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
    answers: list[list[int]] = [[] for _ in texts]
    for j, row in zip(order, out, strict=True):
        answers[j] = row
    return answers


def answer_budget(tok, answers) -> int:
    """New tokens to allow per held-out answer: the longest expected answer + 16, at most 1024."""
    return min(1024, max((len(tok(a, add_special_tokens=False)["input_ids"]) for a in answers), default=0) + 16)
