"""The training process through its phases: honest token counting with loader workers, a failure
injected by a callback the test adds (no test hook in the trainer: see `with_callbacks`), the plan in the record."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from tunewiz.core.bookkeeping import runs
from tunewiz.core.planning.presets import build_config
from tunewiz.core.training import launcher
from tunewiz.tui import cli

from tests.conftest import HANG_S, sample_tickets

pytestmark = pytest.mark.slow


def tiny(model_dir, data, **training):
    cfg = build_config("balanced", split=(2, 4))
    cfg.name = "tiny"
    cfg.model.id = str(model_dir)
    cfg.data.path = str(data)
    cfg.data.max_seq_len = 128
    cfg.training.threads = 1
    cfg.evaluation.enabled = False
    for k, v in training.items():
        setattr(cfg.training, k, v)
    return cfg.validate()


def with_callbacks(argv: list[str], callbacks: str) -> str:
    """The end of a script that runs the real training process, ``trainer.main(argv)``, with the
    TrainerCallbacks that the expression `callbacks` gives (read when training starts), added after the
    trainer's own. The script wraps the fit phase: the trainer's signatures carry no test hook."""
    return textwrap.dedent(
        f"""
        import sys

        from tunewiz.core.training import trainer as _trainer

        _fit = _trainer.fit

        def _fit_with_the_tests_callbacks(hf_trainer, *args, **kwargs):
            for cb in {callbacks}:
                hf_trainer.add_callback(cb)
            return _fit(hf_trainer, *args, **kwargs)

        _trainer.fit = _fit_with_the_tests_callbacks
        sys.exit(_trainer.main({argv!r}))
        """
    )


def test_two_loader_workers_count_every_trained_token_and_no_held_out_one(home, tiny_model_dir, tmp_path):
    data = sample_tickets(tmp_path / "t.jsonl", rows=40)
    cfg = tiny(tiny_model_dir, data, dataloader_workers=2, num_epochs=1.0, max_steps=-1, eval_steps=2)
    run_dir = launcher.submit(cfg, home)
    doc = launcher.wait(run_dir, timeout=HANG_S).to_dict()
    assert doc["run"]["status"] == "completed", (run_dir / runs.LOG).read_text()[-3000:]
    res, dat, plan = doc["results"], doc["data"], doc["plan"]
    assert plan["dataloader_workers"] == 2 and "set in the config" in plan["reasons"]["dataloader_workers"]
    # One epoch sees every training row once: the tokens counted are the training rows' tokens,
    # however many loader processes collated them, and none of the held-out rows evaluated every 2 steps.
    assert res["train_tokens_seen"] == dat["total_tokens"] and dat["dropped_rows"] == 0
    assert "eval_loss" in res
    assert 0 <= res["padding_fraction"] < 0.5
    assert res["tokens_per_s"] == pytest.approx(res["train_tokens_seen"] / res["step_time_s"], rel=0.02)


def test_out_of_memory_in_a_step_fails_with_what_to_change(home, tiny_model_dir, tmp_path):
    """The failure comes from a TrainerCallback this test adds to the real training process."""
    cfg = tiny(tiny_model_dir, sample_tickets(tmp_path / "t.jsonl", rows=20), max_steps=4)
    run_dir = runs.create_run(cfg, home)
    code = textwrap.dedent(
        """
        import sys, torch
        from transformers import TrainerCallback

        class OutOfMemoryAtStep2(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                if state.global_step + 1 == 2:
                    raise torch.OutOfMemoryError("CUDA out of memory (raised by the test)")
        """
    ) + with_callbacks([str(run_dir)], "[OutOfMemoryAtStep2()]")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 1
    doc = runs.read_record(run_dir).to_dict()
    assert doc["run"]["status"] == "failed"
    assert "Out of memory" in doc["run"]["failure_reason"]
    assert "gradient_accumulation_steps" in doc["run"]["failure_reason"]


def test_dry_run_prints_the_plan_and_starts_nothing(home, tiny_model_dir, tmp_path, capsys):
    data = sample_tickets(tmp_path / "t.jsonl", rows=20)
    argv = ["train", "--model", str(tiny_model_dir), "--data", str(data), "--dry-run"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "nothing started" in out and "gradient_checkpointing" in out and "dataloader_workers" in out
    assert "peak host RAM" in out
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


def test_weights_that_turn_nan_fail_the_run_and_keep_the_last_good_checkpoint(home, tiny_model_dir, tmp_path):
    """A NaN forced into the adapter at step 3 (as a NaN setting or a runaway learning rate would make
    it): the run ends `failed` saying so, and its adapter is checkpoint-2's, every value finite."""
    import torch
    from safetensors.torch import load_file

    cfg = tiny(tiny_model_dir, sample_tickets(tmp_path / "t.jsonl", rows=20), max_steps=6, save_steps=1)
    run_dir = runs.create_run(cfg, home)
    code = textwrap.dedent(
        """
        import sys, torch
        from transformers import TrainerCallback

        class PoisonAtStep3(TrainerCallback):
            def on_step_begin(self, args, state, control, model=None, **kw):
                if state.global_step + 1 == 3:
                    with torch.no_grad():
                        next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))
        """
    ) + with_callbacks([str(run_dir)], "[PoisonAtStep3()]")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == 1, proc.stdout[-3000:]
    doc = runs.read_record(run_dir).to_dict()
    reason = doc["run"]["failure_reason"]
    assert doc["run"]["status"] == "failed" and "NaN or Inf at step 3" in reason
    assert "checkpoint-2" in reason
    weights = load_file(str(run_dir / runs.ADAPTER / "adapter_model.safetensors"))
    assert weights and all(bool(torch.isfinite(t).all()) for t in weights.values())
