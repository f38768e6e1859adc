"""Checkpoints that are whole or do not count, and disk-full failures that say so.

The Trainer writes a checkpoint file by file into ``checkpoints/checkpoint-N/`` (adapter, optimizer,
scheduler, RNG state, trainer_state.json). A full disk, a kill or a power cut in the middle leaves a
directory that looks like a checkpoint and is not one. So after the Trainer's last file, the trainer
writes :data:`MARKER` (every file's size, written atomically); a checkpoint counts only when its
marker is there and every file still has its size. Resume takes the newest complete one and says
which it skipped and why; rotation (``save_total_limit``) counts only complete ones, so a torn save
never deletes the last good checkpoint.

Pure Python (no torch): the CLI and the tests read checkpoints without loading anything.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from tunewiz.core.errors import TunewizError

MARKER = "tunewiz-complete.json"
PREFIX = "checkpoint-"
RESERVE = ".disk-reserve"
RESERVE_BYTES = 1 << 20
"""Kept on disk while a trainer runs and deleted when the disk fills: room for the final record."""
MARGIN = 1.10
"""A checkpoint may grow a little between saves (the trainer state's log history)."""
DISK_FULL_TEXTS = ("no space left", "disk quota exceeded", "enospc", "file too large", "disk full")
TORN_WRITE_TEXTS = ("unexpected pos", "pytorchstreamwriter failed", "failed to write", "write failed")


class DiskFullError(TunewizError, OSError):
    """Not enough free space for what the trainer is about to write."""

    def __init__(self, message: str, filename: str = "") -> None:
        OSError.__init__(self, errno.ENOSPC, message, filename or None)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass
class Skipped:
    path: Path
    why: str

    def __str__(self) -> str:
        return f"{self.path.name} ({self.why})"


def step_of(path: Path) -> int:
    tail = path.name[len(PREFIX) :]
    return int(tail) if tail.isdigit() else -1


def all_checkpoints(root: Path) -> list[Path]:
    """checkpoint-N directories under `root`, newest (highest step) first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(PREFIX) and step_of(p) >= 0 and p.is_dir()]
    return sorted(found, key=step_of, reverse=True)


def _files(ckpt: Path) -> dict[str, int]:
    out = {}
    for p in sorted(ckpt.rglob("*")):
        if p.is_file() and p.name != MARKER:
            out[str(p.relative_to(ckpt))] = p.stat().st_size
    return out


def mark_complete(ckpt: Path, step: int) -> None:
    """Record that `ckpt` is whole: every file and its size, written to a temporary name, synced, renamed."""
    files = _files(ckpt)
    for name in files:  # the Trainer's files reach the disk before the marker that vouches for them
        with open(ckpt / name, "rb") as fh:
            os.fsync(fh.fileno())
    tmp = ckpt / f".{MARKER}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"step": step, "files": files}, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, ckpt / MARKER)


def why_incomplete(ckpt: Path) -> str:
    """'' when `ckpt` is a whole checkpoint, else what is wrong with it."""
    marker = ckpt / MARKER
    if not marker.is_file():
        # Checkpoints from before the marker: whole when the Trainer's last file is there and reads.
        state = ckpt / "trainer_state.json"
        if not state.is_file():
            return "cut off while being saved: no trainer_state.json"
        try:
            json.loads(state.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "cut off while being saved: trainer_state.json is damaged"
        if any(ckpt.parent.glob(f"{PREFIX}*/{MARKER}")):  # this run marks its checkpoints: this one never was
            return "cut off while being saved: never marked complete"
        return ""
    try:
        files = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"its {MARKER} is damaged"
    for name, size in files.items():
        path = ckpt / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size:,} bytes, {size:,} when saved"
    return ""


def newest_complete(root: Path) -> tuple[Path | None, list[Skipped]]:
    """The newest whole checkpoint under `root`, and the newer ones skipped with why."""
    skipped = []
    for ckpt in all_checkpoints(root):
        why = why_incomplete(ckpt)
        if not why:
            return ckpt, skipped
        skipped.append(Skipped(ckpt, why))
    return None, skipped


def rotate(root: Path, keep: int) -> list[Path]:
    """Keep the newest `keep` whole checkpoints; delete older whole ones and any torn one older than
    the newest whole one (a torn one newer than that stays for a look until the next save). Returns
    what was deleted."""
    deleted, whole = [], 0
    newest_whole_seen = False
    for ckpt in all_checkpoints(root):
        complete = not why_incomplete(ckpt)
        if complete:
            whole += 1
            newest_whole_seen = True
            if whole <= keep:
                continue
        elif not newest_whole_seen:
            continue
        shutil.rmtree(ckpt, ignore_errors=True)
        deleted.append(ckpt)
    return deleted


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def free_bytes(path: Path) -> int:
    """Free bytes for an unprivileged writer on `path`'s file system (its nearest existing parent)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.statvfs(p)
    return st.f_bavail * st.f_frsize


def mib(n: float) -> str:
    return f"{n / (1 << 20):,.0f} MiB" if n >= 1 << 20 else f"{n / 1024:,.0f} KiB"


def check_room(root: Path, step: int, expected: int) -> None:
    """Raise DiskFullError before checkpoint `step` is written when it would not fit: `expected`
    bytes (the last whole checkpoint's size, or an estimate for the first) and a margin."""
    newest, _ = newest_complete(root)
    need = int(max(size_of(newest) if newest else 0, expected) * MARGIN)
    free = free_bytes(root)
    if free < need:
        where = root.resolve()
        kept = f"; {newest.name} is whole and stays" if newest else ""
        raise DiskFullError(
            f"Disk full: checkpoint-{step} needs about {mib(need)} and {mib(free)} is free on the disk of "
            f"{where}{kept}. "
            "Free some space (or lower save_total_limit), then `tunewiz resume RUN` continues from the newest "
            "complete checkpoint.",
            str(where),
        )


def is_disk_full(exc: BaseException, path: Path | None = None) -> bool:
    """Whether `exc` (or anything in its chain) is a full disk, whichever layer raised it: an OSError
    ENOSPC/EDQUOT from Python, safetensors' or torch's writer (torch says 'unexpected pos' when a write
    came up short), judged with the free space left on `path`'s disk for the messages that do not say."""
    seen, e = set(), exc
    torn = False
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        text = str(e).lower()
        if any(t in text for t in DISK_FULL_TEXTS):
            return True
        torn = torn or any(t in text for t in TORN_WRITE_TEXTS)
        e = e.__cause__ or e.__context__
    if torn and path is not None:
        try:
            return free_bytes(path) < 64 * (1 << 20)
        except OSError:
            return False
    return False


def disk_full_reason(exc: BaseException, path: Path) -> str:
    if isinstance(exc, DiskFullError):
        return exc.message
    try:
        left = f" ({mib(free_bytes(path))} free now)"
    except OSError:
        left = ""
    return (
        f"Disk full while writing in {path}{left}. Checkpoints saved whole before it are untouched: free some "
        "space (or lower save_total_limit), then `tunewiz resume RUN` continues from the newest complete checkpoint."
    )


def make_reserve(run_dir: Path) -> None:
    """A small file the trainer deletes when the disk fills, so the final record can still be written."""
    try:
        with open(run_dir / RESERVE, "wb") as fh:
            fh.write(b"\0" * RESERVE_BYTES)
    except OSError:
        try:
            (run_dir / RESERVE).unlink()
        except OSError:
            pass


def release_reserve(run_dir: Path) -> None:
    try:
        (run_dir / RESERVE).unlink()
    except OSError:
        pass
