"""Run directories and their records (run.toml): create, update atomically, list, find.

Layout of ``$TUNEWIZ_HOME/runs/<run-id>/``: run.toml (the record), events.jsonl,
train.log, checkpoints/, adapter/, eval/. The trainer holds an exclusive lock on
``trainer.lock`` for as long as it lives, so "is the trainer alive?" is answered
by trying that lock, which survives pid reuse and needs no clock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tunewiz.core.config import RunConfig
from tunewiz.core.errors import TunewizError
from tunewiz.core.toml import read_toml, tomllib, write_toml_atomic

RECORD = "run.toml"
TRAINER_LOCK = "trainer.lock"
RECORD_LOCK = ".record.lock"
LOG = "train.log"
ACTIVE = ("queued", "running")
FINAL = ("completed", "stopped", "failed", "crashed")


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


def runs_root(home_dir: Path) -> Path:
    return home_dir / "runs"


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "run"


def ensure_writable(directory: Path) -> None:
    """Create `directory` (owner-only) or raise a RunError that says what to do."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise RunError(
            f"cannot write to the runs directory {directory}: {exc.strerror or exc}. "
            "Choose a writable place with --home DIR or the TUNEWIZ_HOME environment variable."
        ) from None


def create_run(cfg: RunConfig, home_dir: Path, extra: dict[str, Any] | None = None) -> Path:
    """Make a run directory with a queued record. Nothing is left behind on failure."""
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
        doc: dict[str, Any] = {
            "run": {
                "id": run_id,
                "name": cfg.name or run_id,
                "status": "queued",
                "created": now_iso(),
                "created_unix": time.time(),  # orders runs made within the same second
                "queued_unix": time.time(),
                "host": socket.gethostname(),
            },
            **cfg.to_dict(),
        }
        for section, values in (extra or {}).items():
            doc.setdefault(section, {}).update(values)
        write_toml_atomic(run_dir / RECORD, doc)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir


def read_record(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / RECORD
    try:
        return read_toml(path)
    except FileNotFoundError:
        raise RunError(f"{run_dir} is not a run: it has no {RECORD}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RunError(f"{path} is not valid TOML ({exc}); it was not written by tunewiz") from None


@contextlib.contextmanager
def _locked(path: Path, blocking: bool = True) -> Iterator[bool]:
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


def update_record(run_dir: str | Path, change: dict[str, dict[str, Any]] | Callable[[dict], None]) -> dict:
    """Read-modify-write run.toml under a lock, written atomically.

    `change` is either {section: {key: value}} merged into the record, or a
    function that edits the record in place.
    """
    run_dir = Path(run_dir)
    with _locked(run_dir / RECORD_LOCK):
        doc = read_record(run_dir)
        if callable(change):
            change(doc)
        else:
            for section, values in change.items():
                doc.setdefault(section, {}).update(values)
        write_toml_atomic(run_dir / RECORD, doc)
    return doc


def set_status(run_dir: str | Path, status: str, **fields: Any) -> dict:
    def change(doc: dict) -> None:
        run = doc.setdefault("run", {})
        run.update(status=status, **fields)
        if status == "running":
            run.setdefault("started", now_iso())  # a resumed run keeps its first start
        elif status in FINAL:
            run["finished"] = now_iso()

    return update_record(run_dir, change)


def mark_resumed(doc: dict) -> None:
    """Queue a stopped/crashed run again, keeping the first segment's facts."""
    run = doc["run"]
    run["resumed"] = run.get("resumed", 0) + 1
    run["resumed_at"] = [*run.get("resumed_at", []), now_iso()]
    run["previous_status"] = run.get("status", "")
    run["status"] = "queued"
    run["queued_unix"] = time.time()
    for key in ("failure_reason", "finished", "log_tail", "stopped_at_step"):
        run.pop(key, None)


# -- liveness ---------------------------------------------------------------------


@contextlib.contextmanager
def hold_trainer_lock(run_dir: str | Path) -> Iterator[bool]:
    """Held by the training process for its whole life; yields False if another holds it.

    The holder writes "pid start_time" into the lock file, so a reader can tell
    a trainer that has not started yet from one that started and died.
    """
    path = Path(run_dir) / TRAINER_LOCK
    with _locked(path, blocking=False) as got:
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
    with _locked(path, blocking=False) as got:
        return not got


def tail_lines(path: Path, n: int = 20) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            return fh.read().decode("utf-8", "replace").splitlines()[-n:]
    except FileNotFoundError:
        return []


def refresh(run_dir: str | Path, grace_s: float = 30.0) -> dict:
    """The record, after recording `crashed` if it says running but its trainer is gone.

    A queued run whose trainer never took the lock within `grace_s` of creation
    is also crashed (it died while starting).
    """
    from tunewiz.core.events import read_events

    run_dir = Path(run_dir)
    doc = read_record(run_dir)
    status = doc.get("run", {}).get("status")
    if status not in ACTIVE or trainer_alive(run_dir):
        return doc
    queued = float(doc["run"].get("queued_unix", 0))
    if status == "queued" and trainer_started_unix(run_dir) < queued and time.time() - queued < grace_s:
        return doc  # its trainer has not started yet

    events, _ = read_events(run_dir)
    steps = [e for e in events if e.get("event") == "step"]
    last_step = steps[-1].get("step", 0) if steps else 0

    def mark(d: dict) -> None:
        if d.get("run", {}).get("status") not in ACTIVE:  # someone else got there first
            return
        run = d.setdefault("run", {})
        run.update(
            status="crashed",
            finished=now_iso(),
            failure_reason=f"the training process ended without recording a result (last step {last_step})",
            last_step=last_step,
            log_tail="\n".join(tail_lines(run_dir / LOG, 15)),
        )

    if trainer_alive(run_dir):  # started between our two checks
        return read_record(run_dir)
    return update_record(run_dir, mark)


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
    record: dict


def summarize(run_dir: Path, doc: dict) -> RunSummary:
    run, res = doc.get("run", {}), doc.get("results", {})
    ft = res.get("finetuned", {}) if isinstance(res.get("finetuned"), dict) else {}
    metric = ""
    if "field_match" in ft:
        metric = f"fields {ft['field_match']:.0%}"
    elif "exact_match" in ft:
        metric = f"exact {ft['exact_match']:.0%}"
    return RunSummary(
        id=run.get("id", run_dir.name),
        path=run_dir,
        status=run.get("status", "?"),
        name=run.get("name", ""),
        created=run.get("created", ""),
        model=doc.get("model", {}).get("id", ""),
        data=Path(doc.get("data", {}).get("path", "")).name,
        preset=doc.get("preset", {}).get("name", ""),
        method=doc.get("model", {}).get("method", ""),
        train_loss=res.get("train_loss"),
        eval_loss=ft.get("eval_loss", res.get("eval_loss")),
        metric=metric,
        duration_s=res.get("wall_time_s"),
        record=doc,
    )


def list_runs(home_dir: Path) -> list[RunSummary]:
    """Every run under home, newest first, with dead 'running' runs marked crashed."""
    out = []
    for run_dir in _run_dirs(runs_root(home_dir)):
        try:
            doc = refresh(run_dir)
        except (RunError, OSError):
            continue
        out.append(summarize(run_dir, doc))
    out.sort(key=lambda r: (r.record.get("run", {}).get("created_unix", 0.0), r.id), reverse=True)
    return out


def _run_dirs(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if (p / RECORD).is_file()] if root.is_dir() else []


def _created(run_dir: Path) -> tuple[float, str]:
    try:
        return float(read_record(run_dir).get("run", {}).get("created_unix", 0.0)), run_dir.name
    except (RunError, OSError, ValueError):
        return 0.0, run_dir.name


def find_run(home_dir: Path, ref: str) -> Path:
    """A run by path, id, unique id prefix, or `last`."""
    candidate = Path(ref).expanduser()
    if (candidate / RECORD).is_file():
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
