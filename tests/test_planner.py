"""The planner over hardware descriptions: no hardware needed, every decision and its reason."""

from __future__ import annotations

import pytest
from tunewiz.core.models.catalog import BY_KEY
from tunewiz.core.planning import memory, planner
from tunewiz.core.planning.hardware import GPU, Hardware
from tunewiz.core.planning.memory import DataShape
from tunewiz.core.planning.presets import build_config

BUNDLED = "bundled:smollm2-135m-instruct"


def cpu(bf16: bool) -> Hardware:
    return Hardware(cpu_physical_cores=2, cpu_logical_cores=2, cpu_bf16=bf16, ram_total_gb=24, ram_available_gb=20)


def gpus(n: int, name: str, gb: float, capability: str, flash: bool = False, cores: int = 16) -> Hardware:
    return Hardware(
        gpus=[GPU(i, name, gb, gb - 0.5, capability, bf16=int(capability.split(".")[0]) >= 8) for i in range(n)],
        cpu_physical_cores=cores,
        cpu_logical_cores=2 * cores,
        ram_total_gb=256,
        ram_available_gb=240,
        flash_attn=flash,
    )


T4 = gpus(1, "Tesla T4", 15.0, "7.5", flash=True, cores=4)
RTX4090 = gpus(1, "NVIDIA GeForce RTX 4090", 23.6, "8.9", flash=True, cores=8)
A100 = gpus(1, "NVIDIA A100-SXM4-80GB", 79.2, "8.0")
H100x2 = gpus(2, "NVIDIA H100 80GB HBM3", 79.6, "9.0", flash=True, cores=32)
A10x4 = gpus(4, "NVIDIA A10", 22.0, "8.6", cores=32)
M2 = Hardware(mps=True, cpu_physical_cores=8, cpu_logical_cores=8, ram_total_gb=32, ram_available_gb=24)


def config(model: str = BUNDLED, method: str = "lora", preset: str = "balanced", **training):
    cfg = build_config(preset)
    cfg.model.id, cfg.model.method = model, method
    cfg.data.max_seq_len = 4096
    for k, v in training.items():
        setattr(cfg.training, k, v)
    return cfg


def shape(longest: int, rows: int = 400, trained: float = 0.2) -> DataShape:
    return DataShape(longest, longest * rows // 2, trained, "test", rows)


def assert_fits_its_budget(p: planner.Plan) -> None:
    """A plan that says "fits" fits: its peak, recomputed from its own decisions, is within the budget."""
    assert p.estimate is not None
    s = p.estimate.setup
    assert (s.batch, s.gradient_checkpointing, s.dtype) == (p.per_device_batch, p.gradient_checkpointing, p.dtype)
    if p.fits:
        assert memory.breakdown(BY_KEY[p.estimate.model], s).total <= p.budget_mb <= p.available_mb


@pytest.mark.parametrize(("bf16", "dtype"), [(True, "bfloat16"), (False, "float32")])
def test_cpu_with_and_without_bf16(bf16, dtype):
    p = planner.plan(config(), cpu(bf16), shape=shape(120))
    assert (p.device, p.placement, p.dtype, p.mixed_precision) == ("cpu", ["cpu"], dtype, "no")
    assert p.workers == 0 and p.threads == 2 and p.parallelism == "single"
    assert not p.gradient_checkpointing and "fits without it" in p.reasons["gradient_checkpointing"]
    assert (p.per_device_batch, p.accumulation, p.effective_batch) == (4, 2, 8)
    assert p.attention == "sdpa" and not p.padding_free and p.group_by_length
    assert p.fits and not p.problems
    assert_fits_its_budget(p)
    assert p.to_record()["reasons"]["dtype"].startswith(dtype)


def test_t4_trains_in_fp16_without_flash_attention():
    p = planner.plan(config("Qwen/Qwen2.5-1.5B-Instruct"), T4, shape=shape(1024))
    assert (p.dtype, p.mixed_precision, p.placement) == ("float16", "fp16", ["cuda:0"])
    assert p.attention == "sdpa" and "Ampere" in p.reasons["attention"]  # flash-attn installed, card too old
    assert p.workers == 3  # 4 cores: 3 collate while the GPU computes
    assert_fits_its_budget(p)


def test_rtx_4090_bf16_flash_attention_and_padding_free():
    p = planner.plan(config("Qwen/Qwen2.5-1.5B-Instruct"), RTX4090, shape=shape(1024))
    assert (p.dtype, p.mixed_precision, p.attention) == ("bfloat16", "bf16", "flash_attention_2")
    assert p.padding_free and not p.group_by_length
    assert p.workers == 4 and p.optimizer == "adamw_torch_fused"
    assert p.fits and not p.gradient_checkpointing
    assert_fits_its_budget(p)


def test_checkpointing_on_exactly_when_memory_needs_it():
    """An 8B model, 4 x 2048 tokens per device in 16 bit: ~81 GiB without checkpointing."""
    cfg = config("meta-llama/Llama-3.1-8B-Instruct", auto_batch_split=False)  # the split 4 x 2 as given
    short = planner.plan(cfg, A100, shape=shape(512))
    assert not short.gradient_checkpointing and "fits without it" in short.reasons["gradient_checkpointing"]
    long = planner.plan(cfg, A100, shape=shape(2048, trained=1.0))
    assert long.gradient_checkpointing and "would not fit" in long.reasons["gradient_checkpointing"]
    assert long.fits and (long.per_device_batch, long.accumulation) == (4, 2)
    without = memory.breakdown(BY_KEY["llama3.1-8b"], long.estimate.setup.__class__(**{
        **long.estimate.setup.__dict__, "gradient_checkpointing": False}))  # fmt: skip
    assert without.total > long.budget_mb  # it really needed it
    for p in (short, long):
        assert_fits_its_budget(p)


def test_the_plan_splits_the_effective_batch_for_the_device():
    """The request is the effective batch; the plan gives a GPU as much of it per device as fits without
    checkpointing (up to 16), the CPU at most 4 (faster per token), and keeps a split set by hand."""
    cfg = config("meta-llama/Llama-3.1-8B-Instruct")  # balanced: 8 sequences per step
    short = planner.plan(cfg, A100, shape=shape(512))
    assert (short.per_device_batch, short.accumulation, short.gradient_checkpointing) == (8, 1, False)
    long = planner.plan(cfg, A100, shape=shape(2048, trained=1.0))  # 4 x 2048 would need checkpointing
    assert long.per_device_batch < 4 and long.effective_batch == 8 and not long.gradient_checkpointing
    assert "fits without checkpointing" in long.reasons["batch"]
    big = planner.plan(config("Qwen/Qwen2.5-0.5B-Instruct", preset="aggressive"), A100, shape=shape(512))
    assert (big.per_device_batch, big.accumulation) == (16, 1)
    on_cpu = planner.plan(config(preset="aggressive"), cpu(True), shape=shape(120))
    assert (on_cpu.per_device_batch, on_cpu.accumulation) == (4, 4)
    mine = config("Qwen/Qwen2.5-0.5B-Instruct", per_device_batch_size=2, gradient_accumulation_steps=4)
    mine.training.auto_batch_split = False
    p = planner.plan(mine, A100, shape=shape(512))
    assert (p.per_device_batch, p.accumulation) == (2, 4) and "as set in the config" in p.reasons["batch"]
    for x in (short, long, big, on_cpu, p):
        assert_fits_its_budget(x)


def test_a_batch_too_big_even_with_checkpointing_is_split_keeping_the_effective_batch():
    cfg = config("meta-llama/Llama-3.1-8B-Instruct")
    p = planner.plan(cfg, RTX4090, shape=shape(2048))  # 16 GB of 16-bit weights on a 24 GB card
    assert p.gradient_checkpointing
    if p.fits:
        assert p.per_device_batch < 4 and p.per_device_batch * p.accumulation == 8
        assert "keeps the effective batch" in p.reasons["batch"]
    else:
        assert "qlora" in p.memory_advice
    q = planner.plan(config("meta-llama/Llama-3.1-8B-Instruct", "qlora"), RTX4090, shape=shape(2048))
    assert q.fits and q.peak_mb < p.peak_mb
    assert_fits_its_budget(q)


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_two_h100s_each_rank_on_its_own_gpu(method):
    p = planner.plan(config("meta-llama/Llama-3.1-8B-Instruct", method, processes=2), H100x2, shape=shape(2048))
    assert p.placement == ["cuda:0", "cuda:1"] and p.parallelism == "ddp" and p.processes == 2
    assert p.effective_batch == p.per_device_batch * p.accumulation * 2
    assert p.workers == 4  # 32 cores / 2 ranks: still 4 each
    assert p.dtype == "bfloat16" and p.attention == "flash_attention_2"
    assert_fits_its_budget(p)


def test_one_process_on_two_gpus_goes_where_the_memory_is_free():
    """A shared GPU box: GPU 0 holds someone else's 60 GB. One process trains on GPU 1 and plans with
    GPU 1's free memory; with GPU 1 training another tunewiz run, it goes to GPU 0 and plans with what
    is left there; with both in use, the GPU with the most free memory."""
    hw = gpus(2, "NVIDIA H100 80GB HBM3", 79.6, "9.0", flash=True, cores=32)
    hw.gpus[0].free_gb = 19.6
    cfg = config("meta-llama/Llama-3.1-8B-Instruct", "qlora")
    p = planner.plan(cfg, hw, shape=shape(2048))
    assert p.placement == ["cuda:1"] and p.available_mb == 79.1 * 1024
    assert "most free memory (79.1 GB)" in p.reasons["placement"]
    p = planner.plan(cfg, hw, shape=shape(2048), busy={"cuda:1"})
    assert p.placement == ["cuda:0"] and p.available_mb == 19.6 * 1024
    assert "GPU 1 trains another run" in p.reasons["placement"]
    assert_fits_its_budget(p)
    p = planner.plan(cfg, hw, shape=shape(2048), busy={"cuda:0", "cuda:1"})
    assert p.placement == ["cuda:1"] and "every GPU is in use" in p.reasons["placement"]


def test_four_a10s_with_fsdp_shard_the_model():
    cfg = config("meta-llama/Llama-3.1-8B-Instruct", processes=4, fsdp=True)
    p = planner.plan(cfg, A10x4, shape=shape(1024))
    assert p.parallelism == "fsdp" and p.placement == [f"cuda:{i}" for i in range(4)]
    assert p.estimate.setup.shards == 4
    single = planner.plan(config("meta-llama/Llama-3.1-8B-Instruct"), A10x4, shape=shape(1024))
    assert p.estimate.breakdown.weights < single.estimate.breakdown.weights / 2
    assert p.fits and not p.problems
    assert_fits_its_budget(p)


def test_apple_m2_trains_on_mps():
    p = planner.plan(config("Qwen/Qwen2.5-0.5B-Instruct"), M2, shape=shape(512))
    assert (p.device, p.placement, p.dtype, p.mixed_precision) == ("mps", ["mps"], "float32", "no")
    assert p.optimizer == "adamw_torch" and p.workers == 0 and p.attention == "sdpa"
    assert p.available_mb == pytest.approx(min(24, 32 * planner.MPS_GPU_SHARE) * 1024)
    assert p.estimate.train_time_s is None  # no speed model for Apple GPUs: no guess
    assert_fits_its_budget(p)
    q = planner.plan(config("Qwen/Qwen2.5-0.5B-Instruct", "qlora"), M2, shape=shape(512))
    assert any("MPS" in x and "method = lora" in x for x in q.problems)
    assert q.fits is False  # a plan that cannot run does not "fit", whatever its memory


def test_requests_the_machine_cannot_run_say_what_to_do():
    p = planner.plan(config(processes=2, fsdp=True), cpu(True), shape=shape(100))
    assert any("needs GPUs" in x and "fsdp = false" in x for x in p.problems)
    p = planner.plan(config("Qwen/Qwen2.5-1.5B-Instruct", processes=4), RTX4090, shape=shape(100))
    assert any("1 GPU(s)" in x for x in p.problems) and p.processes == 1


def test_set_in_the_config_wins_and_says_so():
    p = planner.plan(config(threads=1, dataloader_workers=2, gradient_checkpointing=True), cpu(True), shape=shape(100))
    assert p.threads == 1 and p.workers == 2 and p.gradient_checkpointing
    assert "set in the config" in p.reasons["threads"] and "set in the config" in p.reasons["dataloader_workers"]
    cfg = config()
    cfg.model.dtype = "float32"
    assert planner.plan(cfg, cpu(True)).dtype == "float32"


def test_without_trls_hook_every_position_is_scored_and_the_estimate_counts_them():
    with_hook = planner.plan(config(), cpu(True), shape=shape(200, trained=0.2))
    without = planner.plan(config(), cpu(True), shape=shape(200, trained=0.2), trained_only_available=False)
    assert with_hook.score_trained_only and not without.score_trained_only
    assert "no hook" in without.reasons["score_trained_only"]
    assert without.estimate.breakdown.logits == pytest.approx(with_hook.estimate.breakdown.logits * 5)


def test_a_model_outside_the_catalog_plans_without_an_estimate(tmp_path):
    p = planner.plan(config(str(tmp_path / "nowhere")), cpu(True))
    assert p.estimate is None and p.fits is None and p.memory_line() == "peak ? (unknown model)"


def test_recommend_ranks_what_fits_first_and_biggest_first_on_a_gpu():
    recs = planner.recommend(config(), RTX4090, shape=shape(512))
    fits = [r for r in recs if r.fits]
    assert fits and all(r.fits for r in recs[: len(fits)])
    sizes = [r.spec.params for r in fits]
    assert sizes == sorted(sizes, reverse=True)
