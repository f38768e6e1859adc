"""Data-parallel training: `training.processes = 2` starts the trainer through `accelerate launch`."""

from __future__ import annotations

import re

import pytest
from tunewiz.core.bookkeeping import runs
from tunewiz.core.bookkeeping.events import read_events
from tunewiz.core.config import ConfigError, RunConfig, apply_overrides
from tunewiz.core.toml import read_toml
from tunewiz.core.training import distributed, launcher
from tunewiz.tui import commands

from tests.conftest import HANG_S, SAMPLE, sample_tickets


def test_processes_is_a_validated_setting_that_scales_the_effective_batch():
    cfg = apply_overrides(RunConfig(), ["training.processes=2", "per_device_batch_size=4"])
    assert cfg.training.processes == 2
    assert cfg.training.effective_batch == 4 * cfg.training.gradient_accumulation_steps * 2
    for bad in ("0", "-1", "100"):
        cfg.training.processes = int(bad)
        cfg.data.path = "x.jsonl"
        with pytest.raises(ConfigError, match="processes"):
            cfg.validate()


def for_run(cfg, hw, shape):
    """The estimate of the plan for `cfg` on `hw` (what the trainer records as [estimate])."""
    from tunewiz.core.planning import planner

    return planner.plan(cfg, hw, shape=shape).estimate


def test_estimate_is_per_process_memory_and_the_time_of_one_share():
    from tunewiz.core.planning.hardware import GPU, Hardware
    from tunewiz.core.planning.memory import DataShape

    shape = DataShape(longest=128, train_tokens=40_000, rows=400)
    for hw in (Hardware(cpu_physical_cores=8), Hardware(gpus=[GPU(0, "G", 24, 24, "8.6", True)] * 2)):
        one = apply_overrides(RunConfig(), ["model.id=smollm2-135m", "max_steps=50"])
        two = apply_overrides(RunConfig(), ["model.id=smollm2-135m", "max_steps=50", "training.processes=2"])
        e1, e2 = for_run(one, hw, shape), for_run(two, hw, shape)
        # Same per-device batch, so the same peak memory per process; twice the data in the same steps.
        assert e2.peak_memory_mb == e1.peak_memory_mb
        if hw.gpus:  # each GPU does half the doubled work: the same time
            assert e2.train_time_s == pytest.approx(e1.train_time_s, rel=0.01)
        else:  # two processes share the 8 cores (4 threads each): more time, not twice the speed
            assert e2.train_time_s > e1.train_time_s


def test_launch_command_goes_through_accelerate_with_its_own_port():
    a = distributed.launch_command(2, ["/runs/r", "--resume"])
    b = distributed.launch_command(2, ["/runs/r"])
    assert a[1:3] == ["-m", "accelerate.commands.launch"] and a[-4:] == [
        "-m",
        "tunewiz.core.training.trainer",
        "/runs/r",
        "--resume",
    ]
    assert a[a.index("--num_processes") + 1] == "2"
    port = a.index("--main_process_port") + 1
    assert a[port] != b[port]  # two runs at once do not fight over one rendezvous port


def test_fsdp_is_an_option_that_needs_several_processes_and_lora():
    cfg = apply_overrides(RunConfig(), ["training.processes=2", "training.fsdp=true", "data.path=x.jsonl"])
    assert cfg.validate().training.fsdp is True
    for overrides, words in ((["training.processes=1"], "processes"), (["model.method=qlora"], "qlora")):
        base = ["training.processes=2", "training.fsdp=true", "data.path=x.jsonl"]
        bad = apply_overrides(RunConfig(), [*base, *overrides])
        with pytest.raises(ConfigError, match=words):
            bad.validate()


def test_fsdp_estimate_splits_the_weights_and_adapter_states_over_the_gpus():
    from tunewiz.core.planning.hardware import GPU, Hardware
    from tunewiz.core.planning.memory import DataShape

    hw = Hardware(gpus=[GPU(0, "NVIDIA RTX A4000", 16, 16, "8.6", True)] * 2)
    shape = DataShape(longest=1024, train_tokens=400_000, rows=1000)
    base = ["model.id=llama-3.1-8b-instruct", "training.processes=2", "data.path=x.jsonl", "per_device_batch_size=1"]
    base.append("gradient_checkpointing=true")
    ddp = for_run(apply_overrides(RunConfig(), base), hw, shape)
    fsdp = for_run(apply_overrides(RunConfig(), [*base, "training.fsdp=true"]), hw, shape)
    assert fsdp.breakdown.activations == ddp.breakdown.activations  # each GPU still runs its own batch
    assert fsdp.breakdown.trainable == pytest.approx(ddp.breakdown.trainable / 2)
    # Half the 16-bit weights, plus the two blocks gathered whole at a time (current and prefetched).
    assert ddp.breakdown.weights / 2 < fsdp.breakdown.weights < ddp.breakdown.weights / 2 + 2 * 1024
    assert ddp.peak_memory_mb > 16 * 1024 > fsdp.peak_memory_mb  # 8B LoRA: not on one 16 GB GPU, yes on two


def test_fsdp_launch_flags_make_accelerate_wrap_each_block_of_the_peft_model(bundled_dir, monkeypatch):
    """What can be checked without GPUs: accelerate reads our flags as FSDP 2, and its plugin finds
    the block class to wrap in the PEFT model the trainer builds (accelerate runs FSDP on GPUs only)."""
    import os

    from accelerate.commands.launch import launch_command_parser
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    cmd = distributed.launch_command(2, ["/runs/r"], fsdp=True)
    args = launch_command_parser().parse_args(cmd[3:])
    assert (
        args.use_fsdp and not args.multi_gpu and args.module and args.training_script == "tunewiz.core.training.trainer"
    )
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert env["FSDP_STATE_DICT_TYPE"] == "FULL_STATE_DICT"
    for key, value in env.items():
        if key.startswith(("FSDP_", "ACCELERATE_USE_FSDP")):
            monkeypatch.setitem(os.environ, key, value)
    plugin = FullyShardedDataParallelPlugin()
    model = AutoModelForCausalLM.from_pretrained(str(bundled_dir))
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    plugin.set_auto_wrap_policy(model)
    assert plugin.fsdp_version == 2 and plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]


def test_fsdp_on_a_machine_without_gpus_is_refused_before_the_run_is_created(home, tmp_path):
    from tunewiz.core.planning.hardware import Hardware

    cfg = apply_overrides(RunConfig(), ["training.processes=2", "training.fsdp=true"])
    cfg.data.path = str(SAMPLE / "support_tickets.jsonl")
    with pytest.raises(runs.RunError, match="needs GPUs"):
        launcher.submit(cfg.validate(), home, hw=Hardware(cpu_physical_cores=2))
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


def test_outside_a_process_group_every_rank_helper_is_a_no_op(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.is_primary() and distributed.world_size() == 1
    assert distributed.any_ranks(True, False) == [True, False]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not distributed.is_primary()


@pytest.mark.slow
def test_two_process_data_parallel_run_on_cpu(home, tiny_model_dir, tmp_path):
    """A real DDP run (gloo, 2 processes) through the normal launcher: both ranks train, rank 0 records."""
    from tests.test_training import tiny_config

    data = sample_tickets(tmp_path / "tickets40.jsonl")
    cfg = tiny_config(tiny_model_dir, data, max_steps=4, processes=2, per_device_batch_size=2)
    cfg.training.gradient_accumulation_steps = 1
    cfg.evaluation.max_examples = 2
    run_dir = commands.launch(cfg, home)
    doc = launcher.wait(run_dir, timeout=HANG_S).to_dict()
    log = (run_dir / runs.LOG).read_text()
    assert doc["run"]["status"] == "completed", log[-4000:]

    # Both ranks planned the same split from rank 0's view of the machine, each on its own place.
    plans = re.findall(r"\[rank (\d)\] INFO plan: (\S+), (.*)", log)
    assert sorted(r for r, _, _ in plans) == ["0", "1"] and len({split for _, _, split in plans}) == 1, plans
    # Both ranks trained every step (each logs its own step lines into train.log).
    for rank in (0, 1):
        steps = re.findall(rf"\[rank {rank}\] INFO step (\d+)/4", log)
        assert steps == ["1", "2", "3", "4"], (rank, log[-3000:])

    doc = read_toml(run_dir / runs.RECORD)
    assert doc["training"]["processes"] == 2 and doc["hardware"]["processes"] == 2
    assert doc["training"]["effective_batch"] == 2 * 1 * 2
    assert doc["results"]["steps"] == 4
    # One adapter, written once by rank 0; one record of one completion.
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert [e["step"] for e in read_events(run_dir)[0] if e["event"] == "step"] == [1, 2, 3, 4]
    assert doc["results"]["finetuned"]["examples"] == 2


@pytest.mark.slow
def test_a_two_process_run_stops_every_rank_after_the_same_step_and_resumes(home, tiny_model_dir, tmp_path):
    """SIGTERM reaches rank 0 (the pid in the record); rank 1 learns it at the end of the step."""
    from tests.test_training import steps_seen, tiny_config, wait_for

    data = sample_tickets(tmp_path / "tickets40.jsonl")
    cfg = tiny_config(tiny_model_dir, data, max_steps=60, save_steps=1000, processes=2, per_device_batch_size=2)
    cfg.training.gradient_accumulation_steps = 1
    run_dir = commands.launch(cfg, home)
    wait_for(lambda: len(steps_seen(run_dir)) >= 2, timeout=HANG_S)
    assert launcher.stop(run_dir)
    doc = launcher.wait(run_dir, timeout=HANG_S).to_dict()
    log = (run_dir / runs.LOG).read_text()
    assert doc["run"]["status"] == "stopped", log[-4000:]
    reached = doc["run"]["stopped_at_step"]
    assert 2 <= reached < 60
    for rank in (0, 1):
        last = re.findall(rf"\[rank {rank}\] INFO step (\d+)/60", log)[-1]
        assert int(last) == reached, (rank, log[-3000:])
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert (run_dir / "checkpoints" / f"checkpoint-{reached}").is_dir()

    launcher.start(run_dir, resume=True)
    doc = launcher.wait(run_dir, timeout=HANG_S).to_dict()
    assert doc["run"]["status"] == "completed" and doc["run"]["resumed"] == 1
    steps = steps_seen(run_dir)
    assert steps[-1] == 60 and steps.count(reached + 1) == 1  # continued from the checkpoint, once
