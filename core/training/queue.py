"""The run queue: runs that wait their turn on this machine and start one after another, with no
terminal attached.

A queued run is a run directory like any other whose record says ``status = "waiting"`` and
``queue_order = N`` under [run] (the smallest starts first). :func:`submit` runs every submit-time
check at once (launcher.check: a bad run is refused now, not at 3 a.m.), writes the record under the
queue lock and makes sure a queue runner is alive.

The runner (``python -m tunewiz.core.training.queue HOME``) is detached like a trainer: its own session, stdin
from /dev/null, output appended to ``runs/queue.log``, so a dropped SSH connection does not reach it.
Exactly one lives per runs directory: it holds ``runs/.queue-runner.lock``. Every few seconds it starts
the first waiting run whose devices (the [plan] placement: GPU 0, the CPU, ...) no run on this machine
is using, through launcher.start; a one-GPU run whose GPU is in use starts on another GPU that is
free (:func:`schedule`). A run that waits keeps the runs behind it off its devices, so each device
takes its runs in queue order, one at a time (two runs sharing a GPU is how runs run out of memory
at 3 a.m.). It exits when nothing waits. What it knows is in the records, so a runner that is
killed loses nothing: the next `tunewiz train --queue` or `tunewiz queue` starts another.

Cancelling a waiting run gives it the final status ``cancelled`` with a reason; its directory stays.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tunewiz.core import detach
from tunewiz.core.bookkeeping import runs
from tunewiz.core.training import launcher

QUEUE_LOCK = ".queue.lock"
"""Held while the queue is read and changed (submit, move, cancel, the runner starting a run)."""
RUNNER_LOCK = ".queue-runner.lock"
"""Held by the queue runner for its whole life; it writes 'pid start_time' into it."""
LOG = "queue.log"
POLL_S = 2.0


class QueueError(runs.RunError):
    """A queue command that cannot be done (the run is not waiting, a place out of range), in words."""


@contextlib.contextmanager
def queue_lock(home_dir: Path) -> Iterator[None]:
    root = runs.runs_root(home_dir)
    runs.ensure_writable(root)
    with runs.locked(root / QUEUE_LOCK):
        yield


def waiting(home_dir: Path, this_host: bool = True) -> list[tuple[Path, runs.Record]]:
    """The waiting runs in queue order, with their records (damaged records are skipped)."""
    out = []
    for run_dir in runs._run_dirs(runs.runs_root(home_dir)):
        rec, _ = runs.record_problem(run_dir / runs.RECORD)
        if rec is None or rec.run.status != runs.WAITING:
            continue
        if this_host and not runs.here(rec):
            continue
        out.append((run_dir, rec))
    out.sort(key=lambda item: runs.queue_key(item[1]))
    return out


def place_of(home_dir: Path, run_dir: Path) -> int:
    """A waiting run's place in the queue (1: next to start), or 0 when it is not waiting."""
    for n, (d, _) in enumerate(waiting(home_dir, this_host=False), 1):
        if d.name == Path(run_dir).name:
            return n
    return 0


# -- submitting ------------------------------------------------------------------------------------


@dataclass
class Queued:
    """A run just queued: its directory, its place, and the runs it waits for (none: it starts now)."""

    run_dir: Path
    place: int
    waits_for: list[str]

    def after(self) -> str:
        """'20260101-...-balanced', '... (+2 more)', or '' when it starts now."""
        more = f" (+{len(self.waits_for) - 1} more)" if len(self.waits_for) > 1 else ""
        return f"{self.waits_for[0]}{more}" if self.waits_for else ""


def submit(cfg, home_dir: Path, hw=None, warn: Callable[[str], None] | None = None, extra=None) -> Queued:
    """Check `cfg` as a start would (launcher.check), then queue it; see :func:`submit_many`."""
    return submit_many([cfg], home_dir, hw=hw, warn=warn, extra=extra)[0]


def submit_many(
    cfgs: list, home_dir: Path, hw=None, warn: Callable[[str], None] | None = None, extra=None
) -> list[Queued]:
    """Check every config first (nothing is queued when one is refused), then queue them all, in this
    order, behind the runs already waiting, and make sure a runner is alive to start them.

    `extra`: {section: {key: value}} written into each record too (a sweep's id under [run]).
    Raises what launcher.check raises (ModelError / DataError / ConfigError / RunError), each saying
    what to do, before anything is written.
    """
    checked = []
    for cfg in cfgs:
        remote = launcher.remote_code_warning(cfg)
        if remote and warn is not None:
            warn(remote)
        c = launcher.check(cfg.validate(), home_dir, hw)
        hw = c.hw  # detected once
        checked.append((cfg, c))
    made = []
    with queue_lock(home_dir):
        last = last_order(home_dir)
        for n, (cfg, c) in enumerate(checked, 1):
            waiting_run = {
                "status": runs.WAITING.value,
                "queue_order": float(int(last) + n),
                "queued_at": runs.now_iso(),
            }
            tables = [launcher.plan_sections(cfg, c.plan), extra or {}, {"run": waiting_run}]
            made.append(runs.create_run(cfg, home_dir, extra=tables))
        busy = launcher.busy_devices(home_dir)  # the places as queued, before a runner starts the first
        ahead = waiting(home_dir, this_host=False)
    ensure_runner(home_dir)
    turns = schedule(ahead, busy, list(getattr(hw, "gpus", None) or []))
    out = []
    for run_dir in made:
        place = next((n for n, t in enumerate(turns, 1) if t.run_dir.name == run_dir.name), 0)
        if not place or turns[place - 1].starts:
            out.append(Queued(run_dir, place, []))
            continue
        need = turns[place - 1].need
        users = sorted({busy[d] for d in need if d in busy})
        before = [t.run_dir.name for t in turns[: place - 1] if t.need & need]
        out.append(Queued(run_dir, place, users + [b for b in before if b not in users]))
    return out


@dataclass
class Turn:
    """What the queue does with a waiting run now: start it (on `gpu` when it moves to a free GPU) or
    keep it waiting; `need` are the devices it takes, or waits for (and keeps the runs behind it off)."""

    run_dir: Path
    need: set[str]
    gpu: str | None
    starts: bool


def schedule(queue: list[tuple[Path, runs.Record]], busy: dict[str, str], gpus: list) -> list[Turn]:
    """The waiting runs in queue order, each with its turn: a run starts when no run uses its devices
    and no run ahead of it waits for them; a one-GPU run takes any free GPU of `gpus` (this machine's),
    and when every GPU is in use it waits for the first to be free, with the runs behind it."""
    claimed = set(busy)
    out = []
    for run_dir, rec in queue:
        need, gpu = launcher.devices(rec), None
        if one_gpu(rec):
            gpu = free_gpu(need, gpus, claimed)
            need = {gpu} if gpu else need | {f"cuda:{g.index}" for g in gpus}
        out.append(Turn(run_dir, need, gpu, not need & claimed))
        claimed |= need
    return out


def last_order(home_dir: Path) -> float:
    """The highest queue_order any run was given (0 when none): a new run goes after every one."""
    out = 0.0
    for run_dir in runs._run_dirs(runs.runs_root(home_dir)):
        rec, _ = runs.record_problem(run_dir / runs.RECORD)
        if rec is not None and rec.run.queue_order is not None:
            out = max(out, rec.run.queue_order)
    return out


# -- changing the queue ----------------------------------------------------------------------------


def _require_waiting(rec: runs.Record, run_id: str) -> None:
    status = rec.run.status
    if status != runs.WAITING:
        what = {
            "queued": "starting",
            "running": "running (`tunewiz stop` stops it)",
        }.get(status, status)
        raise QueueError(f"run {run_id} is not waiting in the queue: it is {what}")


def move(home_dir: Path, run_dir: Path, place: int) -> int:
    """Put a waiting run at `place` (1: next to start; past the end: last); returns its place."""
    run_dir = Path(run_dir)
    with queue_lock(home_dir):
        _require_waiting(runs.read_record(run_dir), run_dir.name)
        if place < 1:
            raise QueueError(f"place {place}: the queue counts from 1 (the next to start)")
        listed = waiting(home_dir, this_host=False)
        first = runs.queue_key(listed[0][1])[0]  # the orders stay above those of the runs already started
        queue = [d for d, _ in listed]
        mine = queue.pop([d.name for d in queue].index(run_dir.name))
        place = min(place, len(queue) + 1)
        queue.insert(place - 1, mine)
        orders = {d.name: runs.queue_key(rec)[0] for d, rec in listed}
        for n, d in enumerate(queue):
            if orders[d.name] != first + n:
                runs.update_record(d, lambda rec, order=first + n: rec.run.update({"queue_order": order}))
    return place


def cancel(home_dir: Path, run_dir: Path, why: str = "") -> runs.Record:
    """Take a waiting run out of the queue: status cancelled, with a reason; its directory stays."""
    run_dir = Path(run_dir)
    reason = why or (
        f"cancelled while waiting in the queue; nothing was trained. `tunewiz train --config "
        f"{run_dir / runs.RECORD} --queue` queues it again"
    )
    with queue_lock(home_dir):
        _require_waiting(runs.read_record(run_dir), run_dir.name)
        return runs.set_status(run_dir, "cancelled", failure_reason=reason, cancelled_at=runs.now_iso())


# -- the runner ------------------------------------------------------------------------------------


def runner_pid(home_dir: Path) -> int | None:
    """The pid of the live queue runner, or None when none is alive."""
    path = runs.runs_root(home_dir) / RUNNER_LOCK
    if not path.exists():
        return None
    with runs.locked(path, blocking=False) as got:
        if got:
            return None
    try:
        return int(path.read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return -1  # alive, but it has not written its pid yet


def ensure_runner(home_dir: Path) -> int | None:
    """Start a queue runner unless one is alive; returns the new runner's pid, or None."""
    root = runs.runs_root(home_dir)
    runs.ensure_writable(root)
    with runs.locked(root / RUNNER_LOCK, blocking=False) as got:
        if not got:
            return None
    # Two callers may both start one: the second runner finds the lock held and exits at once.
    cmd = [sys.executable, "-m", "tunewiz.core.training.queue", str(home_dir)]
    proc = detach.spawn(cmd, root / LOG, root, dict(os.environ, PYTHONUNBUFFERED="1"))
    return proc.pid


def say(text: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", flush=True)


def start_ready(home_dir: Path) -> list[Path]:
    """Start every waiting run of this machine whose devices are free, in queue order; a run that must
    wait keeps the runs behind it off its devices. Returns the runs started."""
    started = []
    # The submit lock too: a `tunewiz train` at this moment sees the runs started here as busy (it checks
    # the busy devices and creates its run under that lock), and the runs started here see its run.
    with queue_lock(home_dir), runs.locked(runs.runs_root(home_dir) / launcher.SUBMIT_LOCK):
        queue = waiting(home_dir)
        if not queue:
            return []
        busy = launcher.busy_devices(home_dir)
        gpus = machine_gpus() if any(one_gpu(rec) for _, rec in queue) else []
        for turn in schedule(queue, busy, gpus):
            if turn.starts and start_one(turn.run_dir, turn.gpu, busy):
                started.append(turn.run_dir)
    return started


def one_gpu(rec: runs.Record) -> bool:
    """Whether a run trains in one process on one GPU: such a run may start on any GPU of the machine."""
    placement = rec.plan.placement or []
    return len(placement) == 1 and placement[0].startswith("cuda") and (rec.plan.processes or 1) == 1


def machine_gpus() -> list:
    """The GPUs of this machine as NVML sees them (no CUDA context); none without NVML: then a queued
    run keeps the GPU it was planned on."""
    from tunewiz.core.planning import hardware

    return hardware.nvml_gpus() or []


def free_gpu(planned: set[str], gpus: list, claimed: set[str]) -> str | None:
    """Where a one-GPU run starts now: the GPU it was planned on when no run uses it, else the free GPU
    with the most free memory; None when every GPU is in use (or claimed by a run ahead of it).

    >>> from tunewiz.core.planning.hardware import GPU
    >>> two = [GPU(0, "A", 80, 70, "9.0", True), GPU(1, "A", 80, 79, "9.0", True)]
    >>> free_gpu({"cuda:0"}, two, set()), free_gpu({"cuda:0"}, two, {"cuda:0"})
    ('cuda:0', 'cuda:1')
    >>> free_gpu({"cuda:0"}, two, {"cuda:0", "cuda:1"}) is None
    True
    """
    if not gpus:
        return None if planned & claimed else next(iter(planned))
    free = [g for g in gpus if f"cuda:{g.index}" not in claimed]
    mine = [g for g in free if f"cuda:{g.index}" in planned]
    if mine or not free:
        return f"cuda:{mine[0].index}" if mine else None
    from types import SimpleNamespace

    from tunewiz.core.planning import planner

    return f"cuda:{planner.choose_gpu(SimpleNamespace(gpus=gpus), claimed).value}"  # the planner's choice


def start_one(run_dir: Path, gpu: str | None = None, busy: dict[str, str] | None = None) -> bool:
    """A waiting run becomes queued (its trainer starting) and its trainer starts, on `gpu` when given
    (a one-GPU run whose planned GPU another run uses: `busy` says which). False when it is no longer
    waiting (cancelled, deleted); a run whose trainer cannot be started is failed with the reason, and
    the queue goes on."""

    def begin(rec: runs.Record) -> None:
        _require_waiting(rec, run_dir.name)
        rec.run.update({"status": "queued", "queued_unix": time.time(), "queue_started": runs.now_iso()})
        plan = rec.plan
        was = (plan.placement or ["?"])[0]
        if gpu and gpu != was:
            plan.placement = [gpu]
            why = f"; {launcher.device_name(was)} trains {busy[was]}" if busy and was in busy else ""
            plan.reasons = {**(plan.reasons or {}), "placement": f"{gpu}: the queue started it on a free GPU{why}"}

    try:
        doc = runs.update_record(run_dir, begin)
    except (runs.RunError, OSError) as exc:
        say(f"{run_dir.name}: not started: {exc}")
        return False
    try:
        pid = launcher.start(run_dir)
    except Exception as exc:  # noqa: BLE001 - the record says why; the next run still starts
        reason = f"the queue could not start its trainer: {type(exc).__name__}: {exc}"
        with contextlib.suppress(runs.RunError, OSError):
            runs.set_status(run_dir, "failed", failure_reason=reason)
        say(f"{run_dir.name}: {reason}")
        return True
    where = ", ".join(launcher.device_name(d) for d in sorted(launcher.devices(doc)))
    say(f"started {run_dir.name} on {where} (trainer pid {pid})")
    return True


def reap() -> None:
    """Collect the trainers this runner started that have ended (no zombies while it waits)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run(home_dir: Path, poll: float = POLL_S) -> int:
    """The runner's life: start what can start, wait, again; exit when nothing of this machine waits.

    It gives up its lock before the last look under the queue lock, so a run queued after that look
    finds no runner and starts one (:func:`ensure_runner`), and a run queued before it is seen.
    """
    root = runs.runs_root(home_dir)
    while True:
        with runs.locked(root / RUNNER_LOCK, blocking=False) as got:
            if not got:
                return 0  # another runner is alive
            (root / RUNNER_LOCK).write_text(f"{os.getpid()} {time.time()}\n")
            say(f"queue runner {os.getpid()} for {root}")
            last_error = ""
            while True:
                try:
                    runs.reconcile_all(home_dir)  # this machine's runs whose trainer died: recorded, told
                    if not waiting(home_dir):
                        break
                    start_ready(home_dir)
                except Exception as exc:  # noqa: BLE001 - a full disk, a damaged record: say it, try again
                    error = f"{type(exc).__name__}: {exc}"
                    if error != last_error:
                        say(f"could not look at the queue ({error}); trying again every {poll:g}s")
                    last_error = error
                reap()
                time.sleep(poll)
        with queue_lock(home_dir):
            if not waiting(home_dir):
                say(f"queue runner {os.getpid()}: nothing waits; exiting")
                return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m tunewiz.core.training.queue", description=__doc__.split("\n")[0])
    p.add_argument("home", type=Path, help="the tunewiz home whose runs/ holds the queue")
    p.add_argument("--poll", type=float, default=POLL_S, help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    return run(ns.home.resolve(), ns.poll)


if __name__ == "__main__":
    sys.exit(main())
