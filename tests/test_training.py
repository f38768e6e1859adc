"""Real training, end to end, in detached processes (slow: marked, and run in CI).

Most tests use a 2-layer random-weight model of the bundled model's architecture
with the real tokenizer (trains in seconds); one trains the real bundled
SmolLM2-135M-Instruct and compares it with its base.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tunewiz.core.bookkeeping import runs
from tunewiz.core.bookkeeping.events import read_events
from tunewiz.core.config import RunConfig
from tunewiz.core.planning.presets import build_config
from tunewiz.core.toml import read_toml
from tunewiz.core.training import launcher
from tunewiz.tui import cli, commands

from tests.conftest import HANG_S, ROOT, hang_up, open_terminal, sample_tickets

pytestmark = pytest.mark.slow

DESIGN_SECTIONS = {
    "run",
    "model",
    "data",
    "preset",
    "training",
    "plan",
    "hardware",
    "versions",
    "estimate",
    "results",
    "artifacts",
}


@pytest.fixture
def small_data(tmp_path) -> Path:
    return sample_tickets(tmp_path / "tickets40.jsonl")


def tiny_config(model_dir: Path, data: Path, **training) -> RunConfig:
    cfg = build_config("balanced", split=(2, 4))
    cfg.name = "tiny"
    cfg.model.id = str(model_dir)
    cfg.data.path = str(data)
    cfg.data.eval_fraction = 0.1
    cfg.data.max_seq_len = 128
    cfg.training.max_steps = 6
    cfg.training.threads = 1
    cfg.evaluation.max_examples = 4
    cfg.evaluation.max_new_tokens = 8
    for k, v in training.items():
        setattr(cfg.training, k, v)
    return cfg.validate()


def wait_for(pred, timeout=HANG_S, poll=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(poll)
    raise AssertionError("condition not met in time")


def steps_seen(run_dir: Path) -> list[int]:
    return [e["step"] for e in read_events(run_dir)[0] if e.get("event") == "step"]


def test_tiny_training_end_to_end(home, tiny_model_dir, small_data):
    cfg = tiny_config(tiny_model_dir, small_data)
    run_dir = commands.launch(cfg, home)
    doc = launcher.wait(run_dir, timeout=HANG_S).to_dict()
    assert doc["run"]["status"] == "completed", (run_dir / runs.LOG).read_text()[-3000:]

    # The record parses, has every section, and says what happened.
    doc = read_toml(run_dir / runs.RECORD)
    assert set(doc) >= DESIGN_SECTIONS
    assert doc["data"]["train_rows"] == 36 and doc["data"]["eval_rows"] == 4
    assert len(doc["data"]["sha256"]) == 64
    assert doc["data"]["lint"]["error"] == 0 and "too-few-examples" in doc["data"]["lint"]["rules"]
    assert doc["results"]["steps"] == 6
    assert doc["results"]["finetuned"]["examples"] == 4
    assert set(doc["results"]["base"]) >= {"eval_loss", "exact_match", "json_valid", "field_match"}
    assert doc["versions"]["torch"] and doc["hardware"]["device"] == "cpu"
    assert doc["training"]["lora_alpha"] == 2 * doc["training"]["lora_r"]
    # every decision of the plan is recorded with its reason, apart from the request ([training])
    assert "reasons" not in doc["training"] and doc["plan"]["effective_batch"] == doc["training"]["effective_batch"]
    reasons = doc["plan"]["reasons"]
    chosen = {"dtype", "threads", "attention", "optimizer", "dataloader_workers", "gradient_checkpointing"}
    assert chosen <= set(reasons)
    assert reasons["attention"].startswith("sdpa") and reasons["optimizer"].startswith("adamw_torch_fused:")
    # The estimate made at submit was refined by the trainer; the results say how far off it was.
    assert doc["estimate"]["source"].startswith("trainer") and doc["estimate"]["peak_memory_mb"] > 0
    assert abs(doc["results"]["peak_memory_vs_estimate"]) < 0.5

    # events.jsonl replays the run: every step, an eval, the final status.
    events = read_events(run_dir)[0]
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3, 4, 5, 6]
    assert all(
        {"loss", "learning_rate", "tokens_per_s", "memory_mb", "eta_s"} <= set(e)
        for e in events
        if e["event"] == "step"
    )
    assert events[-1] == {**events[-1], "event": "status", "status": "completed"}
    assert "tqdm" not in (run_dir / runs.LOG).read_text() and "it/s]" not in (run_dir / runs.LOG).read_text()

    # The adapter is PEFT safetensors and loads onto the base.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(run_dir / "adapter")
    )
    assert any("lora_A" in n for n, _ in model.named_parameters())
    preds = [json.loads(line) for line in (run_dir / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 4 and {"prompt", "expected", "base", "finetuned"} <= set(preds[0])

    # The record is a config: --config repeats the run with the same effective settings.
    again = RunConfig.from_toml(run_dir / runs.RECORD)
    assert again.to_dict() == cfg.to_dict()


def test_the_same_request_and_seed_train_the_same_losses(home, tiny_model_dir, small_data):
    """A run repeated with its seed repeats: the adapters start from the seed (not from whatever the
    process's random state was when they were made), so two runs give the same loss at every step."""
    cfg = tiny_config(tiny_model_dir, small_data, max_steps=4, warmup_ratio=0.0)
    cfg.evaluation.enabled = False
    losses = []
    for _ in range(2):
        run_dir = commands.launch(cfg, home)
        doc = launcher.wait(run_dir, timeout=HANG_S).to_dict()
        assert doc["run"]["status"] == "completed", (run_dir / runs.LOG).read_text()[-3000:]
        losses.append([e["loss"] for e in read_events(run_dir)[0] if e.get("event") == "step"])
    assert len(losses[0]) == 4 and losses[0] == losses[1], losses


def test_config_flag_repeats_the_effective_settings(home, tiny_model_dir, small_data, capsys):
    cfg = tiny_config(tiny_model_dir, small_data, learning_rate=3e-4, lora_r=4, lora_alpha=8)
    first = runs.create_run(cfg, home)
    assert cli.main(["train", "--config", str(first / runs.RECORD), "--no-eval"]) == 0
    second = [p for p in runs.runs_root(home).iterdir() if p != first and not p.name.startswith(".")][0]
    a, b = read_toml(first / runs.RECORD), read_toml(second / runs.RECORD)
    assert a["training"] == b["training"] and a["model"] == b["model"] and a["data"]["path"] == b["data"]["path"]
    launcher.wait(second, timeout=HANG_S)


def test_training_survives_the_terminal_closing(home, tiny_model_dir, small_data, tmp_path):
    """`tunewiz train --follow` in its own terminal session; the whole session gets SIGHUP, then SIGKILL."""
    cfg = tiny_config(tiny_model_dir, small_data, max_steps=30)
    config_file = tmp_path / "cfg.toml"
    from tunewiz.core.toml import write_toml_atomic

    write_toml_atomic(config_file, cfg.to_dict())
    train = [sys.executable, "-m", "tunewiz.tui.cli", "train", "--config", str(config_file), "--follow", "--no-eval"]
    terminal = open_terminal(train, {**os.environ, "PYTHONPATH": str(ROOT)})
    # A run directory, not the writability probe (runs/.write-test-*) submit makes and removes first.
    wait_for(lambda: runs._run_dirs(runs.runs_root(home)))
    (run_dir,) = runs._run_dirs(runs.runs_root(home))
    wait_for(lambda: len(steps_seen(run_dir)) >= 1, timeout=HANG_S)
    hang_up(terminal, wait_s=30)  # the SSH connection drops
    doc = launcher.wait(run_dir, timeout=HANG_S).to_dict()
    assert doc["run"]["status"] == "completed"
    assert steps_seen(run_dir)[-1] == 30


def test_stop_saves_adapter_and_resume_finishes(home, tiny_model_dir, small_data):
    cfg = tiny_config(tiny_model_dir, small_data, max_steps=40, save_steps=1000)
    run_dir = commands.launch(cfg, home)
    wait_for(lambda: len(steps_seen(run_dir)) >= 2, timeout=HANG_S)
    assert launcher.stop(run_dir)
    doc = launcher.wait(run_dir, timeout=HANG_S).to_dict()
    assert doc["run"]["status"] == "stopped"
    reached = doc["run"]["stopped_at_step"]
    assert 2 <= reached < 40
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert (run_dir / "checkpoints" / f"checkpoint-{reached}").is_dir()

    launcher.start(run_dir, resume=True)
    doc = launcher.wait(run_dir, timeout=HANG_S).to_dict()
    assert doc["run"]["status"] == "completed" and doc["run"]["resumed"] == 1
    assert doc["run"]["previous_status"] == "stopped" and doc["run"]["started"] < doc["run"]["resumed_at"][0]
    steps = steps_seen(run_dir)
    assert steps[-1] == 40 and steps.count(reached + 1) == 1  # continued, not restarted

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)), str(run_dir / "adapter")
    )
    assert any("lora_B" in n for n, _ in model.named_parameters())


def test_killed_trainer_is_reported_crashed(home, tiny_model_dir, small_data, capsys):
    cfg = tiny_config(tiny_model_dir, small_data, max_steps=100, save_steps=20)
    run_dir = commands.launch(cfg, home)
    wait_for(lambda: (run_dir / "checkpoints" / "checkpoint-20").is_dir(), timeout=HANG_S)
    # a second trainer on the same run is refused while the first holds the lock
    second = subprocess.run(
        [sys.executable, "-m", "tunewiz.core.training.trainer", str(run_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=HANG_S,
    )
    assert second.returncode == 3 and "already running" in second.stderr
    pid = runs.read_record(run_dir).to_dict()["run"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not runs.trainer_alive(run_dir), timeout=600)
    assert cli.main(["runs"]) == 0
    assert "crashed" in capsys.readouterr().out
    assert runs.read_record(run_dir).to_dict()["run"]["status"] == "running"  # listing reads; it never writes (#24)
    assert cli.main(["runs", "--reconcile"]) == 0
    doc = runs.read_record(run_dir).to_dict()
    assert doc["run"]["status"] == "crashed" and doc["run"]["last_step"] >= 1
    assert "step" in doc["run"]["log_tail"]

    # resume continues from the last checkpoint and finishes
    assert cli.main(["resume", run_dir.name]) == 0
    doc = launcher.wait(run_dir, timeout=HANG_S).to_dict()
    assert doc["run"]["status"] == "completed" and doc["run"]["previous_status"] == "crashed"
    assert steps_seen(run_dir)[-1] == 100


def test_qlora_trains_on_cpu(home, tiny_model_dir, small_data):
    cfg = tiny_config(tiny_model_dir, small_data, max_steps=2)
    cfg.model.method = "qlora"
    cfg.evaluation.enabled = False
    run_dir = commands.launch(cfg, home)
    doc = launcher.wait(run_dir, timeout=HANG_S).to_dict()
    assert doc["run"]["status"] == "completed", (run_dir / runs.LOG).read_text()[-3000:]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_bundled_model_trains_and_is_compared_with_base(home, session_home, bundled_dir, small_data, capsys):
    """The real SmolLM2-135M-Instruct, a few steps, base vs fine-tuned on held-out rows."""
    cfg = build_config("balanced", split=(2, 4))
    cfg.data.path = str(small_data)
    cfg.training.max_steps = 3
    cfg.evaluation.max_examples = 3
    cfg.evaluation.max_new_tokens = 24
    # Share the session's converted model instead of converting again.
    (home / "models").mkdir(parents=True)
    for d in (session_home / "models").iterdir():
        (home / "models" / d.name).symlink_to(d)
    run_dir = commands.launch(cfg.validate(), home)
    doc = launcher.wait(run_dir, timeout=HANG_S).to_dict()
    assert doc["run"]["status"] == "completed", (run_dir / runs.LOG).read_text()[-3000:]
    assert doc["model"]["source"] == "bundled" and doc["model"]["revision"].startswith("sha256:")
    # The adapter names its base by hub id, not this machine's cache path: it loads anywhere.
    adapter_cfg = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert doc["plan"]["device"] == "cpu" and doc["plan"]["reasons"]["dtype"]
    assert doc["results"]["base"]["examples"] == 3
    assert cli.main(["show", run_dir.name]) == 0
    out = capsys.readouterr().out
    assert "base" in out and "fine-tuned" in out


def test_data_the_template_rejects_fails_with_its_line(home, tiny_model_dir, small_data, tmp_path):
    """Only the model's tokenizer can tell: no chat template. Submit refuses it, naming the fix; no run starts."""
    import shutil

    base = tmp_path / "base-model"
    shutil.copytree(tiny_model_dir, base)
    tok_cfg = base / "tokenizer_config.json"
    doc = json.loads(tok_cfg.read_text())
    doc.pop("chat_template", None)
    tok_cfg.write_text(json.dumps(doc))
    (base / "chat_template.jinja").unlink(missing_ok=True)
    from tunewiz.core.data.dataset import DataError

    with pytest.raises(DataError) as info:
        commands.launch(tiny_config(base, small_data), home)
    assert "no chat template" in str(info.value) and "-Instruct" in str(info.value)
    assert runs.list_runs(home) == []
