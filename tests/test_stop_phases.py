"""Stop always stops, and says what it kept (issue 24): a stop in the held-out loss pass and in the
comparison (a stop in training: tests/test_training.py); a resume after a kill in the comparison runs
only the comparison. Each stop is a real SIGTERM, sent from inside the real training process by code
the test adds at the phase it names (no test hook in the trainer)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from tunewiz.core.bookkeeping import checkpoints, runs
from tunewiz.core.bookkeeping.events import read_events

from tests.conftest import HANG_S, sample_tickets
from tests.test_trainer_phases import tiny, with_callbacks

pytestmark = pytest.mark.slow


def run_trainer(run_dir, setup: str, resume: bool = False) -> subprocess.CompletedProcess:
    argv = [str(run_dir), *(["--resume"] if resume else [])]
    head = textwrap.dedent(
        """
        import os, signal, sys
        from transformers import TrainerCallback
        from tunewiz.core.judging import evaluate
        callbacks = []
        """
    )
    code = head + textwrap.dedent(setup) + with_callbacks(argv, "callbacks")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_S)


def steps_of(run_dir) -> list[int]:
    return [e["step"] for e in read_events(run_dir)[0] if e.get("event") == "step"]


def compared_run(home, tiny_model_dir, tmp_path, **training):
    cfg = tiny(tiny_model_dir, sample_tickets(tmp_path / "t.jsonl", rows=24), **training)
    cfg.evaluation.enabled = True
    cfg.evaluation.max_examples = 3
    cfg.evaluation.max_new_tokens = 4
    return runs.create_run(cfg, home)


SIGTERM_IN_COMPARISON = """
real = evaluate.generate
def generate(*a, **k):
    os.kill(os.getpid(), signal.SIGTERM)  # `tunewiz stop` while the base model answers
    return real(*a, **k)
evaluate.generate = generate
"""


def test_a_stop_in_the_comparison_completes_the_run_without_claiming_a_comparison(home, tiny_model_dir, tmp_path):
    run_dir = compared_run(home, tiny_model_dir, tmp_path, max_steps=2)
    proc = run_trainer(run_dir, SIGTERM_IN_COMPARISON)
    assert proc.returncode == 0, proc.stdout[-3000:]
    doc = runs.read_record(run_dir).to_dict()
    assert doc["run"]["status"] == "completed" and runs.has_adapter(run_dir)
    assert doc["results"]["comparison"].startswith("skipped: stopped before the comparison ended")
    assert "finetuned" not in doc["results"] and "base" not in doc["results"]
    assert not (run_dir / "eval" / "predictions.jsonl").exists()


def test_a_stop_in_the_held_out_loss_pass_stops_the_run(home, tiny_model_dir, tmp_path):
    setup = """
    class StopWhileEvaluating(TrainerCallback):
        def on_prediction_step(self, args, state, control, **kw):
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGTERM)
    callbacks.append(StopWhileEvaluating())
    """
    run_dir = compared_run(home, tiny_model_dir, tmp_path, max_steps=8, eval_steps=2)
    proc = run_trainer(run_dir, setup)
    assert proc.returncode == 0, proc.stdout[-3000:]
    doc = runs.read_record(run_dir).to_dict()
    assert doc["run"]["status"] == "stopped" and doc["run"]["stopped_at_step"] <= 3
    assert runs.has_adapter(run_dir) and max(steps_of(run_dir)) <= 3


def test_resume_after_a_kill_in_the_comparison_only_compares(home, tiny_model_dir, tmp_path):
    killed = """
    def compare(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)  # the machine's OOM killer, a power cut: no last words
    evaluate.compare = compare
    """
    run_dir = compared_run(home, tiny_model_dir, tmp_path, max_steps=3, save_steps=1)
    proc = run_trainer(run_dir, killed)
    assert proc.returncode == -9
    assert runs.reconcile(run_dir).to_dict()["run"]["status"] == "crashed"
    runs.update_record(run_dir, runs.mark_resumed)
    proc = run_trainer(run_dir, "", resume=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    doc = runs.read_record(run_dir).to_dict()
    assert doc["run"]["status"] == "completed" and "finetuned" in doc["results"]
    assert max(steps_of(run_dir)) == 3  # no step past max_steps
    assert checkpoints.newest_complete(run_dir / runs.CHECKPOINTS)[0].name == "checkpoint-3"
    assert "resuming runs only the comparison" in proc.stdout
