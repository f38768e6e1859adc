"""Decisions outside training that the planner owns (serving, the presets' split, LoRA alpha, the hardware
advice): each comes from core.planning.planner with a reason, and the modules that used to decide them
give the planner's answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from tunewiz.core.planning import planner, presets
from tunewiz.core.planning.hardware import GPU, Hardware
from tunewiz.core.planning.preset_table import PRESETS

CPU_BF16 = Hardware(cpu_physical_cores=2, cpu_bf16=True, ram_total_gb=24, ram_available_gb=20, disk_free_gb=100)
CPU_PLAIN = Hardware(cpu_physical_cores=2, ram_total_gb=24, ram_available_gb=20, disk_free_gb=5)
TWO_GPUS = Hardware(
    gpus=[GPU(0, "NVIDIA A100", 80, 10, "8.0", True), GPU(1, "NVIDIA A100", 80, 70, "8.0", True)],
    ram_available_gb=200,
    disk_free_gb=500,
)
T4 = Hardware(gpus=[GPU(0, "Tesla T4", 15.0, 14.5, "7.5", False)], disk_free_gb=500)
M2 = Hardware(mps=True, ram_total_gb=32, ram_available_gb=24, disk_free_gb=500)


@pytest.mark.parametrize(
    ("hw", "asked", "device", "dtype"),
    [
        (CPU_BF16, "auto", "cpu", "float32"),  # trained in bf16, answers in float32 on the CPU
        (CPU_PLAIN, "auto", "cpu", "float32"),
        (TWO_GPUS, "auto", "cuda:1", "bfloat16"),  # the GPU with the most free memory
        (T4, "auto", "cuda:0", "float16"),
        (M2, "auto", "mps", "float32"),
        (TWO_GPUS, "float32", "cuda:1", "float32"),
    ],
)
def test_a_finished_model_is_served_where_and_in_what_the_planner_says(hw, asked, device, dtype, monkeypatch):
    where, precision = planner.choose_serving(hw, asked)
    assert (where.value, precision.value) == (device, dtype)
    assert where.reason and precision.reason
    # evaluation, chat and export open a finished run one way, and it gives the planner's answer here
    from tunewiz.core.bookkeeping.finished import Finished
    from tunewiz.core.planning import hardware

    monkeypatch.setattr(hardware, "detect", lambda *a, **k: hw)
    cfg = presets.build_config()
    cfg.model.dtype = asked
    assert Finished(Path("unused"), None, cfg, Path("base"), Path("adapter")).placement() == (device, dtype)


def test_the_serving_precision_and_its_reason_are_the_planners():
    cpu = planner.choose_serving_dtype("cpu", "bfloat16")
    assert cpu.value == "float32" and "batching" in cpu.reason
    assert planner.choose_serving_dtype("cuda:0", "bfloat16").value == "bfloat16"
    assert planner.choose_serving_dtype("cpu", "float32").value == "float32"


@pytest.mark.parametrize("name", list(PRESETS))
def test_a_presets_alpha_and_split_are_the_planners(name):
    p = PRESETS[name]
    t = presets.training_for(name)
    alpha = planner.choose_lora_alpha(p.lora_r)
    split = planner.choose_request_split(p.effective_batch)
    assert t.lora_alpha == alpha.value == 2 * p.lora_r and alpha.reason
    assert (t.per_device_batch_size, t.gradient_accumulation_steps) == split.value and split.reason
    assert presets.split_batch is planner.split_batch


@pytest.mark.parametrize("name", list(PRESETS))
def test_the_split_a_preset_writes_is_the_split_the_cpu_plan_makes(name):
    """One CPU rule: the request's starting split is what the plan picks on a CPU anyway."""
    cfg = presets.build_config(name)
    plan = planner.plan(cfg, CPU_PLAIN)
    assert (plan.per_device_batch, plan.accumulation) == planner.choose_request_split(
        PRESETS[name].effective_batch
    ).value


@pytest.mark.parametrize("hw", [CPU_BF16, CPU_PLAIN, TWO_GPUS, T4, M2])
def test_the_hardware_advice_is_the_planners(hw):
    advice = planner.advise(hw)
    assert hw.advice() == [d.reason for d in advice]
    assert all(d.value in ("models", "precision", "disk") and d.reason for d in advice)
    topics = [d.value for d in advice]
    assert ("precision" in topics) == (planner.choose_dtype("auto", hw).value == "float16")
    assert ("disk" in topics) == (hw.disk_free_gb < 10)
    assert hw.device == planner.choose_device(hw).value
