"""Small holes a careful user would fall into (issue 24): two submits at the same moment, a completed run
whose adapter was deleted, resuming a record that cannot be resumed, resuming while the disk is full.

Run directories are made by hand: no model, no training."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from tunewiz.core.bookkeeping import checkpoints, repair, runs
from tunewiz.core.bookkeeping.record import Record
from tunewiz.core.config import RunConfig
from tunewiz.core.data import dataset as data
from tunewiz.core.planning import presets
from tunewiz.core.planning.hardware import GPU, Hardware
from tunewiz.core.training import launcher
from tunewiz.tui import cli

from tests.conftest import chat_row, write_jsonl

ONE_GPU = Hardware(gpus=[GPU(0, "A100", 80.0, 79.0, "8.0", True)], cpu_physical_cores=16, ram_available_gb=128)
TWO_GPUS = Hardware(
    gpus=[GPU(0, "A100", 80.0, 20.0, "8.0", True), GPU(1, "A100", 80.0, 79.0, "8.0", True)],
    cpu_physical_cores=16,
    ram_available_gb=128,
)


# -- a. two submits at the same moment see each other ---------------------------------------------


@pytest.mark.parametrize(
    ("hw", "places", "warned"), [(TWO_GPUS, ["cuda:0", "cuda:1"], 0), (ONE_GPU, ["cuda:0"] * 2, 1)]
)
def test_two_submits_at_the_same_moment_see_each_other(home, tmp_path, monkeypatch, hw, places, warned):
    """Both were checked while nothing trained. Created at the same moment, the second still sees the
    first: on two GPUs it is planned onto the other one, on one GPU it is told it shares."""
    cfg = presets.build_config("balanced")
    cfg.data.path = str(write_jsonl(tmp_path / "d.jsonl", [chat_row(f"q{i}", f"a{i}") for i in range(8)]))
    examples = data.read(cfg.data.path).examples
    plan = launcher.first_plan(cfg, home, examples, hw, {})
    checked = launcher.Checked(plan, None, False, hw, [], {}, examples)
    real = launcher.busy_devices

    def slow_busy(home_dir):  # widens the moment between reading what is taken and creating the record
        out = real(home_dir)
        time.sleep(0.3)
        return out

    monkeypatch.setattr(launcher, "busy_devices", slow_busy)
    both = threading.Barrier(2)
    made: list[tuple] = []

    def submit():
        both.wait()
        made.append(launcher.create(cfg, home, checked))

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(made) == 2
    placements = sorted(runs.read_record(run_dir).to_dict()["plan"]["placement"][0] for run_dir, _ in made)
    assert placements == places
    first, second = made
    said = [line for _, lines in made for line in lines]
    assert len(said) == warned
    if warned:
        assert said == [f"another run ({first[0].name}) is training on this GPU 0: both will run at about half speed"]
        assert not first[1] and second[1] == said


# -- b. a completed run whose adapter was deleted ---------------------------------------------------


def completed_run(home: Path, tmp_path: Path, checkpoint: bool = False) -> Path:
    """A completed run whose adapter/ was then deleted (and, with `checkpoint`, whose checkpoint-8 is kept)."""
    cfg = RunConfig(name="tickets")
    cfg.data.path = str(tmp_path / "tickets.jsonl")
    run_dir = runs.create_run(cfg, home)
    runs.update_record(run_dir, lambda rec: rec.artifacts.update({"adapter": str(run_dir / runs.ADAPTER)}))
    runs.set_status(run_dir, "completed")
    if checkpoint:
        ckpt = run_dir / runs.CHECKPOINTS / "checkpoint-8"
        ckpt.mkdir(parents=True)
        (ckpt / "adapter_config.json").write_text(json.dumps({"r": 16}), encoding="utf-8")
        (ckpt / "adapter_model.safetensors").write_bytes(b"\0" * 64)
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 8}), encoding="utf-8")
        checkpoints.mark_complete(ckpt, 8)
    (run_dir / runs.ADAPTER).mkdir()
    (run_dir / runs.ADAPTER / "adapter_config.json").write_text("{}", encoding="utf-8")
    shutil.rmtree(run_dir / runs.ADAPTER)  # the user tidied up
    return run_dir


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_listing_and_show_flag_a_completed_run_whose_adapter_was_deleted_and_write_nothing(home, tmp_path, capsys):
    run_dir = completed_run(home, tmp_path)
    before = snapshot(run_dir)
    [summary] = runs.list_runs(home)
    assert summary.status == "completed"
    assert summary.note.startswith("the adapter is missing: adapter/ is gone (deleted?)")
    assert "train again with `tunewiz train --config` and this run's run.toml" in summary.note
    assert cli.main(["runs"]) == 0
    assert f"{run_dir.name}: the adapter is missing" in capsys.readouterr().out
    assert cli.main(["show", run_dir.name]) == 0
    assert "  problem: the adapter is missing: adapter/ is gone" in capsys.readouterr().out
    assert snapshot(run_dir) == before  # looking never writes


def test_a_kept_checkpoint_is_named_as_where_the_adapter_still_is(home, tmp_path):
    run_dir = completed_run(home, tmp_path, checkpoint=True)
    note = runs.summary_of(run_dir).note
    assert "checkpoints/checkpoint-8 still holds it as of step 8: copy its adapter_config.json" in note


def test_a_run_with_its_adapter_or_one_that_never_saved_one_has_no_note(home, tmp_path):
    run_dir = completed_run(home, tmp_path)
    (run_dir / runs.ADAPTER).mkdir()
    (run_dir / runs.ADAPTER / "adapter_config.json").write_text("{}", encoding="utf-8")
    assert runs.summary_of(run_dir).note == ""
    crashed = runs.create_run(RunConfig(name="crashed"), home)
    runs.set_status(crashed, "failed")
    assert runs.summary_of(crashed).note == ""


def test_repair_says_the_adapter_is_missing_instead_of_reads_fine(home, tmp_path, capsys):
    run_dir = completed_run(home, tmp_path)
    assert cli.main(["repair", run_dir.name]) == 1
    out = capsys.readouterr().out
    assert f"{run_dir.name}: run.toml reads fine, but the adapter is missing" in out and "nothing to repair" not in out


def test_a_rebuilt_record_of_a_completed_run_says_its_adapter_is_missing(home, tmp_path):
    run_dir = completed_run(home, tmp_path)
    (run_dir / runs.EVENTS).write_text(json.dumps({"t": 1.0, "event": "status", "status": "completed"}) + "\n")
    (run_dir / runs.RECORD).unlink()
    rec, done = repair.repair(run_dir)
    assert rec.run.status == "completed"
    assert any(line.startswith("the adapter is missing") for line in done)


# -- c. resuming a record that does not say what to train ---------------------------------------------


def crashed_run(home: Path, tmp_path: Path, drop: list[tuple[str, str]]) -> Path:
    data_file = write_jsonl(tmp_path / "tickets.jsonl", [chat_row("q", "a")])
    cfg = RunConfig(name="repaired")
    cfg.data.path = str(data_file)
    run_dir = runs.create_run(cfg, home)

    def forget(rec: Record) -> None:
        rec.run.update({"status": "crashed"})
        for section, key in drop:
            getattr(rec, section).drop(key)

    runs.update_record(run_dir, forget)
    return run_dir


@pytest.mark.parametrize(
    ("drop", "says"),
    [
        ([("model", "id")], "its record does not say [model] id (a repaired record may not know them)"),
        ([("data", "path")], "its record does not say [data] path"),
        ([("model", "id"), ("data", "path")], "does not say [model] id or [data] path"),
    ],
)
def test_resume_of_a_record_without_model_or_data_refuses_before_launching(
    home, tmp_path, capsys, monkeypatch, drop, says
):
    run_dir = crashed_run(home, tmp_path, drop)
    monkeypatch.setattr(launcher, "start", lambda *a, **k: pytest.fail("launched a run that cannot train"))
    before = (run_dir / runs.RECORD).read_bytes()
    assert cli.main(["resume", run_dir.name]) == 2
    err = capsys.readouterr().err
    assert f"{run_dir.name} cannot be resumed: " in err and says in err
    assert f"to {run_dir / runs.RECORD} by hand" in err and f"`tunewiz resume {run_dir.name}` again" in err
    assert (run_dir / runs.RECORD).read_bytes() == before  # still crashed, not queued


def test_resume_when_the_data_file_is_gone_refuses_and_says_where_it_was(home, tmp_path, capsys, monkeypatch):
    run_dir = crashed_run(home, tmp_path, [])
    (tmp_path / "tickets.jsonl").unlink()
    monkeypatch.setattr(launcher, "start", lambda *a, **k: pytest.fail("launched a run that cannot train"))
    assert cli.main(["resume", run_dir.name]) == 2
    assert f"its data {tmp_path / 'tickets.jsonl'} is gone. Put the file back" in capsys.readouterr().err


# -- d. resume while the disk is still full ---------------------------------------------------------


def full_disk_run(home: Path, tmp_path: Path) -> Path:
    run_dir = crashed_run(home, tmp_path, [])
    runs.update_record(
        run_dir, lambda rec: rec.run.update({"failure_reason": "the disk was full: ... Free some space"})
    )
    return run_dir


def no_spawn(monkeypatch, exc: OSError | None = None) -> None:
    from tunewiz.core import detach

    def spawn(*args, **kwargs):
        if exc is None:
            pytest.fail("started a trainer on a full disk")
        raise exc

    monkeypatch.setattr(detach, "spawn", spawn)


def test_resume_on_a_still_full_disk_refuses_and_changes_nothing(home, tmp_path, capsys, monkeypatch):
    run_dir = full_disk_run(home, tmp_path)
    before = snapshot(run_dir)
    monkeypatch.setattr(checkpoints, "free_bytes", lambda path: 3 << 20)
    no_spawn(monkeypatch)
    assert cli.main(["resume", run_dir.name]) == 2
    err = capsys.readouterr().err
    assert f"the disk of {run_dir} is still full: 3 MiB free, and resuming needs at least 16 MiB" in err
    assert f"then `tunewiz resume {run_dir.name}` again; nothing was changed" in err and "Traceback" not in err
    assert snapshot(run_dir) == before and runs.read_record(run_dir).to_dict()["run"]["status"] == "crashed"


def test_a_record_that_cannot_be_written_is_an_error_not_a_traceback(home, tmp_path, capsys, monkeypatch):
    run_dir = full_disk_run(home, tmp_path)
    before = (run_dir / runs.RECORD).read_bytes()
    no_spawn(monkeypatch)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runs, "write_toml_atomic", full)
    assert cli.main(["resume", run_dir.name]) == 2
    err = capsys.readouterr().err
    assert f"could not resume {run_dir.name}: the disk is full (No space left on device)" in err
    assert (run_dir / runs.RECORD).read_bytes() == before
    assert not (run_dir / launcher.BEFORE_RESUME).exists()


def test_a_trainer_that_cannot_start_leaves_the_reason_not_a_queued_run(home, tmp_path, capsys, monkeypatch):
    run_dir = full_disk_run(home, tmp_path)
    no_spawn(monkeypatch, OSError(28, "No space left on device"))
    assert cli.main(["resume", run_dir.name]) == 2
    assert "the trainer could not start: the disk is full" in capsys.readouterr().err
    run = runs.read_record(run_dir).to_dict()["run"]
    assert run["status"] == "failed" and run["failure_reason"].startswith("the trainer could not start: the disk is")
    assert f"`tunewiz resume {run_dir.name}` continues" in run["failure_reason"]


def test_when_not_even_the_failure_can_be_written_the_record_is_put_back(home, tmp_path, capsys, monkeypatch):
    """The disk is too full to record why the trainer did not start: the record goes back to how it was
    before the resume (a rename needs no space): crashed, with its reason, never queued with nothing running."""
    run_dir = full_disk_run(home, tmp_path)
    before = (run_dir / runs.RECORD).read_bytes()
    no_spawn(monkeypatch, OSError(28, "No space left on device"))
    real = runs.write_toml_atomic
    writes: list[int] = []

    def fills_up(*args, **kwargs):  # the resume's own write fits; the next one does not
        writes.append(1)
        if len(writes) > 1:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(runs, "write_toml_atomic", fills_up)
    assert cli.main(["resume", run_dir.name]) == 2
    assert "run.toml is as it was before the resume: it could not be updated" in capsys.readouterr().err
    assert (run_dir / runs.RECORD).read_bytes() == before
    assert runs.read_record(run_dir).to_dict()["run"]["status"] == "crashed"
    assert not (run_dir / launcher.BEFORE_RESUME).exists()
