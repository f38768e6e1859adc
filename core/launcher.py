"""Start, stop and follow training processes that outlive the terminal that started them.

A trainer is ``python -m core.trainer RUN_DIR`` in a new session (so it has no
controlling terminal and a closed SSH connection sends it no SIGHUP), with
stdin from /dev/null and stdout/stderr appended to the run's train.log.
With ``training.processes > 1`` the same trainer runs data-parallel under
``accelerate launch`` (see :mod:`core.distributed`).
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

from tunewiz.core import runs
from tunewiz.core.events import follow as follow_events


def submit(cfg, home_dir: Path, hw=None) -> Path:
    """Check what can be checked cheaply (model id, data), create the run, start its trainer.

    The record starts with an [estimate] of peak memory and time (:func:`plan_estimate`), so even a
    run that dies while loading its model says what was expected. `hw`: the detected hardware, when
    the caller has it (the wizard does; detecting again would import torch in its process).
    Raises ModelError / DataError / RunError before anything is written.
    """
    from tunewiz.core import data, distributed, models

    if cfg.training.fsdp and hw is not None and not hw.gpus:
        raise runs.RunError(distributed.FSDP_NEEDS_GPUS)
    models.resolve(cfg.model.id, home_dir, prepare=False)
    loaded = data.load(cfg.data.path)
    if cfg.data.eval_path:
        data.load(cfg.data.eval_path)
    est = plan_estimate(cfg, home_dir, loaded.examples, hw)
    run_dir = runs.create_run(cfg, home_dir, extra={"estimate": est} if est else None)
    start(run_dir)
    return run_dir


def plan_estimate(cfg, home_dir: Path, examples, hw=None) -> dict[str, Any]:
    """The [estimate] section written when a run is created, before any model is loaded.

    The data's token counts are approximated from its characters (no tokenizer in this process);
    the trainer replaces them with the tokenized figures once it has the tokenizer. An estimate
    that cannot be made (a model outside the catalog, not downloaded yet) never blocks the run.
    """
    from tunewiz.core import memory

    try:
        if hw is None:
            from tunewiz.core import hardware

            hw = hardware.detect(home_dir)
        eval_fraction = 0.0 if cfg.data.eval_path else cfg.data.eval_fraction
        shape = memory.approx_data_shape(examples, cfg.data.max_seq_len, eval_fraction)
        est = memory.for_run(cfg, hw, shape)
    except Exception as exc:  # noqa: BLE001 - an estimator bug must not stop a run
        return {"source": "none", "note": f"no estimate: {type(exc).__name__}: {exc}"}
    if est is None:
        return {"source": "none", "note": f"no estimate: {cfg.model.id} is not in the catalog or on this machine"}
    est.source = f"at submit, before loading the model; data {shape.source}"
    return est.to_dict()


def start(run_dir: Path, resume: bool = False) -> int:
    """Spawn the detached trainer for `run_dir`; returns its pid."""
    run_dir = Path(run_dir).resolve()
    if resume:
        runs.update_record(run_dir, runs.mark_resumed)
    args = [str(run_dir)] + (["--resume"] if resume else [])
    training = runs.read_record(run_dir).get("training", {})
    processes = int(training.get("processes", 1) or 1)
    if processes > 1:
        from tunewiz.core import distributed

        cmd = distributed.launch_command(processes, args, fsdp=bool(training.get("fsdp", False)))
    else:
        cmd = [sys.executable, "-m", "tunewiz.core.trainer", *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
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
