"""events.jsonl: the append-only stream a training process writes and any reader replays.

Each line is one JSON object: ``{"t": unix_time, "event": "step" | "eval" | "log" |
"status" | ..., ...}``. The writer appends and flushes whole lines; a reader only
consumes lines that end in a newline, so a line being written (or cut short by
a crash) is never misread.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunewiz.core.units import fmt_duration

EVENTS_FILE = "events.jsonl"


def end_torn_line(path: Path) -> None:
    """If a previous writer of `path` died mid-line, end that line, so the next one starts fresh."""
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                with open(path, "ab") as out:
                    out.write(b"\n")


class EventWriter:
    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / EVENTS_FILE
        end_torn_line(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the writer

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"t": round(time.time(), 3), "event": event, **fields}
        self._fh.write(json.dumps(record, default=str) + "\n")
        self._fh.flush()
        return record

    def close(self) -> None:
        self._fh.close()


def read_events(run_dir: str | Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete events from byte `offset`; returns them and the offset to continue from.

    A last line without its newline is left for the next call; a line that is not
    JSON (a crash mid-write followed by a restart) is skipped.
    """
    return read_jsonl(Path(run_dir) / EVENTS_FILE, offset)


def read_jsonl(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of an append-only file's complete lines from byte `offset` (read_events' rules), and
    the offset to continue from."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:  # missing, or not a file (a directory, a dangling link): no events to read
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    events = []
    for line in data[: end + 1].splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            events.append(obj)
    return events, offset + end + 1


def follow(run_dir: str | Path, is_done, poll: float = 0.5) -> Iterator[dict[str, Any]]:
    """Replay every event, then yield new ones until `is_done()` is true and the file is drained."""
    offset = 0
    while True:
        events, offset = read_events(run_dir, offset)
        yield from events
        if not events:
            if is_done():
                events, offset = read_events(run_dir, offset)
                yield from events
                return
            time.sleep(poll)


def describe(ev: dict[str, Any]) -> str | None:
    """One human line for an event, or None for events not worth a line."""
    kind = ev.get("event")
    if kind == "step":
        return (
            f"step {ev.get('step')}/{ev.get('max_steps')}  epoch {ev.get('epoch') or 0:.2f}  "
            f"loss {ev.get('loss') or 0:.4f}  lr {ev.get('learning_rate') or 0:.2e}  "
            f"{ev.get('tokens_per_s') or 0:.0f} tok/s  mem {ev.get('memory_mb') or 0:.0f} MB  "
            f"eta {fmt_duration(ev.get('eta_s'))}"
        )
    if kind == "eval":
        return f"eval loss {ev.get('eval_loss') or 0:.4f} at step {ev.get('step')}"
    if kind == "checkpoint":
        return f"checkpoint saved at step {ev.get('step')}"
    if kind == "status":
        status = ev.get("status")
        if status == "failed":
            return f"FAILED: {ev.get('reason')}"
        msg = ev.get("message")
        return f"[{status}] {msg}" if msg else f"[{status}]"
    return None
