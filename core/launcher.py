"""Start, stop and follow training processes that outlive the terminal that started them.

A trainer is ``python -m core.trainer RUN_DIR`` in a new session (so it has no
controlling terminal and a closed SSH connection sends it no SIGHUP), with
stdin from /dev/null and stdout/stderr appended to the run's train.log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core import runs
from core.events import follow as follow_events


def submit(cfg, home_dir: Path) -> Path:
    """Check what can be checked cheaply (model id, data), create the run, start its trainer.

    Raises ModelError / DataError / RunError before anything is written.
    """
    from core import data, models

    models.resolve(cfg.model.id, home_dir, prepare=False)
    data.load(cfg.data.path)
    if cfg.data.eval_path:
        data.load(cfg.data.eval_path)
    run_dir = runs.create_run(cfg, home_dir)
    start(run_dir)
    return run_dir


def start(run_dir: Path, resume: bool = False) -> int:
    """Spawn the detached trainer for `run_dir`; returns its pid."""
    run_dir = Path(run_dir).resolve()
    if resume:
        runs.update_record(run_dir, runs.mark_resumed)
    cmd = [sys.executable, "-m", "core.trainer", str(run_dir)]
    if resume:
        cmd.append("--resume")
    env = dict(os.environ)
    # The trainer imports `core` from wherever this process did, installed or not.
    src = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = src + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else src
    env["PYTHONUNBUFFERED"] = "1"
    with open(run_dir / runs.LOG, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            cwd=str(run_dir),
            env=env,
        )
    runs.update_record(run_dir, {"run": {"launcher_pid": proc.pid}})
    return proc.pid


def stop(run_dir: Path, now: bool = False) -> bool:
    """Ask the trainer to stop (SIGTERM: checkpoint, adapter, status stopped). False if not running."""
    doc = runs.refresh(run_dir)
    run = doc.get("run", {})
    pid = run.get("pid") or run.get("launcher_pid")
    if run.get("status") not in runs.ACTIVE or not pid or not runs.trainer_alive(run_dir):
        return False
    try:
        os.kill(int(pid), signal.SIGTERM)
        if now:
            time.sleep(0.2)
            os.kill(int(pid), signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


def is_finished(run_dir: Path) -> bool:
    """True once the record is final (after marking a dead trainer crashed)."""
    try:
        return runs.refresh(run_dir).get("run", {}).get("status") in runs.FINAL
    except runs.RunError:
        return False


def follow(run_dir: Path, poll: float = 0.5) -> Iterator[dict[str, Any]]:
    """Every event of the run so far, then new ones until it finishes."""
    return follow_events(run_dir, lambda: is_finished(run_dir), poll=poll)


def wait(run_dir: Path, timeout: float | None = None, poll: float = 0.5) -> dict:
    """Block until the run's record is final; returns the record."""
    deadline = None if timeout is None else time.time() + timeout
    while not is_finished(run_dir):
        if deadline is not None and time.time() > deadline:
            raise TimeoutError(f"run {run_dir.name} still running after {timeout}s")
        time.sleep(poll)
    return runs.read_record(run_dir)
