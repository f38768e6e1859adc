"""events.jsonl: whole lines only, resumable offsets, and recovery after a crash mid-line."""

from __future__ import annotations

import json
import time

from tunewiz.core.bookkeeping.events import EVENTS_FILE, EventWriter, follow, read_events


def _append(run_dir, text: str) -> None:
    with open(run_dir / EVENTS_FILE, "a", encoding="utf-8") as fh:
        fh.write(text)


def test_writer_lines_are_read_back(tmp_path):
    w = EventWriter(tmp_path)
    before = time.time()
    rec = w.emit("step", step=1, loss=2.5)
    w.emit("status", status="running", path=tmp_path)  # non-JSON values are written as text
    w.close()
    assert rec["event"] == "step" and rec["step"] == 1
    events, offset = read_events(tmp_path)
    assert [e["event"] for e in events] == ["step", "status"]
    assert events[0] == rec
    assert events[1]["path"] == str(tmp_path)
    assert events[0]["t"] >= round(before, 3) - 0.001
    assert offset == (tmp_path / EVENTS_FILE).stat().st_size
    # nothing new from the returned offset
    assert read_events(tmp_path, offset) == ([], offset)


def test_every_event_is_one_line(tmp_path):
    w = EventWriter(tmp_path)
    w.emit("log", message="line one\nline two\r\nthree")
    w.close()
    lines = (tmp_path / EVENTS_FILE).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["message"] == "line one\nline two\r\nthree"


def test_missing_file_reads_as_no_events(tmp_path):
    assert read_events(tmp_path) == ([], 0)
    assert read_events(tmp_path, 17) == ([], 17)


def test_truncated_last_line_waits_until_it_is_complete(tmp_path):
    w = EventWriter(tmp_path)
    w.emit("step", step=1)
    w.close()
    complete = (tmp_path / EVENTS_FILE).stat().st_size
    _append(tmp_path, '{"t": 1, "event": "step", "st')
    events, offset = read_events(tmp_path)
    assert [e["step"] for e in events] == [1]
    assert offset == complete  # stops before the partial line
    # still incomplete: nothing more, offset unchanged
    assert read_events(tmp_path, offset) == ([], offset)
    _append(tmp_path, 'ep": 2}\n')
    events, offset2 = read_events(tmp_path, offset)
    assert events == [{"t": 1, "event": "step", "step": 2}]
    assert offset2 == (tmp_path / EVENTS_FILE).stat().st_size


def test_reading_in_pieces_gives_every_event_once(tmp_path):
    w = EventWriter(tmp_path)
    seen, offset = [], 0
    for i in range(5):
        w.emit("step", step=i)
        events, offset = read_events(tmp_path, offset)
        seen += events
    w.close()
    assert [e["step"] for e in seen] == [0, 1, 2, 3, 4]


def test_garbage_and_non_object_lines_are_skipped(tmp_path):
    _append(tmp_path, '{"event": "a"}\nthis is not json\n[1, 2]\n\n{"event": "b"}\n')
    events, offset = read_events(tmp_path)
    assert [e["event"] for e in events] == ["a", "b"]
    assert offset == (tmp_path / EVENTS_FILE).stat().st_size


def test_new_writer_after_a_crash_mid_line_starts_a_fresh_line(tmp_path):
    w = EventWriter(tmp_path)
    w.emit("step", step=1)
    w.close()
    _append(tmp_path, '{"t": 1, "event": "step", "step": 2, "lo')  # the writer died here
    w = EventWriter(tmp_path)  # e.g. a resumed trainer
    w.emit("step", step=3)
    w.close()
    events, _ = read_events(tmp_path)
    assert [e["step"] for e in events] == [1, 3]
    text = (tmp_path / EVENTS_FILE).read_text(encoding="utf-8")
    assert text.endswith("\n") and text.count("\n") == 3


def test_new_writer_on_a_clean_file_adds_no_blank_line(tmp_path):
    w = EventWriter(tmp_path)
    w.emit("a")
    w.close()
    w = EventWriter(tmp_path)
    w.emit("b")
    w.close()
    lines = (tmp_path / EVENTS_FILE).read_text(encoding="utf-8").split("\n")
    assert len(lines) == 3 and lines[-1] == "" and all(lines[:2])


def test_follow_replays_then_stops_when_done(tmp_path):
    w = EventWriter(tmp_path)
    w.emit("step", step=1)
    w.emit("step", step=2)
    w.close()
    done = iter([False, True])
    events = list(follow(tmp_path, lambda: next(done), poll=0.001))
    assert [e["step"] for e in events] == [1, 2]
