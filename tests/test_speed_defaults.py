"""The trainer's hardware-aware speed defaults: each choice and its reason, on CPUs and on (described) GPUs."""

from __future__ import annotations

import importlib.util

import pytest
from tunewiz.core import trainer
from tunewiz.core.catalog import BY_KEY
from tunewiz.core.hardware import GPU, Hardware
from tunewiz.core.presets import build_config

CPU = Hardware(cpu_physical_cores=2, cpu_logical_cores=2, ram_total_gb=24, ram_available_gb=20)


def gpu_box(name: str = "NVIDIA H100 80GB HBM3", free_gb: float = 79.0, capability: str = "9.0", bf16=True):
    return Hardware(
        gpus=[GPU(0, name, free_gb, free_gb, capability, bf16)],
        cpu_physical_cores=16,
        cpu_logical_cores=32,
        ram_total_gb=128,
        ram_available_gb=120,
    )


@pytest.fixture
def flash_attn_installed(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "flash_attn" else real(name))


def test_attention_on_the_cpu_is_sdpa():
    impl, why = trainer.choose_attention(CPU, "float32")
    assert impl == "sdpa" and "GPU" in why


def test_attention_without_flash_attn_installed_is_sdpa_and_says_how_to_get_it():
    if importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    impl, why = trainer.choose_attention(gpu_box(), "bfloat16")
    assert impl == "sdpa" and "pip install flash-attn" in why


def test_flash_attention_where_installed_and_supported(flash_attn_installed):
    assert trainer.choose_attention(gpu_box(), "bfloat16")[0] == "flash_attention_2"
    # pre-Ampere (a T4 is 7.5) or 32-bit: FlashAttention 2 does not run there
    assert trainer.choose_attention(gpu_box("Tesla T4", 15, "7.5", False), "float16")[0] == "sdpa"
    assert trainer.choose_attention(gpu_box(), "float32")[0] == "sdpa"
    assert trainer.choose_attention(gpu_box(), "bfloat16", "gemma2")[0] == "eager"


def test_padding_free_only_where_flash_attention_keeps_examples_apart():
    on, why = trainer.choose_padding_free("flash_attention_2", 4)
    assert on and "no padding" in why
    for attention in ("sdpa", "eager"):
        on, why = trainer.choose_padding_free(attention, 4)
        assert not on and "attend to each other" in why
    on, why = trainer.choose_padding_free("flash_attention_2", 1)
    assert not on and why == "off: one example per batch has no padding to remove"


def test_padding_free_collator_makes_one_row_with_restarting_positions_and_counts_no_padding():
    class Tok:
        pad_token_id = 0

    rows = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9], "labels": [-100, 9]}]
    counter = {"tokens": 0, "padded": 0}
    batch = trainer._counting_collator(Tok(), counter, padding_free=True)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]] and "attention_mask" not in batch
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9]]
    assert counter == {"tokens": 5, "padded": 5}
    padded = {"tokens": 0, "padded": 0}
    batch = trainer._counting_collator(Tok(), padded)(rows)
    assert batch["input_ids"].shape == (2, 3) and padded == {"tokens": 5, "padded": 6}


def test_fused_optimizer_and_loader_workers():
    assert trainer.choose_optimizer(gpu_box())[0] == "adamw_torch_fused"
    assert trainer.choose_optimizer(CPU)[0] == "adamw_torch_fused"  # torch's fused AdamW runs on CPUs too
    assert trainer.choose_workers(CPU)[0] == 0
    assert trainer.choose_workers(gpu_box())[0] == 4


def test_gradient_checkpointing_only_when_memory_needs_it():
    spec = BY_KEY["llama3.1-8b"]
    cfg = build_config("balanced", max_per_device=4)  # batch 4 per device
    on, why = trainer.needs_checkpointing(cfg, gpu_box(), spec, 512, "bfloat16")
    assert not on and "fits without it" in why
    # 4 x 2048 tokens of an 8B model in 16 bit: ~81 GiB of activations and logits without it
    on, why = trainer.needs_checkpointing(cfg, gpu_box(), spec, 2048, "bfloat16")
    assert on and "would not fit" in why
    on, why = trainer.needs_checkpointing(cfg, gpu_box("NVIDIA A10", 22.0, "8.6"), spec, 2048, "bfloat16")
    assert not on and "does not fit even with it" in why
    cfg.training.gradient_checkpointing = True
    assert trainer.needs_checkpointing(cfg, gpu_box(), spec, 512, "bfloat16") == (
        True,
        "set in the config (saves activation memory for ~20% more time)",
    )


def test_sft_arguments_carry_the_choices_on_the_cpu(tmp_path):
    cfg = build_config("balanced", max_per_device=4)
    args = trainer.sft_args(cfg, tmp_path, "float32", has_eval=False, optim="adamw_torch_fused", workers=0)
    assert args.optim == "adamw_torch_fused" and args.dataloader_num_workers == 0 and not args.dataloader_pin_memory


def test_peak_memory_is_the_trainers_own_not_its_parents():
    """Linux keeps ru_maxrss across exec: a trainer started by a big process must not report its size."""
    import subprocess
    import sys

    big = bytearray(600 * 2**20)  # the parent holds 600 MiB
    for i in range(0, len(big), 4096):
        big[i] = 1
    code = "from tunewiz.core.trainer import peak_memory_mb; print(peak_memory_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) < 500, out.stdout
