"""Start, stop and follow training processes that outlive the terminal that started them.

A trainer is ``python -m tunewiz.core.trainer RUN_DIR`` in a new session (so it has no
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
    """Check what can be checked cheaply (model id, data, the plan), create the run, start its trainer.

    The record starts with the request, the [plan] for this machine and its [estimate] of peak memory
    and time (:func:`first_plan`), so even a run that dies while loading its model says what was
    expected. `hw`: the detected hardware, when the caller has it (the wizard does).
    Raises ModelError / DataError / RunError before anything is written.
    """
    from tunewiz.core import data, models

    models.resolve(cfg.model.id, home_dir, prepare=False)
    loaded = data.load(cfg.data.path)
    if cfg.data.eval_path:
        data.load(cfg.data.eval_path)
    plan = first_plan(cfg, home_dir, loaded.examples, hw)
    if plan.problems:
        raise runs.RunError("this run cannot start on this machine: " + "; ".join(plan.problems))
    extra = {"plan": plan.to_record()}
    if plan.estimate is not None:
        extra["estimate"] = plan.estimate.to_dict()
    else:
        extra["estimate"] = {
            "source": "none",
            "note": f"no estimate: {cfg.model.id} is not in the catalog or on this machine",
        }
    run_dir = runs.create_run(cfg, home_dir, extra=extra)
    start(run_dir)
    return run_dir


def first_plan(cfg, home_dir: Path, examples, hw=None):
    """The plan written when a run is created, before any model is loaded.

    The data's token counts are approximated from its characters (no tokenizer in this process);
    the trainer plans again with the tokenized figures once it has the tokenizer.
    """
    from tunewiz.core import hardware, memory, planner

    hw = hw if hw is not None else hardware.detect(home_dir)
    eval_fraction = 0.0 if cfg.data.eval_path else cfg.data.eval_fraction
    shape = memory.approx_data_shape(examples, cfg.data.max_seq_len, eval_fraction)
    plan = planner.plan(cfg, hw, shape=shape)
    if plan.estimate is not None:
        plan.estimate.source = f"at submit, before loading the model; data {shape.source}"
    return plan


def start(run_dir: Path, resume: bool = False) -> int:
    """Spawn the detached trainer for `run_dir`; returns its pid."""
    run_dir = Path(run_dir).resolve()
    if resume:
        runs.update_record(run_dir, runs.mark_resumed)
    args = [str(run_dir)] + (["--resume"] if resume else [])
    doc = runs.read_record(run_dir)
    # How many processes and how they share the model: the plan's decision (a record from before
    # plans existed has only the request).
    plan = doc.get("plan") or {}
    processes = int(plan.get("processes") or doc.get("training", {}).get("processes", 1) or 1)
    fsdp = plan.get("parallelism") == "fsdp" if plan else bool(doc.get("training", {}).get("fsdp", False))
    if processes > 1:
        from tunewiz.core import distributed

        cmd = distributed.launch_command(processes, args, fsdp=fsdp)
    else:
        cmd = [sys.executable, "-m", "tunewiz.core.trainer", *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if processes == 1:
        # One process sees only the GPU its plan placed it on: with several visible, transformers would
        # spread one "per-device" batch over all of them (DataParallel) and the plan would not hold.
        visible = [x for x in env.get("CUDA_VISIBLE_DEVICES", "0").split(",") if x.strip()]
        env["CUDA_VISIBLE_DEVICES"] = visible[0] if visible else ""
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
