"""The planner's speed decisions one by one (each with its reason), and how the trainer carries them out."""

from __future__ import annotations

from tunewiz.core.planning import planner
from tunewiz.core.planning.hardware import GPU, Hardware
from tunewiz.core.planning.presets import build_config
from tunewiz.core.training import process_memory, trainer

CPU = Hardware(cpu_physical_cores=2, cpu_logical_cores=2, ram_total_gb=24, ram_available_gb=20)


def gpu_box(name: str = "NVIDIA H100 80GB HBM3", free_gb: float = 79.0, capability: str = "9.0", bf16=True, flash=True):
    return Hardware(
        flash_attn=flash,
        gpus=[GPU(0, name, free_gb, free_gb, capability, bf16)],
        cpu_physical_cores=16,
        cpu_logical_cores=32,
        ram_total_gb=128,
        ram_available_gb=120,
    )


def test_attention_on_the_cpu_is_sdpa():
    d = planner.choose_attention(CPU, "float32", "cpu")
    assert d.value == "sdpa" and "GPU" in d.reason


def test_attention_without_flash_attn_installed_is_sdpa_and_says_how_to_get_it():
    d = planner.choose_attention(gpu_box(flash=False), "bfloat16", "cuda")
    assert d.value == "sdpa" and "pip install flash-attn" in d.reason


def test_flash_attention_where_installed_and_supported():
    assert planner.choose_attention(gpu_box(), "bfloat16", "cuda").value == "flash_attention_2"
    # pre-Ampere (a T4 is 7.5) or 32-bit: FlashAttention 2 does not run there
    assert planner.choose_attention(gpu_box("Tesla T4", 15, "7.5", False), "float16", "cuda").value == "sdpa"
    assert planner.choose_attention(gpu_box(), "float32", "cuda").value == "sdpa"
    assert planner.choose_attention(gpu_box(), "bfloat16", "cuda", "gemma2").value == "eager"


def test_padding_free_only_where_flash_attention_keeps_examples_apart():
    d = planner.choose_padding_free("flash_attention_2", 4)
    assert d.value and "no padding" in d.reason
    for attention in ("sdpa", "eager"):
        d = planner.choose_padding_free(attention, 4)
        assert not d.value and "attend to each other" in d.reason
    d = planner.choose_padding_free("flash_attention_2", 1)
    assert not d.value and d.reason == "off: one example per batch has no padding to remove"


def test_padding_free_collation_is_one_row_with_restarting_positions_and_the_counter_sees_no_padding():
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9], "labels": [-100, 9]}]
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]] and "attention_mask" not in batch
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9]]
    counter = trainer.Counter()
    counter.count(batch)
    assert (counter.tokens, counter.padded) == (5, 5)
    padded = trainer.Counter()
    padded.count(DataCollatorForLanguageModeling(pad_token_id=0)(rows))
    assert (padded.tokens, padded.padded, padded.padding_fraction) == (5, 6, round(1 / 6, 4))


def test_fused_optimizer_and_loader_workers():
    assert planner.choose_optimizer("cuda").value == "adamw_torch_fused"
    assert planner.choose_optimizer("cpu").value == "adamw_torch_fused"  # torch's fused AdamW runs on CPUs too
    assert planner.choose_workers(-1, "cpu", 2, 1).value == 0
    assert planner.choose_workers(-1, "cuda", 16, 1).value == 4


def test_sft_arguments_carry_the_plan_on_the_cpu(tmp_path):
    cfg = build_config("balanced")
    plan = planner.plan(cfg, CPU)
    args = trainer.sft_args(cfg, plan, tmp_path, has_eval=False)
    assert args.optim == "adamw_torch_fused" and args.dataloader_num_workers == 0 and not args.dataloader_pin_memory
    assert args.per_device_train_batch_size == plan.per_device_batch and args.use_cpu


def test_peak_memory_is_the_trainers_own_not_its_parents():
    """Linux keeps ru_maxrss across exec: a trainer started by a big process must not report its size."""
    import subprocess
    import sys

    big = bytearray(600 * 2**20)  # the parent holds 600 MiB
    for i in range(0, len(big), 4096):
        big[i] = 1
    code = "from tunewiz.core.training.trainer import peak_memory_mb; print(peak_memory_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) < 500, out.stdout


BF16_SHAPES = """
import sys, torch
from tunewiz.core.training import process_memory
if sys.argv[1] == "steady":
    process_memory.steady_cpu_memory()
torch.set_num_threads(1)
# a decoder block's linear shapes (SmolLM2-135M: q/o, k/v, gate/up, down, LoRA A and B)
shapes = [(576, 576), (576, 192), (576, 1536), (1536, 576), (576, 16), (16, 576)]
layers = [torch.nn.Linear(i, o, dtype=torch.bfloat16) for i, o in shapes]
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) // 1024
for i, length in enumerate(range(40, 440, 10)):  # 40 sequence lengths, as length grouping brings them
    for lin in layers:
        x = torch.randn(1, length, lin.in_features, dtype=torch.bfloat16, requires_grad=True)  # a shape each
        lin(x).sum().backward()
    process_memory.release_freed_memory()
    if i == 4:
        start = rss()
print(rss() - start)
"""


def test_the_cpu_trainers_kernel_caches_stay_small_as_batch_shapes_change():
    """bf16 matmuls on the CPU keep a compiled kernel per input shape (oneDNN, ideep: 1024 each); with
    length grouping nearly every batch is a new shape, and the trainer's heap grew ~19 MiB a step.
    steady_cpu_memory bounds the caches. Measured in fresh processes, with and without it."""
    import os
    import subprocess
    import sys

    import pytest

    env = {k: v for k, v in os.environ.items() if k not in process_memory.KERNEL_CACHE_ENV}

    def growth(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", BF16_SHAPES, mode], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        return int(out.stdout.split()[-1])

    unbounded = growth("default")
    if unbounded < 20:
        pytest.skip(f"this CPU's bf16 matmuls keep no per-shape kernels worth bounding (+{unbounded} MiB)")
    bounded = growth("steady")
    assert bounded < unbounded / 2, (bounded, unbounded)
