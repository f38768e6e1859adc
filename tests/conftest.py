"""Shared fixtures.

* ``home``: a fresh TUNEWIZ_HOME per test.
* ``bundled_dir``: the bundled SmolLM2-135M-Instruct, converted once per session
  (the real GGUF -> safetensors path), shared through a session home.
* ``tokenizer``: its real tokenizer and chat template.
* ``tiny_model_dir``: a random-weight model of the same (Llama) architecture,
  shrunk to 2 layers, with the real tokenizer: trains in seconds on CPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

HANG_S = 3600.0
"""How long a test waits for a training (or a command that loads a model) before calling it hung. A guard
against hanging forever, never a speed check: CI machines may be busy (a training beside the tests took
a 3-step bundled-model run past a 600 s deadline)."""

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("TUNEWIZ_HOME", str(h))
    yield h
    kill_trainers(h)


def kill_trainers(h: Path) -> None:
    """A failed test must not leave a trainer running (it would slow every later test)."""
    import signal

    from tunewiz.core.bookkeeping import runs

    for run_dir in runs._run_dirs(runs.runs_root(h)):
        if runs.trainer_alive(run_dir):
            pid = runs.read_record(run_dir).run.pid
            if pid:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture(scope="session")
def session_home(tmp_path_factory) -> Path:
    # Reuse a converted model between sessions on a developer machine; CI starts clean.
    cached = os.environ.get("TUNEWIZ_TEST_MODEL_HOME")
    return Path(cached) if cached else tmp_path_factory.mktemp("session-home")


@pytest.fixture(scope="session")
def bundled_dir(session_home) -> Path:
    from tunewiz.core.models import resolve as models

    return models.resolve(models.DEFAULT_MODEL, session_home).path


@pytest.fixture(scope="session")
def tokenizer(bundled_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(bundled_dir))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, bundled_dir, tokenizer) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(str(bundled_dir))
    cfg.update(
        dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
        )
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    out = tmp_path_factory.mktemp("tiny-smollm2")
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return out


def sample_tickets(path: Path, rows: int = 40) -> Path:
    """The first `rows` lines of the sample tickets, written to `path`."""
    lines = (SAMPLE / "support_tickets.jsonl").read_text().splitlines()[:rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def chat_row(user: str, answer: str, system: str | None = None) -> dict:
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user},
        {"role": "assistant", "content": answer},
    ]
    return {"messages": msgs}


def open_terminal(cmd: list[str], env: dict[str, str]):
    """`cmd` as a user's shell in an SSH session would run it: its own session and process group (which
    :func:`hang_up` then takes down), no input, output nowhere."""
    import subprocess

    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def hang_up(terminal, wait_s: float = 60) -> None:
    """What a dropped SSH connection does to the process group of `terminal` (started in its own
    session): SIGHUP, then SIGKILL for whatever ignored it; waits for the group's leader."""
    import signal
    import time

    os.killpg(terminal.pid, signal.SIGHUP)
    time.sleep(0.5)
    try:
        os.killpg(terminal.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    terminal.wait(timeout=wait_s)
