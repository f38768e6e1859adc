"""Start, stop and follow training processes that outlive the terminal that started them.

A trainer is ``python -m tunewiz.core.training.trainer RUN_DIR`` in a new session (so it has no
controlling terminal and a closed SSH connection sends it no SIGHUP), with
stdin from /dev/null and stdout/stderr appended to the run's train.log.
With ``training.processes > 1`` the same trainer runs data-parallel under
``accelerate launch`` (see :mod:`core.distributed`).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewiz.core import detach
from tunewiz.core.bookkeeping import runs
from tunewiz.core.bookkeeping.events import follow as follow_events


@dataclass
class Checked:
    """What :func:`check` found: the plan at submit, the lint report (with token figures when the
    model's tokenizer was on this machine) and warnings that do not stop the run."""

    plan: Any
    report: Any
    tokenized: bool
    hw: Any
    warnings: list[str] = field(default_factory=list)
    busy: dict[str, str] = field(default_factory=dict)
    """Device -> the run on this machine training on it (:func:`busy_devices`), as the plan saw it."""
    examples: list = field(default_factory=list, repr=False)
    """The data's examples as read, to plan again when the devices taken changed since (:func:`create`)."""


def remote_code_warning(cfg) -> str | None:
    """The warning a run with trust_remote_code gets before anything of the model is loaded."""
    if not cfg.model.trust_remote_code:
        return None
    return (
        f"model {cfg.model.id} runs its own Python code (trust_remote_code = true); "
        "only use models whose authors you trust"
    )


def check(cfg, home_dir: Path, hw=None) -> Checked:
    """Everything that can be checked before a process starts, in the order that fails fastest: the
    runs directory, the tracker and the notify program (installed here?), the model (id, config.json,
    safetensors weights), the data as read (structure), the plan for this machine, then the data as the
    model sees it (the trainer's own lint: template, truncation, the held-out split) and the target
    modules against the model's layers.

    Raises RunError / ModelError / DataError / ConfigError, each saying what to do. The token checks
    run when the model's tokenizer is here without a download (the trainer runs them again anyway).
    """
    from tunewiz.core.config import ConfigError, notify_problem, tracking_problem
    from tunewiz.core.data import dataset as data
    from tunewiz.core.data import lint
    from tunewiz.core.models import resolve as models
    from tunewiz.core.planning import hardware, planner

    runs.ensure_writable(runs.runs_root(home_dir))
    missing = [x for x in (tracking_problem(cfg.training.report_to), notify_problem(cfg.notify.command)) if x]
    if missing:  # before anything slow: a tracker or program this machine lacks
        raise ConfigError(missing)
    models.resolve(cfg.model.id, home_dir, prepare=False)
    loaded = data.read_for(cfg.data)
    if loaded.errors:
        raise data.DataError([str(f) for f in loaded.errors])
    hw = hw if hw is not None else hardware.detect(home_dir)  # after the data: detecting imports torch
    busy = busy_devices(home_dir)
    plan = first_plan(cfg, home_dir, loaded.examples, hw, busy)
    if plan.problems:
        raise runs.RunError("this run cannot start on this machine: " + "; ".join(plan.problems))
    if plan.fits is False and not cfg.training.allow_over_memory:
        raise runs.RunError(
            f"this run does not fit this machine's memory ({plan.memory_line()}, "
            f"budget {planner.memory.gib(plan.budget_mb)}): "
            + planner.OOM_ADVICE.removeprefix("Out of memory. ")
            + " `tunewiz fit` shows the breakdown; --set allow_over_memory=true starts it anyway, at that risk"
        )
    tok, model_dir = lint.tokenizer_here(cfg.model.id, home_dir, cfg.model.trust_remote_code)
    report = lint.lint_run(cfg, tok, model_dir=model_dir, loaded=loaded)
    settings = [f.message for f in report.errors if f.file == lint.TARGETS_WHERE]
    if settings:
        raise ConfigError(settings, lint.TARGETS_WHERE)
    if report.errors:
        raise data.DataError([str(f) for f in report.errors])
    return Checked(plan, report, tok is not None, hw, sharing(plan, busy), busy, loaded.examples)


def device_name(place: str) -> str:
    """'cuda:1' -> 'GPU 1', 'cpu' -> 'CPU', 'mps' -> 'Apple GPU (MPS)'.

    >>> device_name("cuda:0"), device_name("cpu")
    ('GPU 0', 'CPU')
    """
    if place.startswith("cuda"):
        return f"GPU {place.partition(':')[2] or 0}"
    return {"cpu": "CPU", "mps": "Apple GPU (MPS)"}.get(place, place)


def devices(rec: runs.Record) -> set[str]:
    """The devices a run's plan places it on ('cuda:0', 'cpu', ...); a record without a plan: the CPU."""
    return set(rec.plan.placement or ["cpu"])


def busy_devices(home_dir: Path) -> dict[str, str]:
    """Device -> the run using it: every run on this machine that is starting or training, or whose
    trainer is still alive (a finished run's process may still hold its GPU memory for a moment)."""
    out: dict[str, str] = {}
    for r in runs.list_runs(home_dir):  # observed: a dead trainer's run reads as crashed, not busy
        if r.status in (runs.DAMAGED, runs.WAITING) or not runs.here(r.record):
            continue
        if r.status in runs.ACTIVE or runs.trainer_alive(r.path):
            for d in devices(r.record):
                out.setdefault(d, r.id)
    return out


def sharing(plan, busy: dict[str, str]) -> list[str]:
    """A sentence for each device this plan uses that another run on this machine trains on (`busy`)."""
    return [
        f"another run ({busy[d]}) is training on this {device_name(d)}: both will run at about half speed"
        for d in sorted(set(plan.placement) & set(busy))
    ]


def submit(cfg, home_dir: Path, hw=None, warn: Callable[[str], None] | None = None) -> Path:
    """Check everything that can be checked before a process starts (:func:`check`), create the run,
    start its trainer.

    The record starts with the request, the [plan] for this machine and its [estimate] of peak memory
    and time (:func:`first_plan`), so even a run that dies while loading its model says what was
    expected. `hw`: the detected hardware, when the caller has it (the wizard does). `warn` is told
    each warning (another run on the same device) before the trainer starts.
    Raises ModelError / DataError / ConfigError / RunError before anything is written.
    """
    checked = check(cfg, home_dir, hw)
    run_dir, warnings = create(cfg, home_dir, checked)
    for line in warnings:
        if warn is not None:
            warn(line)
    start(run_dir)
    return run_dir


SUBMIT_LOCK = ".submit.lock"
"""In the runs directory: held from reading which devices are taken to the new run's record existing."""


def create(cfg, home_dir: Path, checked: Checked) -> tuple[Path, list[str]]:
    """The checked run's record, and the warnings to say (another run on the same device). The devices
    other runs train on are read again under a lock that is held until the record exists, so two submits
    at the same moment see each other: the second is planned onto a free GPU, or told it shares."""
    root = runs.runs_root(home_dir)
    runs.ensure_writable(root)
    with runs.locked(root / SUBMIT_LOCK):
        busy = busy_devices(home_dir)
        plan = checked.plan
        if busy != checked.busy:  # a run started since the check: plan around it
            plan = first_plan(cfg, home_dir, checked.examples, checked.hw, busy)
            if plan.problems:
                raise runs.RunError("this run cannot start on this machine: " + "; ".join(plan.problems))
        run_dir = runs.create_run(cfg, home_dir, extra=plan_sections(cfg, plan))
    return run_dir, sharing(plan, busy)


def plan_sections(cfg, plan) -> dict[str, dict[str, Any]]:
    """The [plan] and [estimate] a new record starts with (the estimate says why when there is none)."""
    estimate = (
        plan.estimate.to_dict()
        if plan.estimate is not None
        else {"source": "none", "note": f"no estimate: {cfg.model.id} is not in the catalog or on this machine"}
    )
    return {"plan": plan.to_record(), "estimate": estimate}


def first_plan(cfg, home_dir: Path, examples, hw=None, busy: Collection[str] = ()):
    """The plan written when a run is created, before any model is loaded (`busy`: the devices other
    runs here train on; a one-GPU run is placed on another GPU when there is one).

    The data's token counts are approximated from its characters (no tokenizer in this process);
    the trainer plans again with the tokenized figures once it has the tokenizer.
    """
    from tunewiz.core.planning import hardware, memory, planner

    hw = hw if hw is not None else hardware.detect(home_dir)
    eval_fraction = 0.0 if cfg.data.eval_path else cfg.data.eval_fraction
    shape = memory.approx_data_shape(examples, cfg.data.max_seq_len, eval_fraction)
    plan = planner.plan(cfg, hw, shape=shape, busy=busy)
    if plan.estimate is not None:
        plan.estimate.source = f"at submit, before loading the model; data {shape.source}"
    return plan


def start(run_dir: Path, resume: bool = False) -> int:
    """Spawn the detached trainer for `run_dir`; returns its pid. Raises RunError, saying what to do, when
    a resumed run's disk has no room for its next checkpoint (nothing is written then), or when the record
    cannot be written or the trainer cannot start: the record then says why (status failed), as far as
    the disk lets it, never a run left queued with nothing starting it."""
    run_dir = Path(run_dir).resolve()
    before = run_dir / BEFORE_RESUME
    if resume:
        room_to_resume(run_dir)
        keep_record(run_dir, before)
        try:
            runs.update_record(run_dir, runs.mark_resumed)
        except OSError as exc:  # written atomically: the record is as it was
            before.unlink(missing_ok=True)
            raise runs.RunError(f"could not resume {run_dir.name}: {not_started_reason(run_dir, exc)}") from None
    args = [str(run_dir)] + (["--resume"] if resume else [])
    rec = runs.read_record(run_dir)
    # How many processes and how they share the model: the plan's decision (a record from before
    # plans existed has only the request).
    plan, asked = rec.plan, rec.training
    processes = plan.processes or (asked.get("processes") if isinstance(asked.get("processes"), int) else 1) or 1
    fsdp = plan.parallelism == "fsdp" if plan.to_dict() else asked.get("fsdp") is True
    if processes > 1:
        from tunewiz.core.training import distributed

        cmd = distributed.launch_command(processes, args, fsdp=fsdp)
    else:
        cmd = [sys.executable, "-m", "tunewiz.core.training.trainer", *args]
    env = trainer_env(os.environ, (plan.placement or ["cpu"]) if processes == 1 else None)
    try:
        proc = detach.spawn(cmd, run_dir / runs.LOG, run_dir, env)
    except OSError as exc:
        reason = f"the trainer could not start: {not_started_reason(run_dir, exc)}"
        try:
            runs.set_status(run_dir, "failed", failure_reason=reason)
        except OSError:  # the disk is full: put back the record as it was before the resume (a rename)
            try:
                if not resume:
                    raise
                os.replace(before, run_dir / runs.RECORD)
                reason += f" ({runs.RECORD} is as it was before the resume: it could not be updated)"
            except OSError:  # a new run: the next look records it crashed
                reason += f" ({runs.RECORD} could not be updated either)"
        raise runs.RunError(f"{run_dir.name}: {reason}") from None
    finally:
        if resume:
            before.unlink(missing_ok=True)
    try:
        runs.update_record(run_dir, lambda rec: rec.run.update({"launcher_pid": proc.pid}))
    except OSError:
        pass  # only a convenience: the trainer records its own pid
    return proc.pid


BEFORE_RESUME = ".run.toml.before-resume"
"""A hard link to the record as it was before `resume` marked it queued (no space needed): put back if
the trainer cannot start and the disk is too full to record why, so the run is never left queued."""


def keep_record(run_dir: Path, link: Path) -> None:
    try:
        link.unlink(missing_ok=True)
        os.link(run_dir / runs.RECORD, link)
    except OSError:
        pass  # a file system without hard links: only the put-back is lost


RESUME_FLOOR = 16 << 20
"""Free bytes a resumed run needs at least, checkpoint or not: its record, its log and the trainer's reserve."""


def room_to_resume(run_dir: Path) -> None:
    """Raise RunError when the disk of `run_dir` has no room for the run's next checkpoint (the size of
    its newest whole one and a margin) or for RESUME_FLOOR: resuming on a still-full disk would fail at
    its first save, or before it could record why. Only reads."""
    from tunewiz.core.bookkeeping import checkpoints

    newest, _ = checkpoints.newest_complete(run_dir / runs.CHECKPOINTS)
    need = max(int(checkpoints.size_of(newest) * checkpoints.MARGIN) if newest else 0, RESUME_FLOOR)
    try:
        free = checkpoints.free_bytes(run_dir)
    except OSError:
        return  # cannot tell: let the trainer find out
    if free < need:
        what = f"its next checkpoint (like {newest.name}) needs about" if newest else "resuming needs at least"
        raise runs.RunError(
            f"the disk of {run_dir} is still full: {checkpoints.mib(free)} free, and {what} "
            f"{checkpoints.mib(need)}. Free some space (other runs' checkpoints/ folders are often the largest), "
            f"then `tunewiz resume {run_dir.name}` again; nothing was changed"
        )


def not_started_reason(run_dir: Path, exc: OSError) -> str:
    """Why a trainer could not be started or its record written, and what to do."""
    from tunewiz.core.bookkeeping import checkpoints

    if checkpoints.is_disk_full(exc, run_dir):
        return (
            f"the disk is full ({exc.strerror or exc}). Free some space, then `tunewiz resume {run_dir.name}` "
            "continues from the newest complete checkpoint"
        )
    return f"{exc.strerror or exc}"


PLACEMENT_ENV = "TUNEWIZ_PLACEMENT"
"""The GPU a one-process trainer was given, as this machine numbers it ('cuda:1'): the trainer itself
sees only that GPU, as cuda:0, and records this name."""


def trainer_env(environ: Mapping[str, str], placement: list[str] | None) -> dict[str, str]:
    """The environment a trainer starts with. One process (`placement`: its plan's, e.g. ['cuda:1'])
    sees only the GPU its plan placed it on: with several visible, transformers would spread one
    "per-device" batch over all of them (DataParallel) and the plan would not hold. GPUs are numbered
    in PCI order, as NVML (hardware detection) numbers them, unless CUDA_DEVICE_ORDER says otherwise.

    >>> e = trainer_env({"CUDA_VISIBLE_DEVICES": "2,3"}, ["cuda:1"])
    >>> e["CUDA_VISIBLE_DEVICES"], e[PLACEMENT_ENV], e["CUDA_DEVICE_ORDER"]
    ('3', 'cuda:1', 'PCI_BUS_ID')
    >>> trainer_env({}, ["cuda:1"])["CUDA_VISIBLE_DEVICES"], trainer_env({}, ["cpu"])["CUDA_VISIBLE_DEVICES"]
    ('1', '0')
    """
    env = dict(environ, PYTHONUNBUFFERED="1")
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    env.pop(PLACEMENT_ENV, None)
    if placement is None:
        return env
    place = placement[0]
    index = int(place.partition(":")[2] or 0) if place.startswith("cuda") else 0
    if "CUDA_VISIBLE_DEVICES" in env:
        visible = [x.strip() for x in env["CUDA_VISIBLE_DEVICES"].split(",") if x.strip()]
        if index >= len(visible):  # planned where more GPUs were visible (another shell's CUDA_VISIBLE_DEVICES)
            index = 0
        env["CUDA_VISIBLE_DEVICES"] = visible[index] if visible else ""
    else:
        env["CUDA_VISIBLE_DEVICES"] = str(index)
    if place.startswith("cuda"):
        env[PLACEMENT_ENV] = f"cuda:{index}"
    return env


def stop(run_dir: Path, now: bool = False) -> bool:
    """Ask the trainer to stop (SIGTERM: checkpoint, adapter, status stopped). False if not running."""
    run = runs.observe(run_dir).run
    pid = run.pid or run.launcher_pid
    if run.status not in runs.ACTIVE or not pid or not runs.trainer_alive(run_dir):
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
    """True once the record is final, or its trainer is gone (read only: see runs.observe)."""
    try:
        return runs.observe(run_dir).run.status in runs.FINAL
    except runs.RunError:
        return False


def follow(run_dir: Path, poll: float = 0.5) -> Iterator[dict[str, Any]]:
    """Every event of the run so far, then new ones until it finishes."""
    return follow_events(run_dir, lambda: is_finished(run_dir), poll=poll)


def wait(run_dir: Path, timeout: float | None = None, poll: float = 0.5) -> runs.Record:
    """Block until the run's record is final; returns the record."""
    deadline = None if timeout is None else time.time() + timeout
    while not is_finished(run_dir):
        if deadline is not None and time.time() > deadline:
            raise TimeoutError(f"run {run_dir.name} still running after {timeout}s")
        time.sleep(poll)
    return runs.read_record(run_dir)
