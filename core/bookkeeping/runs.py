"""Run directories and their records (run.toml): create, update atomically, list, find.

Layout of ``$TUNEWIZ_HOME/runs/<run-id>/``: run.toml (the record), events.jsonl,
train.log, checkpoints/, adapter/, eval/. The trainer holds an exclusive lock on
``trainer.lock`` for as long as it lives, so "is the trainer alive?" is answered
by trying that lock, which survives pid reuse and needs no clock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tunewiz.core.bookkeeping import checkpoints, record
from tunewiz.core.bookkeeping.record import id_time
from tunewiz.core.config import RunConfig
from tunewiz.core.errors import TunewizError
from tunewiz.core.toml import tomllib, write_toml_atomic

RECORD = "run.toml"
TRAINER_LOCK = "trainer.lock"
RECORD_LOCK = ".record.lock"
LOG = "train.log"
EVENTS = "events.jsonl"
ADAPTER = "adapter"
CHECKPOINTS = "checkpoints"
EVAL = "eval"
# The statuses and their sets live with the record's type (core.bookkeeping.record.Status).
ACTIVE, FINAL, RESUMABLE = record.ACTIVE, record.FINAL, record.RESUMABLE
WAITING, DAMAGED = record.Status.WAITING, record.Status.DAMAGED
COLOURS = {s.value: s.colour for s in record.Status if s.colour}
"""A status's colour wherever one is shown (history, train screen, sweep)."""
OUT_OF_MEMORY, DISK_FULL = record.FailureKind.OUT_OF_MEMORY, record.FailureKind.DISK_FULL
RUN_MARKERS = (RECORD, EVENTS, LOG, ADAPTER, CHECKPOINTS, TRAINER_LOCK)
"""A directory under runs/ holding any of these is a run, whatever state its record is in."""
DAMAGED_COPY = "run.toml.damaged-"
Record = record.Record


class RunError(TunewizError, RuntimeError):
    """A problem with the runs directory or a run, worded for the user."""


def home(override: str | Path | None = None) -> Path:
    """Where tunewiz keeps runs and converted models: --home, $TUNEWIZ_HOME, or XDG data dir."""
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get("TUNEWIZ_HOME")
    if env:
        return Path(env).expanduser().resolve()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "tunewiz"


def cache_dir() -> Path:
    """What tunewiz builds once and keeps (llama.cpp's converter, the Go template checker):
    ``${XDG_CACHE_HOME:-~/.cache}/tunewiz``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tunewiz"


def runs_root(home_dir: Path) -> Path:
    return home_dir / "runs"


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "run"


def home_of(run_dir: str | Path) -> Path:
    """The tunewiz home a run directory belongs to: runs live in $TUNEWIZ_HOME/runs/<id>."""
    return Path(run_dir).parent.parent


def failure_kind(rec: Record) -> record.FailureKind:
    """OUT_OF_MEMORY, DISK_FULL or NONE: what a failed run's failure was (its [run] failure_kind)."""
    return rec.run.kind_of_failure


def has_adapter(run_dir: str | Path) -> bool:
    """Whether the run saved an adapter (a completed or stopped run has one)."""
    return (Path(run_dir) / ADAPTER / "adapter_config.json").is_file()


def ensure_writable(directory: Path) -> None:
    """Create `directory` (owner-only) or raise a RunError that says what to do."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A probe of its own (two submits in one process, e.g. the wizard's worker threads, must not
        # remove each other's): mkstemp picks a name no one else holds.
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RunError(
            f"cannot write to the runs directory {directory}: {exc.strerror or exc}. "
            "Choose a writable place with --home DIR or the TUNEWIZ_HOME environment variable."
        ) from None


def default_name(cfg: RunConfig) -> str:
    """A run's name when none is given: its data file and preset, as the history lists them
    ('support_tickets-balanced'; the start time tells apart runs of one name); "" without data.

    >>> cfg = RunConfig()
    >>> cfg.data.path = "/data/support_tickets.jsonl"
    >>> default_name(cfg)
    'support_tickets-balanced'
    """
    return f"{Path(cfg.data.path).stem}-{cfg.preset}" if cfg.data.path else ""


def create_run(
    cfg: RunConfig, home_dir: Path, extra: dict[str, dict[str, Any]] | list[dict[str, dict[str, Any]]] | None = None
) -> Path:
    """Make a run directory with a queued record; `extra` ({table: {key: value}}, or a list of them merged in
    order; see Record.merge) adds to it. Nothing is left behind on failure."""
    root = runs_root(home_dir)
    ensure_writable(root)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{slug(cfg.name or cfg.preset)}"
    run_id, n = base, 1
    while True:
        run_dir = root / run_id
        try:
            run_dir.mkdir(mode=0o700)
            break
        except FileExistsError:
            n += 1
            run_id = f"{base}-{n}"
    try:
        rec = Record.from_dict({"run": {}, **cfg.to_dict()})  # [run] first: a write cut short keeps it
        rec.run.update(
            {
                "id": run_id,
                "name": cfg.name or default_name(cfg) or run_id,
                "status": record.Status.QUEUED.value,
                "created": now_iso(),
                "created_unix": time.time(),  # orders runs made within the same second
                "queued_unix": time.time(),
                "host": socket.gethostname(),
            }
        )
        for tables in extra if isinstance(extra, list) else [extra or {}]:
            rec.merge(tables)
        write_toml_atomic(run_dir / RECORD, rec.to_dict())
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir


def looks_like_run(path: Path) -> bool:
    """Whether `path` is a run directory: it holds a record, or anything a trainer leaves behind."""
    return path.is_dir() and any((path / m).exists() for m in RUN_MARKERS)


TOML_WHERE = re.compile(r"\s*\(at (?:line (\d+), column \d+|end of document)\)\s*$")


def record_problem(path: str | Path) -> tuple[Record | None, str]:
    """Read the record at `path`: (the record, '') or (None, what is wrong with it, in words).

    Wrong means missing, unreadable, not UTF-8, not valid TOML, or without a [run] table: a crash
    or a full disk while it was written, a bad copy, a hand edit.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, f"{RECORD} is missing"
    except OSError as exc:
        return None, f"{RECORD} cannot be read: {exc.strerror or exc}"
    if not raw.strip():
        return None, f"{RECORD} is empty (cut off while being written?)"
    if not raw.strip(b"\0"):
        return None, f"{RECORD} is {len(raw):,} zero bytes (its contents never reached the disk: a crash or power cut?)"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return None, f"{RECORD} is not UTF-8 text at line {line} (damaged on disk?)"
    cut = "" if text.endswith("\n") else "; it stops mid-line (cut off while being written?)"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = TOML_WHERE.search(msg)
        line = m.group(1) if m and m.group(1) else str(text.count("\n") + 1)
        what = msg[: m.start()] if m else msg
        return None, f"{RECORD} is not valid TOML at line {line}: {what}{cut}"
    return record.problem_of(doc, cut)


def read_record(run_dir: str | Path) -> Record:
    """The run's record; a RunError that says what is wrong and how to rebuild it when it is damaged."""
    run_dir = Path(run_dir)
    doc, problem = record_problem(run_dir / RECORD)
    if doc is not None:
        return doc
    if not (run_dir / RECORD).exists() and not looks_like_run(run_dir):
        raise RunError(f"{run_dir} is not a run: it has no {RECORD}")
    raise RunError(
        f"the record of run {run_dir.name} is damaged: {problem}. `tunewiz show {run_dir.name}` says what is "
        f"left; `tunewiz repair {run_dir.name}` rebuilds {run_dir / RECORD} from it"
    )


@contextlib.contextmanager
def locked(path: Path, blocking: bool = True) -> Iterator[bool]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def update_record(run_dir: str | Path, change: Callable[[Record], Any]) -> Record:
    """Read-modify-write run.toml under a lock, written atomically: `change` edits the record in place.
    A record of an older schema is written in this one (core.bookkeeping.record migrates it on read)."""
    run_dir = Path(run_dir)
    with locked(run_dir / RECORD_LOCK):
        rec = read_record(run_dir)
        change(rec)
        write_toml_atomic(run_dir / RECORD, rec.to_dict())
    return rec


def set_status(run_dir: str | Path, status: str, **fields: Any) -> Record:
    def change(rec: Record) -> None:
        run = rec.run
        run.update({"status": str(status), **fields})
        if status == "running":
            run.started = run.started or now_iso()  # a resumed run keeps its first start
        elif status in FINAL:
            run.finished = now_iso()

    return update_record(run_dir, change)


def mark_resumed(rec: Record) -> None:
    """Queue a stopped/crashed run again, keeping the first segment's facts."""
    run = rec.run
    run.resumed = (run.resumed or 0) + 1
    run.resumed_at = [*(run.resumed_at or []), now_iso()]
    run.previous_status = run.status or ""
    run.status = record.Status.QUEUED.value
    run.queued_unix = time.time()
    run.drop("failure_reason", "failure_kind", "finished", "log_tail", "stopped_at_step", "notified")


def notify_end(run_dir: str | Path) -> int | None:
    """Run the run's `[notify] command` for the end it reached, once: the record is marked `notified`
    under its lock before the program starts, so the trainer's last step and a later look at a dead
    trainer's run (reconcile) never both run it; a resumed run is told again when it ends again. Returns
    the program's pid, None when nothing ran. A program that cannot start is one line in train.log.
    """
    from tunewiz.core.bookkeeping import notify

    run_dir = Path(run_dir)
    rec, _ = record_problem(run_dir / RECORD)
    if rec is None or not rec.notify.get("command"):
        return None  # nothing to run: no lock, no write
    claimed: list[Record] = []

    def claim(r: Record) -> None:
        if r.run.status in FINAL and not r.run.notified:
            r.run.notified = now_iso()
            claimed.append(r)

    update_record(run_dir, claim)
    if not claimed:
        return None
    rec = claimed[0]
    command = rec.notify["command"]
    command = [str(a) for a in command] if isinstance(command, list) else [str(command)]
    pass_env = rec.notify.get("pass_env") or []
    pass_env = [str(n) for n in pass_env] if isinstance(pass_env, list) else []
    return notify.spawn(command, notify.environment(rec, run_dir), run_dir, run_dir / LOG, pass_env)


# -- liveness ---------------------------------------------------------------------


@contextlib.contextmanager
def hold_trainer_lock(run_dir: str | Path) -> Iterator[bool]:
    """Held by the training process for its whole life; yields False if another holds it.

    The holder writes "pid start_time" into the lock file, so a reader can tell
    a trainer that has not started yet from one that started and died.
    """
    path = Path(run_dir) / TRAINER_LOCK
    with locked(path, blocking=False) as got:
        if got:
            path.write_text(f"{os.getpid()} {time.time()}\n")
        yield got


def trainer_started_unix(run_dir: str | Path) -> float:
    try:
        return float((Path(run_dir) / TRAINER_LOCK).read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0


def trainer_alive(run_dir: str | Path) -> bool:
    path = Path(run_dir) / TRAINER_LOCK
    if not path.exists():
        return False
    try:
        with locked(path, blocking=False) as got:
            return not got
    except OSError:  # cannot open it for writing (a read-only copy of the runs): a read-only lock test
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False


def tail_lines(path: Path, n: int = 20) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            return fh.read().decode("utf-8", "replace").splitlines()[-n:]
    except FileNotFoundError:
        return []


def disk_full_line(run_dir: Path, lines: list[str]) -> str:
    """The line of `lines` (the end of train.log) that says the disk was full, or ''.

    Judged by core.checkpoints like a failure the trainer catches itself: 'No space left on device' /
    errno 28 says so outright; torch's 'unexpected pos' (a write that came up short) counts when the
    disk has little space left now.
    """
    for line in reversed(lines):
        if _ERRNO_28.search(line) or checkpoints.is_disk_full(RuntimeError(line), run_dir):
            return line.strip()
    return ""


_ERRNO_28 = re.compile(r"errno\W{0,3}28\b|os error 28\b|\bENOSPC\b|\bStorageFull\b", re.IGNORECASE)
"""errno 28 as Python, Rust (safetensors) and C libraries print it, for lines that do not say it in words."""


def crash_fields(run_dir: Path, last_step: int, reason: str | None = None) -> dict[str, Any]:
    """What a reader records about a run whose trainer died without recording a result. The reason
    says so when train.log shows the disk was full; else `reason`, or that no result was recorded."""
    tail = tail_lines(run_dir / LOG, 40)
    full = disk_full_line(run_dir, tail)
    if full:
        try:
            free = f"; {checkpoints.mib(checkpoints.free_bytes(run_dir))} free now"
        except OSError:
            free = ""
        reason = (
            f"the disk was full: the training process ended at step {last_step} without recording a result "
            f"(train.log: {full[-160:]}{free}). Free some space, then `tunewiz resume {run_dir.name}` continues "
            "from the newest complete checkpoint."
        )
    else:
        reason = reason or f"the training process ended without recording a result (last step {last_step})"
    return {
        "status": "crashed",
        "finished": now_iso(),
        "failure_reason": reason,
        "last_step": last_step,
        "log_tail": "\n".join(tail[-15:]),
    }


def here(rec: Record) -> bool:
    """Whether the run was made on this machine (a runs directory on a shared disk, or a run directory
    copied from elsewhere, may hold others'): its [run] host is this machine's name."""
    host = rec.run.extra.get("host", rec.run.host)  # a host of the wrong type is kept in extra: not here
    return host is None or host == socket.gethostname()


def _dead(run_dir: Path, rec: Record, grace_s: float) -> bool:
    """Whether `rec` says queued or running on this machine but no trainer holds its lock: a queued
    run whose trainer never took the lock within `grace_s` of being queued died while starting."""
    run = rec.run
    if run.status not in ACTIVE or not here(rec) or trainer_alive(run_dir):
        return False
    queued = run.queued_unix or 0.0
    return not (
        run.status == record.Status.QUEUED and trainer_started_unix(run_dir) < queued and time.time() - queued < grace_s
    )


def _crash_of(run_dir: Path) -> dict[str, Any]:
    from tunewiz.core.bookkeeping.events import read_events

    events, _ = read_events(run_dir)
    steps = [e for e in events if e.get("event") == "step"]
    return crash_fields(run_dir, steps[-1].get("step", 0) if steps else 0)


def observe(run_dir: str | Path, grace_s: float = 30.0) -> Record:
    """The record as a reader should show it, without writing anything or starting anything.

    A run of this machine whose record says queued or running but whose trainer is gone reads as
    `crashed` (in the returned copy only: :func:`reconcile` is the one place that records it). A run
    made on another machine reads as recorded: its trainer's liveness cannot be judged from here (a
    listing shows it 'on HOST'). Raises RunError when the record is damaged (read_record).
    """
    run_dir = Path(run_dir)
    rec = read_record(run_dir)
    if _dead(run_dir, rec, grace_s):
        rec.run.update(_crash_of(run_dir))
    return rec


def reconcile(run_dir: str | Path, grace_s: float = 30.0) -> Record:
    """Record `crashed` for a run of this machine whose trainer is gone, and tell its [notify] command.

    The only place outside the trainer that writes a dead trainer's end, called by those that act for
    this machine's own runs: the queue runner, `tunewiz resume`, `tunewiz train` watching the run it
    started, and `tunewiz runs --reconcile`. A run from another host is never written, and its notify
    program never runs here. When `crashed` cannot be written (a full disk, a read-only file system) the
    record comes back crashed all the same, and the next reconcile writes it.
    """
    run_dir = Path(run_dir)
    rec = read_record(run_dir)
    if not _dead(run_dir, rec, grace_s):
        return rec
    crash = _crash_of(run_dir)

    def mark(r: Record) -> None:
        if r.run.status in ACTIVE:  # else someone else got there first
            r.run.update(crash)

    if trainer_alive(run_dir):  # started between our two checks
        return read_record(run_dir)
    try:
        rec = update_record(run_dir, mark)
    except OSError as exc:
        mark(rec)  # shown as crashed now; written by the next reconcile once space returns
        rec.run.failure_reason = (rec.run.failure_reason or "") + (
            f" (not yet saved in {RECORD}: {exc.strerror or exc}; saved on the next look once it can be written)"
        )
        return rec
    with contextlib.suppress(RunError, OSError):  # telling of the crash never hides it
        notify_end(run_dir)
    return rec


def reconcile_all(home_dir: Path) -> list[Path]:
    """:func:`reconcile` every run of this machine under `home_dir`; the runs it recorded as crashed."""
    out = []
    for run_dir in _run_dirs(runs_root(home_dir)):
        rec, _ = record_problem(run_dir / RECORD)
        if rec is None or rec.run.status not in ACTIVE or not here(rec):
            continue
        with contextlib.suppress(RunError, OSError):
            if reconcile(run_dir).run.status == record.Status.CRASHED:
                out.append(run_dir)
    return out


# -- listing ----------------------------------------------------------------------


@dataclass
class RunSummary:
    id: str
    path: Path
    status: str
    name: str
    created: str
    model: str
    data: str
    preset: str
    method: str
    train_loss: float | None
    eval_loss: float | None
    metric: str
    duration_s: float | None
    record: Record
    problem: str = ""
    """A damaged run: what is wrong with its run.toml ('' for every other run)."""
    left: list[str] = field(default_factory=list)
    """A damaged run: what its directory still holds, one phrase each."""
    queue_place: int = 0
    """A waiting run: its place in the run queue (1 starts next); 0 for every other run."""
    note: str = ""
    """What a run whose record reads fine has lost (:func:`missing_adapter`), in a sentence; '' when nothing."""

    @property
    def label(self) -> str:
        """The status as a listing shows it: a waiting run by its place in the queue ('queued #2'); a run
        another machine says it is training, by that machine ('on gpu-box-2')."""
        if self.status == WAITING and self.queue_place:
            return f"queued #{self.queue_place}"
        if self.status in ACTIVE and not here(self.record):
            return f"on {self.record.run.host or self.record.run.extra.get('host')}"
        return self.status

    def damage_lines(self) -> list[str]:
        """A damaged run in words, as `tunewiz show` prints it."""
        return [
            f"run {self.id}: {self.status}",
            f"  problem: {self.problem}",
            "  still there:",
            *(f"    {x}" for x in self.left),
            f"-> `tunewiz repair {self.id}` rebuilds {RECORD} from these (the damaged file is kept)",
        ]


def summarize(run_dir: Path, rec: Record) -> RunSummary:
    run, res = rec.run, rec.results
    ft = res.finetuned or {}
    metric = ""  # the fine-tuned model's figure that says most for its kind of answer, in 10 characters
    if ft.get("kind") == "labels" and isinstance(ft.get("macro_f1"), (int, float)):
        metric = f"F1 {ft['macro_f1']:.2f}"  # macro-F1: every label counts, a rare one as much as a common one
    elif "field_match" in ft:
        metric = f"fields {ft['field_match']:.0%}"
    elif "exact_match" in ft:
        metric = f"exact {ft['exact_match']:.0%}"
    return RunSummary(
        id=run.id or run_dir.name,
        path=run_dir,
        status=run.status or "?",
        name=run.name or "",
        created=run.created or "",
        model=rec.model.id or "",
        data=Path(rec.data.path or "").name,
        preset=rec.preset,
        method=rec.model.method or "",
        train_loss=res.train_loss,
        eval_loss=res.finetuned_eval_loss,
        metric=metric,
        duration_s=res.wall_time_s,
        record=rec,
        note=missing_adapter(run_dir, rec),
    )


def missing_adapter(run_dir: Path, rec: Record) -> str:
    """'' when the run's adapter is there or it never saved one; else that it is missing and what to do: a
    completed run (or a stopped one whose record names its adapter) without adapter/adapter_config.json
    (deleted, or moved) has nothing to chat with, evaluate or export. Only reads."""
    status = rec.run.status
    if not (status == "completed" or (status == "stopped" and rec.artifacts.adapter)) or has_adapter(run_dir):
        return ""
    adapter = run_dir / ADAPTER
    what = "has no adapter_config.json" if adapter.is_dir() else "is gone"
    ckpt, _ = checkpoints.newest_complete(run_dir / CHECKPOINTS)
    again = f"train again with `tunewiz train --config` and this run's {RECORD}"
    if ckpt is not None and (ckpt / "adapter_config.json").is_file():
        again = (
            f"{CHECKPOINTS}/{ckpt.name} still holds it as of step {checkpoints.step_of(ckpt)}: copy its "
            f"adapter_config.json and adapter_model.* into {ADAPTER}/, or {again}"
        )
    # Paths relative to the run directory: the line wraps at words within 80 columns wherever the home is.
    return (
        f"the adapter is missing: {ADAPTER}/ {what} (deleted?), so there is nothing to chat with, evaluate or "
        f"export; {again}"
    )


def iso_time(unix: float) -> str:
    return datetime.fromtimestamp(unix, timezone.utc).astimezone().isoformat(timespec="seconds")


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return ""  # pragma: no cover


_digests: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}


def events_digest(run_dir: Path) -> dict[str, Any]:
    """What events.jsonl says about a run, in one pass: steps, the last status, totals, results.

    Kept per file size and time, so a listing that polls a damaged run does not re-read it each time.
    """
    from tunewiz.core.bookkeeping.events import read_events

    path = Path(run_dir) / EVENTS
    try:
        st = path.stat()
    except OSError:
        return {}
    key = (st.st_size, st.st_mtime_ns)
    cached = _digests.get(path)
    if cached and cached[0] == key:
        return cached[1]
    d: dict[str, Any] = {"events": 0, "steps": 0}
    events, _ = read_events(run_dir)
    for e in events:
        kind, t = e.get("event"), e.get("t")
        d["events"] += 1
        if isinstance(t, (int, float)):
            d.setdefault("first_t", t)
        if kind == "step":
            d["steps"] += 1
            d.update(last_step=e.get("step"), max_steps=e.get("max_steps"), loss=e.get("loss"))
        elif kind == "train_begin":
            d.update(max_steps=e.get("max_steps"), epochs=e.get("epochs"))
        elif kind == "checkpoint":
            d["checkpoint_step"] = e.get("step")
        elif kind == "status" and e.get("status"):
            d.update(status=e["status"], status_t=t, status_event=e)
            if e.get("total_steps"):
                d["total_steps"] = e["total_steps"]
            if e["status"] == "completed" and isinstance(e.get("results"), dict):  # noqa: record (an event)
                d.update(results=e["results"])  # noqa: record (the event's results)
    _digests[path] = (key, d)
    return d


def record_copies(run_dir: Path) -> list[Path]:
    """Leftovers of an atomic write that never got renamed (a writer killed mid-way), newest first."""
    found = [p for p in run_dir.glob(f".{RECORD}.*.tmp") if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def adapter_config(run_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """The adapter's PEFT config and where it was read: adapter/, else the newest checkpoint's."""
    for d in [run_dir / ADAPTER, *checkpoints.all_checkpoints(run_dir / CHECKPOINTS)]:
        conf = read_json(d / "adapter_config.json")
        if conf is not None:
            return conf, str((d / "adapter_config.json").relative_to(run_dir))
    return None, ""


def what_is_left(run_dir: Path) -> list[str]:
    """What a run directory holds besides its record, one phrase each (said about a damaged record)."""
    run_dir = Path(run_dir)
    out = []
    adapter = run_dir / ADAPTER
    if adapter.is_dir():
        conf = read_json(adapter / "adapter_config.json")
        weights = any(adapter.glob("adapter_model.*"))
        if conf is None:
            out.append("adapter/ without a readable adapter_config.json")
        else:
            out.append(
                f"adapter/ (LoRA rank {conf.get('r', '?')} on {conf.get('base_model_name_or_path') or '?'})"
                + ("" if weights else ", but no adapter weights")
            )
    ckpts = checkpoints.all_checkpoints(run_dir / CHECKPOINTS)
    if ckpts:
        newest, _ = checkpoints.newest_complete(run_dir / CHECKPOINTS)
        text = f"{len(ckpts)} checkpoint{'s' if len(ckpts) > 1 else ''}, newest at step {checkpoints.step_of(ckpts[0])}"
        if newest is None:
            text += " (none complete)"
        elif newest != ckpts[0]:
            text += f" (newest complete: step {checkpoints.step_of(newest)})"
        out.append(text)
    d = events_digest(run_dir)
    if d:
        text = f"events.jsonl with {d['steps']} step{'' if d['steps'] == 1 else 's'}"
        if d.get("last_step") is not None:
            loss = d.get("loss")
            text += f" (last: step {d['last_step']}/{d.get('max_steps') or '?'}"
            text += f", loss {loss:.4f})" if isinstance(loss, (int, float)) else ")"
        if d.get("status"):
            text += f", last status {d['status']}"
        out.append(text)
    log = run_dir / LOG
    if log.is_file():
        out.append(f"train.log ({_size(log.stat().st_size)})")
    if (run_dir / "eval" / "predictions.jsonl").is_file():
        out.append("eval/predictions.jsonl (the base vs fine-tuned answers)")
    for copy in record_copies(run_dir):
        out.append(f"{copy.name} (an unfinished write of the record)")
    try:
        if trainer_alive(run_dir):
            out.append("a trainer that is still running (it holds trainer.lock)")
    except OSError:
        pass
    return out or ["nothing else: no events, log, adapter or checkpoints"]


def damaged_summary(run_dir: Path, problem: str) -> RunSummary:
    """A run whose record cannot be read, as a listing shows it: status `damaged`, what is wrong, what is left.

    Its `record` is made up from the directory (id, name and creation time from the id); nothing of it
    is on disk.
    """
    created_unix = id_time(run_dir.name)
    if created_unix is None:
        try:
            created_unix = run_dir.stat().st_mtime
        except OSError:
            created_unix = 0.0
    m = re.match(r"\d{8}-\d{6}-(.+)$", run_dir.name)
    name = m.group(1) if m else run_dir.name
    conf, _ = adapter_config(run_dir)
    created = iso_time(created_unix) if created_unix else ""
    rec = Record()
    rec.run.update(
        {"id": run_dir.name, "name": name, "status": DAMAGED.value, "created": created, "created_unix": created_unix}
    )
    return RunSummary(
        id=run_dir.name,
        path=run_dir,
        status=DAMAGED,
        name=name,
        created=created,
        model=str((conf or {}).get("base_model_name_or_path") or ""),
        data="",
        preset="",
        method="",
        train_loss=None,
        eval_loss=None,
        metric="",
        duration_s=None,
        record=rec,
        problem=problem,
        left=what_is_left(run_dir),
    )


def usable_record(run_dir: Path) -> tuple[Record | None, str]:
    """(the record, '') when a listing can show it, else (None, what is wrong): record_problem, plus
    values of a shape no listing can use."""
    doc, problem = record_problem(Path(run_dir) / RECORD)
    if doc is None:
        return None, problem
    try:
        summarize(Path(run_dir), doc)
    except (ValueError, TypeError, AttributeError) as exc:
        return None, f"{RECORD} holds a value of the wrong type ({type(exc).__name__}: {exc})"
    return doc, ""


def summary_of(run_dir: Path) -> RunSummary:
    """One run as a listing shows it: observed (a dead trainer's run reads as crashed; nothing is written),
    or damaged. Never raises for a run directory: a run with a bad record is listed, not dropped."""
    run_dir = Path(run_dir)
    try:
        doc = observe(run_dir)
    except (RunError, OSError, ValueError, TypeError, AttributeError):
        # Damaged (its words come from usable_record), or the trainer could not be checked: as recorded.
        doc, problem = usable_record(run_dir)
        if doc is None:
            return damaged_summary(run_dir, problem)
    try:
        return summarize(run_dir, doc)
    except (ValueError, TypeError, AttributeError) as exc:
        return damaged_summary(run_dir, f"{RECORD} holds a value of the wrong type ({type(exc).__name__}: {exc})")


def list_runs(home_dir: Path) -> list[RunSummary]:
    """Every run under home, newest first, with dead 'running' runs read as crashed and runs whose
    record is missing or unreadable listed as `damaged` (with what is wrong and what is left). Only
    reads: no record is written and no program is started (:func:`reconcile` does that)."""
    out = [summary_of(run_dir) for run_dir in _run_dirs(runs_root(home_dir))]
    out.sort(key=lambda r: (_created_unix(r.record), r.id), reverse=True)
    for place, r in enumerate(sorted((r for r in out if r.status == WAITING), key=lambda r: queue_key(r.record)), 1):
        r.queue_place = place
    return out


def queue_key(rec: Record) -> tuple[float, float, str]:
    """Where a waiting run stands in the queue: its [run] queue_order (smallest first), then its creation."""
    return rec.run.queue_order or 0.0, _created_unix(rec), rec.run.id or ""


def damaged(items: list[RunSummary]) -> list[RunSummary]:
    return [r for r in items if r.status == DAMAGED]


def _created_unix(rec: Record) -> float:
    return rec.run.created_unix or 0.0


def inside(root: Path, path: Path) -> bool:
    """Whether `path`, links followed, lies under `root`: a symlink in runs/ that leads out of the home
    is not a run of this home (listing, repair and delete never follow it there)."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a link loop
        return False


def _run_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if not p.name.startswith(".") and inside(root, p) and looks_like_run(p)]


def _created(run_dir: Path) -> tuple[float, str]:
    doc, _ = record_problem(run_dir / RECORD)
    created = _created_unix(doc) if doc is not None else 0.0
    return created or id_time(run_dir.name) or 0.0, run_dir.name


def find_run(home_dir: Path, ref: str) -> Path:
    """A run by path, id, unique id prefix, or `last`; runs with a damaged record are found too. An id
    as `tunewiz runs` cuts it to fit the terminal ('20261201-183751-beside-…') is its prefix."""
    ref = ref.removesuffix("…")
    candidate = Path(ref).expanduser()
    if looks_like_run(candidate):
        return candidate.resolve()
    root = runs_root(home_dir)
    dirs = _run_dirs(root)
    ids = sorted(p.name for p in dirs)
    if ref == "last" and dirs:
        return max(dirs, key=_created)
    if ref in ids:
        return root / ref
    matches = [i for i in ids if i.startswith(ref) or ref in i]
    if len(matches) == 1:
        return root / matches[0]
    if not matches:
        raise RunError(f"no run {ref!r} under {root}; `tunewiz runs` lists them")
    raise RunError(f"{ref!r} matches {len(matches)} runs ({', '.join(matches[:5])}...); give more of the id")
