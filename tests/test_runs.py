"""Run directories and records: create, update, crash detection, find and list."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest
import tomli_w
from tunewiz.core.bookkeeping import runs
from tunewiz.core.bookkeeping.events import EventWriter
from tunewiz.core.bookkeeping.record import Record
from tunewiz.core.config import RunConfig
from tunewiz.core.toml import read_toml, write_toml_atomic


def _cfg(tmp_path, name: str = "") -> RunConfig:
    cfg = RunConfig(name=name)
    cfg.data.path = str(tmp_path / "train.jsonl")
    return cfg


class _Clock:
    """Stands in for runs.datetime so run ids (second resolution) are chosen by the test."""

    def __init__(self, monkeypatch, start: datetime) -> None:
        self.current = start
        clock = self

        class FakeDatetime(datetime):
            @classmethod
            def now(cls, tz=None):
                return datetime.now(tz) if tz is not None else clock.current

        monkeypatch.setattr(runs, "datetime", FakeDatetime)

    def set(self, **kw) -> None:
        self.current = self.current.replace(**kw)


# -- create -------------------------------------------------------------------------


def test_create_run_writes_a_queued_record(home, tmp_path):
    cfg = _cfg(tmp_path, name="My First Run!")
    run_dir = runs.create_run(cfg, home)
    assert run_dir.parent == home / "runs"
    assert run_dir.name.endswith("-my-first-run")
    doc = read_toml(run_dir / runs.RECORD)
    assert doc["run"]["status"] == "queued"
    assert doc["run"]["id"] == run_dir.name
    assert doc["run"]["name"] == "My First Run!"
    assert doc["run"]["created"]
    for section in ("model", "data", "preset", "training", "evaluation"):
        assert section in doc
    assert doc["data"]["path"] == cfg.data.path
    assert RunConfig.from_dict(doc) == cfg
    assert (run_dir.stat().st_mode & 0o777) == 0o700


def test_create_run_without_a_name_is_named_by_its_data_and_preset(home, tmp_path):
    """`tunewiz train` without --name: the history lists it as the wizard's runs are, 'data-preset'."""
    cfg = _cfg(tmp_path)
    run_dir = runs.create_run(cfg, home)
    assert run_dir.name.endswith("-balanced")
    assert runs.read_record(run_dir).to_dict()["run"]["name"] == f"{Path(cfg.data.path).stem}-balanced"
    cfg.data.path = ""
    second = runs.create_run(cfg, home)
    assert runs.read_record(second).to_dict()["run"]["name"] == second.name  # no data to name it by: its id


def test_create_run_merges_extra_sections(home, tmp_path):
    run_dir = runs.create_run(_cfg(tmp_path), home, extra={"run": {"note": "hi"}, "custom": {"a": 1}})
    doc = runs.read_record(run_dir).to_dict()
    assert doc["run"]["note"] == "hi" and doc["run"]["status"] == "queued"
    assert doc["custom"] == {"a": 1}


def test_runs_created_in_the_same_second_get_distinct_ids(home, tmp_path, monkeypatch):
    _Clock(monkeypatch, datetime(2030, 1, 2, 3, 4, 5))
    a = runs.create_run(_cfg(tmp_path), home)
    b = runs.create_run(_cfg(tmp_path), home)
    c = runs.create_run(_cfg(tmp_path), home)
    assert [a.name, b.name, c.name] == [
        "20300102-030405-balanced",
        "20300102-030405-balanced-2",
        "20300102-030405-balanced-3",
    ]


def _assert_unwritable_error(exc_info) -> None:
    msg = str(exc_info.value)
    assert "--home" in msg
    assert "cannot write to the runs directory" in msg


def test_runs_directory_under_a_file_is_a_clear_error(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    home_dir = afile / "home"
    with pytest.raises(runs.RunError) as exc_info:
        runs.create_run(_cfg(tmp_path), home_dir)
    _assert_unwritable_error(exc_info)
    assert afile.read_text() == "not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_runs_directory_without_write_permission_is_a_clear_error(tmp_path):
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        with pytest.raises(runs.RunError) as exc_info:
            runs.create_run(_cfg(tmp_path), parent / "home")
        _assert_unwritable_error(exc_info)
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o700)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_runs_directory_leaves_no_run_directory(home, tmp_path):
    root = home / "runs"
    root.mkdir(parents=True)
    root.chmod(0o500)
    try:
        with pytest.raises(runs.RunError, match="--home"):
            runs.create_run(_cfg(tmp_path), home)
        assert list(root.iterdir()) == []
    finally:
        root.chmod(0o700)


def test_failure_writing_the_record_leaves_no_run_directory(home, tmp_path, monkeypatch):
    def boom(path, doc):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runs, "write_toml_atomic", boom)
    with pytest.raises(OSError, match="No space left"):
        runs.create_run(_cfg(tmp_path), home)
    assert list((home / "runs").iterdir()) == []


# -- records ------------------------------------------------------------------------


def test_update_record_merges_sections(home, tmp_path):
    run_dir = runs.create_run(_cfg(tmp_path), home)
    rec = runs.update_record(run_dir, lambda rec: rec.merge({"run": {"pid": 123}, "results": {"train_loss": 1.5}}))
    assert rec.run.pid == 123 and rec.run.status == "queued"
    runs.update_record(run_dir, lambda rec: rec.merge({"results": {"eval_loss": 2.0}, "data": {"train_rows": 9}}))
    on_disk = runs.read_record(run_dir).to_dict()
    assert on_disk["results"] == {"train_loss": 1.5, "eval_loss": 2.0}
    assert on_disk["data"]["train_rows"] == 9 and on_disk["data"]["path"].endswith("train.jsonl")
    assert on_disk["run"]["pid"] == 123
    # the record stays readable as a config
    assert RunConfig.from_dict(on_disk) == _cfg(tmp_path, name="train-balanced")  # runs.default_name


def test_update_record_with_a_function(home, tmp_path):
    run_dir = runs.create_run(_cfg(tmp_path), home)
    runs.update_record(run_dir, lambda rec: rec.run.update({"resumed": (rec.run.resumed or 0) + 1}))
    runs.update_record(run_dir, lambda rec: rec.run.update({"resumed": (rec.run.resumed or 0) + 1}))
    assert runs.read_record(run_dir).run.resumed == 2


def test_update_record_drops_none_values(home, tmp_path):
    run_dir = runs.create_run(_cfg(tmp_path), home)
    runs.update_record(run_dir, lambda rec: rec.results.update({"a": None, "b": 1}))
    assert runs.read_record(run_dir).to_dict()["results"] == {"b": 1}


def test_set_status_stamps_the_time(home, tmp_path):
    run_dir = runs.create_run(_cfg(tmp_path), home)
    doc = runs.set_status(run_dir, "running", pid=42).to_dict()
    assert doc["run"]["status"] == "running" and doc["run"]["pid"] == 42 and doc["run"]["started"]
    assert "finished" not in doc["run"]
    doc = runs.set_status(run_dir, "completed").to_dict()
    assert doc["run"]["status"] == "completed" and doc["run"]["finished"]


def test_read_record_of_a_non_run(tmp_path):
    with pytest.raises(runs.RunError, match="is not a run"):
        runs.read_record(tmp_path)
    (tmp_path / runs.RECORD).write_text("[run\n", encoding="utf-8")
    with pytest.raises(runs.RunError, match="not valid TOML"):
        runs.read_record(tmp_path)


# -- liveness and crash detection ---------------------------------------------------


def _running_run(home, tmp_path, steps: int = 0, log_lines: int = 0):
    run_dir = runs.create_run(_cfg(tmp_path), home)
    runs.set_status(run_dir, "running", pid=999999)
    if steps:
        w = EventWriter(run_dir)
        w.emit("status", status="running")
        for s in range(1, steps + 1):
            w.emit("step", step=s, loss=1.0 / s)
            w.emit("log", message=f"after step {s}")
        w.close()
    if log_lines:
        (run_dir / runs.LOG).write_text("".join(f"log line {i}\n" for i in range(1, log_lines + 1)))
    return run_dir


def test_trainer_alive_follows_the_lock(home, tmp_path):
    run_dir = runs.create_run(_cfg(tmp_path), home)
    assert not runs.trainer_alive(run_dir)  # no lock file yet
    with runs.hold_trainer_lock(run_dir) as got:
        assert got
        assert runs.trainer_alive(run_dir)
        with runs.hold_trainer_lock(run_dir) as second:
            assert not second  # a second trainer cannot take it
    assert (run_dir / runs.TRAINER_LOCK).exists()
    assert not runs.trainer_alive(run_dir)  # lock file left behind, but nobody holds it


def test_dead_running_trainer_is_marked_crashed(home, tmp_path):
    run_dir = _running_run(home, tmp_path, steps=7, log_lines=30)
    with runs.hold_trainer_lock(run_dir):
        pass  # the trainer took the lock and died
    doc = runs.reconcile(run_dir).to_dict()
    run = doc["run"]
    assert run["status"] == "crashed"
    assert run["last_step"] == 7
    assert "last step 7" in run["failure_reason"]
    assert run["finished"]
    assert run["log_tail"].splitlines() == [f"log line {i}" for i in range(16, 31)]
    assert runs.read_record(run_dir).to_dict()["run"]["status"] == "crashed"  # written, not only returned


def test_crash_without_events_or_log(home, tmp_path):
    run_dir = _running_run(home, tmp_path)
    run = runs.reconcile(run_dir).to_dict()["run"]
    assert run["status"] == "crashed"
    assert run["last_step"] == 0
    assert run["log_tail"] == ""


def test_crash_ignores_a_half_written_last_event(home, tmp_path):
    run_dir = _running_run(home, tmp_path, steps=3)
    with open(run_dir / "events.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"t": 1, "event": "step", "step": 4')  # died mid-line
    assert runs.reconcile(run_dir).to_dict()["run"]["last_step"] == 3


def test_running_trainer_holding_the_lock_stays_running(home, tmp_path):
    run_dir = _running_run(home, tmp_path, steps=2)
    with runs.hold_trainer_lock(run_dir) as got:
        assert got
        doc = runs.reconcile(run_dir).to_dict()
        assert doc["run"]["status"] == "running"
        assert "failure_reason" not in doc["run"]
        assert runs.read_record(run_dir).to_dict()["run"]["status"] == "running"
    # once the lock is released, the next refresh notices
    assert runs.reconcile(run_dir).to_dict()["run"]["status"] == "crashed"


def test_queued_run_gets_a_grace_period_to_start(home, tmp_path):
    run_dir = runs.create_run(_cfg(tmp_path), home)
    assert runs.reconcile(run_dir, grace_s=60).to_dict()["run"]["status"] == "queued"
    assert runs.reconcile(run_dir, grace_s=0).to_dict()["run"]["status"] == "crashed"


def test_queued_run_whose_trainer_took_the_lock_and_died_is_crashed(home, tmp_path):
    run_dir = runs.create_run(_cfg(tmp_path), home)
    with runs.hold_trainer_lock(run_dir):
        assert runs.reconcile(run_dir, grace_s=60).to_dict()["run"]["status"] == "queued"
    assert runs.reconcile(run_dir, grace_s=60).to_dict()["run"]["status"] == "crashed"


@pytest.mark.parametrize("status", ["completed", "stopped", "failed"])
def test_final_runs_are_left_alone(home, tmp_path, status):
    run_dir = runs.create_run(_cfg(tmp_path), home)
    runs.set_status(run_dir, status)
    before = (run_dir / runs.RECORD).read_bytes()
    assert runs.reconcile(run_dir, grace_s=0).to_dict()["run"]["status"] == status
    assert (run_dir / runs.RECORD).read_bytes() == before


def test_tail_lines(tmp_path):
    log = tmp_path / "train.log"
    assert runs.tail_lines(log) == []
    log.write_text("a\nb\nc\n")
    assert runs.tail_lines(log, 2) == ["b", "c"]


# -- find and list ------------------------------------------------------------------


def _three_runs(home, tmp_path, monkeypatch):
    clock = _Clock(monkeypatch, datetime(2030, 1, 2, 3, 4, 5))
    a = runs.create_run(_cfg(tmp_path, "alpha"), home)
    clock.set(minute=10)
    b = runs.create_run(_cfg(tmp_path, "beta"), home)
    clock.set(hour=9)
    c = runs.create_run(_cfg(tmp_path, "gamma"), home)
    return a, b, c


def test_find_run_by_id_prefix_last_and_path(home, tmp_path, monkeypatch):
    a, b, c = _three_runs(home, tmp_path, monkeypatch)
    assert runs.find_run(home, a.name) == a
    assert runs.find_run(home, "20300102-0310") == b  # unique prefix
    assert runs.find_run(home, "gamma") == c  # unique part of the id
    assert runs.find_run(home, "last") == c
    assert runs.find_run(home, str(b)) == b.resolve()


def test_find_run_errors(home, tmp_path, monkeypatch):
    _three_runs(home, tmp_path, monkeypatch)
    with pytest.raises(runs.RunError, match="no run 'zzz'"):
        runs.find_run(home, "zzz")
    with pytest.raises(runs.RunError, match="matches 3 runs") as exc_info:
        runs.find_run(home, "20300102")
    assert "give more of the id" in str(exc_info.value)


def test_find_run_with_no_runs_at_all(home):
    with pytest.raises(runs.RunError, match="no run 'last'"):
        runs.find_run(home, "last")


def test_find_run_prefers_an_exact_id_over_a_longer_one(home, tmp_path, monkeypatch):
    _Clock(monkeypatch, datetime(2030, 1, 2, 3, 4, 5))
    first = runs.create_run(_cfg(tmp_path), home)
    runs.create_run(_cfg(tmp_path), home)  # ...-balanced-2 also starts with the first id
    assert runs.find_run(home, first.name) == first


def test_list_runs_newest_first(home, tmp_path, monkeypatch):
    a, b, c = _three_runs(home, tmp_path, monkeypatch)
    (home / "runs" / "not-a-run").mkdir()  # ignored
    listed = runs.list_runs(home)
    assert [s.id for s in listed] == [c.name, b.name, a.name]
    assert [s.name for s in listed] == ["gamma", "beta", "alpha"]
    assert listed[0].preset == "balanced" and listed[0].data == "train.jsonl"


def test_list_runs_shows_dead_runs_crashed_and_only_reconcile_records_it(home, tmp_path):
    run_dir = _running_run(home, tmp_path)
    (listed,) = runs.list_runs(home)
    assert listed.status == "crashed"
    assert runs.read_record(run_dir).to_dict()["run"]["status"] == "running"  # reading never writes
    runs.reconcile_all(home)
    assert runs.read_record(run_dir).to_dict()["run"]["status"] == "crashed"


def test_list_runs_with_no_runs_directory(home):
    assert runs.list_runs(home) == []


def test_runs_in_the_same_second_are_still_newest_first(home, tmp_path, monkeypatch):
    _Clock(monkeypatch, datetime(2030, 1, 2, 3, 4, 5))
    runs.create_run(_cfg(tmp_path, "zulu"), home)
    newer = runs.create_run(_cfg(tmp_path, "alpha"), home)
    assert runs.find_run(home, "last") == newer
    assert runs.list_runs(home)[0].id == newer.name


def test_summarize_metric(tmp_path):
    doc = Record.from_dict({"run": {"id": "r"}, "results": {"finetuned": {"field_match": 0.75, "eval_loss": 1.25}}})
    s = runs.summarize(tmp_path, doc)
    assert s.metric == "fields 75%" and s.eval_loss == 1.25
    s = runs.summarize(tmp_path, Record.from_dict({"results": {"finetuned": {"exact_match": 0.5}}}))
    assert s.metric == "exact 50%" and s.id == tmp_path.name and s.status == "?"


# -- home ---------------------------------------------------------------------------


def test_home_prefers_override_then_env_then_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEWIZ_HOME", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert runs.home(tmp_path / "flag") == (tmp_path / "flag").resolve()
    assert runs.home() == (tmp_path / "env").resolve()
    monkeypatch.delenv("TUNEWIZ_HOME")
    assert runs.home() == tmp_path / "xdg" / "tunewiz"


# -- atomic TOML writes ---------------------------------------------------------------


def test_write_toml_atomic_replaces_the_file(tmp_path):
    path = tmp_path / "run.toml"
    write_toml_atomic(path, {"run": {"status": "queued"}})
    write_toml_atomic(path, {"run": {"status": "running", "path": tmp_path, "loss": float("nan")}})
    doc = read_toml(path)
    assert doc == {"run": {"status": "running", "path": str(tmp_path), "loss": "nan"}}
    assert [p.name for p in tmp_path.iterdir()] == ["run.toml"]


def test_run_toml_writes_short_arrays_on_one_line_and_reads_back_the_same(tmp_path):
    path = tmp_path / "run.toml"
    doc = {
        "training": {"target_modules": ["q_proj", "v_proj"], "steps": [1, 2, 3]},
        "results": {"long": [f"answer number {i}" for i in range(8)], "odd": ["a]b", "c"], "rows": [[1, 2]]},
    }
    write_toml_atomic(path, doc)
    text = path.read_text()
    assert 'target_modules = ["q_proj", "v_proj"]\n' in text and "steps = [1, 2, 3]\n" in text
    assert max(len(line) for line in text.splitlines()) <= 76  # the long array stays one element a line
    assert read_toml(path) == doc


def test_write_toml_atomic_keeps_the_old_file_when_serialising_fails(tmp_path):
    path = tmp_path / "run.toml"
    write_toml_atomic(path, {"run": {"status": "queued"}})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_toml_atomic(path, {"run": {"status": "running", "bad": object()}})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.toml"]


def test_write_toml_atomic_cleans_up_when_the_rename_fails(tmp_path, monkeypatch):
    path = tmp_path / "run.toml"
    path.write_text(tomli_w.dumps({"run": {"status": "queued"}}))
    before = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="Input/output"):
        write_toml_atomic(path, {"run": {"status": "running"}})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.toml"]


def _failed_run(run: dict, schema: int = 0) -> Record:
    return Record.from_dict({"schema": schema, "run": run})


def test_the_failure_kind_is_a_field_and_an_older_record_reads_the_same():
    reason = "CUDA out of memory. Out of memory. Try, in this order: a smaller per_device_batch_size ..."
    kind = runs.failure_kind
    assert kind(_failed_run({"status": "failed", "failure_kind": runs.OUT_OF_MEMORY}, schema=1)) == runs.OUT_OF_MEMORY
    assert kind(_failed_run({"status": "failed", "failure_reason": reason})) == runs.OUT_OF_MEMORY  # older record
    assert kind(_failed_run({"status": "failed", "failure_reason": "Disk full: checkpoint-3 needs"})) == runs.DISK_FULL
    assert kind(_failed_run({"status": "failed", "failure_reason": "ValueError: Out of memory? no"})) == ""
    assert kind(_failed_run({"status": "crashed", "failure_reason": reason})) == ""
    assert set(runs.RESUMABLE) <= set(runs.FINAL) and set(runs.COLOURS) >= {*runs.ACTIVE, *runs.RESUMABLE}
