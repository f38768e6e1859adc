"""A damaged or missing run.toml never makes a run vanish, and a full disk never hides one.

Run directories are made by hand with small fake files (events, an adapter config, a checkpoint's
trainer state): no model, no training.
"""

from __future__ import annotations

import asyncio
import errno
import json
from pathlib import Path

import pytest
from tunewiz.core.bookkeeping import checkpoints, repair, runs
from tunewiz.core.config import RunConfig
from tunewiz.core.toml import read_toml
from tunewiz.tui import cli

KINDS = ["truncated", "invalid", "empty", "missing"]
PROBLEM = {
    "truncated": "stops mid-line (cut off while being written?)",
    "invalid": "run.toml is not valid TOML at line 3: Invalid value",
    "empty": "run.toml is empty (cut off while being written?)",
    "missing": "run.toml is missing",
}
BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _events(run_dir: Path, steps: int = 8, end: dict | None = None) -> None:
    ev = [
        {"t": 1000.0, "event": "status", "status": "preparing", "message": "loading"},
        {"t": 1001.0, "event": "status", "status": "running", "total_steps": 12},
        {"t": 1002.0, "event": "train_begin", "max_steps": 12, "start_step": 0, "epochs": 3.0},
    ]
    ev += [{"t": 1002.0 + s, "event": "step", "step": s, "max_steps": 12, "loss": 2.0 / s} for s in range(1, steps + 1)]
    ev.append({"t": 1020.0, "event": "checkpoint", "step": steps})
    if end:
        ev.append({"t": 1030.0, "event": "status", **end})
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in ev), encoding="utf-8")


def make_run(home: Path, tmp_path: Path, damage: str | None = None, end: dict | None = None) -> Path:
    """A run that trained 8 of 12 steps, saved an adapter and checkpoint-8, then lost (or kept) its record."""
    cfg = RunConfig(name="tickets")
    cfg.data.path = str(tmp_path / "tickets.jsonl")
    cfg.training.learning_rate = 1e-4
    run_dir = runs.create_run(cfg, home)
    runs.set_status(run_dir, "running", pid=999999)  # its trainer is gone: nobody holds trainer.lock
    _events(run_dir, end=end)
    (run_dir / "train.log").write_text("step 8/12 loss 0.25\n", encoding="utf-8")
    adapter = run_dir / "adapter"
    adapter.mkdir()
    conf = {
        "base_model_name_or_path": BASE,
        "r": 16,
        "lora_alpha": 32,
        "lora_dropout": 0.0,
        "target_modules": ["q_proj"],
    }
    (adapter / "adapter_config.json").write_text(json.dumps(conf), encoding="utf-8")
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    ckpt = run_dir / "checkpoints" / "checkpoint-8"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 8, "max_steps": 12}), encoding="utf-8")
    checkpoints.mark_complete(ckpt, 8)
    if damage:
        damage_record(run_dir, damage)
    return run_dir


def damage_record(run_dir: Path, kind: str) -> None:
    record = run_dir / runs.RECORD
    text = record.read_text(encoding="utf-8")
    if kind == "truncated":  # a writer that died mid-way, inside the [data] table
        cut = text.index("path = ", text.index("[data]")) + 12
        record.write_text(text[:cut], encoding="utf-8")
    elif kind == "invalid":
        lines = text.splitlines(keepends=True)
        lines[2] = "status = running\n"  # a hand edit without quotes
        record.write_text("".join(lines), encoding="utf-8")
    elif kind == "empty":
        record.write_text("", encoding="utf-8")
    else:
        record.unlink()


def damaged_copies(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob(f"{runs.DAMAGED_COPY}*"))


# -- listing ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_damaged_run_is_listed_with_what_is_wrong_and_what_is_left(home, tmp_path, kind):
    healthy = runs.create_run(RunConfig(name="other"), home)
    run_dir = make_run(home, tmp_path, kind)
    listed = {r.id: r for r in runs.list_runs(home)}
    assert set(listed) == {healthy.name, run_dir.name}
    r = listed[run_dir.name]
    assert r.status == runs.DAMAGED == "damaged"
    assert PROBLEM[kind] in r.problem
    left = "\n".join(r.left)
    assert f"adapter/ (LoRA rank 16 on {BASE})" in left
    assert "1 checkpoint, newest at step 8" in left
    assert "events.jsonl with 8 steps (last: step 8/12, loss 0.2500), last status running" in left
    assert "train.log (20 bytes)" in left
    assert r.name == "tickets" and r.model == BASE
    assert listed[healthy.name].status == "queued"


def test_a_damaged_run_is_found_by_id_prefix_and_last(home, tmp_path):
    run_dir = make_run(home, tmp_path, "missing")
    assert runs.find_run(home, run_dir.name) == run_dir
    assert runs.find_run(home, run_dir.name[:15]) == run_dir
    assert runs.find_run(home, "last") == run_dir  # its time comes from its id
    assert runs.find_run(home, str(run_dir)) == run_dir.resolve()


def test_read_record_says_damaged_and_how_to_rebuild(home, tmp_path):
    run_dir = make_run(home, tmp_path, "invalid")
    with pytest.raises(runs.RunError) as exc_info:
        runs.read_record(run_dir)
    msg = str(exc_info.value)
    assert "is damaged" in msg and "not valid TOML at line 3" in msg
    assert f"tunewiz repair {run_dir.name}" in msg
    assert "not written by tunewiz" not in msg


def test_a_record_cut_at_a_line_end_is_damaged_too(home, tmp_path):
    run_dir = make_run(home, tmp_path)
    record = run_dir / runs.RECORD
    text = record.read_text(encoding="utf-8")
    record.write_text(text[: text.index("[model]")], encoding="utf-8")  # valid TOML, nothing after [run]
    (r,) = runs.list_runs(home)
    assert r.status == "damaged" and "[model], [data] and [training] are missing" in r.problem


def test_a_directory_without_any_run_file_is_not_a_run(home, tmp_path):
    make_run(home, tmp_path, "missing")
    (runs.runs_root(home) / "scratch").mkdir()
    (runs.runs_root(home) / "scratch" / "notes.txt").write_text("mine")
    assert [r.status for r in runs.list_runs(home)] == ["damaged"]


# -- the command line -------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_runs_and_show_print_a_damaged_run(home, tmp_path, kind, capsys):
    run_dir = make_run(home, tmp_path, kind)
    assert cli.main(["--home", str(home), "runs"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(run_dir.name))
    assert row.split()[1] == "damaged"
    assert (
        f"1 run's record is damaged: `tunewiz show {run_dir.name}` says what is left; "
        f"`tunewiz repair {run_dir.name}` rebuilds it"
    ) in out

    assert cli.main(["--home", str(home), "show", run_dir.name]) == 2
    out = capsys.readouterr().out
    assert f"run {run_dir.name}: damaged" in out
    assert PROBLEM[kind] in out
    assert "1 checkpoint, newest at step 8" in out and "events.jsonl with 8 steps" in out
    assert f"`tunewiz repair {run_dir.name}` rebuilds run.toml" in out

    assert cli.main(["--home", str(home), "show", "last", "--json"]) == 2
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "damaged" and PROBLEM[kind] in shown["problem"]


def test_runs_json_carries_the_damage(home, tmp_path, capsys):
    make_run(home, tmp_path, "empty")
    assert cli.main(["--home", str(home), "runs", "--json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["status"] == "damaged" and "empty" in item["problem"] and item["left"]


@pytest.mark.parametrize("kind", KINDS)
def test_repair_rebuilds_a_record_that_reads_and_lists_normally(home, tmp_path, kind, capsys):
    run_dir = make_run(home, tmp_path, kind)
    before = (run_dir / runs.RECORD).read_bytes() if kind != "missing" else None
    assert cli.main(["--home", str(home), "repair", run_dir.name]) == 0
    out = capsys.readouterr().out
    assert f"repaired {run_dir.name}:" in out and "wrote run.toml" in out
    assert f"run {run_dir.name}: crashed" in out  # the record's summary, as `show` prints it

    rec = runs.read_record(run_dir)
    doc = rec.to_dict()
    run = doc["run"]
    assert run["status"] == "crashed"  # it was running and its trainer is gone
    assert run["last_step"] == 8 and run["repaired"]
    assert {"events.jsonl", "adapter/adapter_config.json", "directory name"} <= set(run["repaired_from"])
    assert doc["training"]["lora_r"] == 16 and doc["training"]["total_steps"] == 12
    assert doc["artifacts"]["adapter"] == str(run_dir / "adapter")
    RunConfig.from_dict(doc)  # every key it wrote is one a config knows
    (listed,) = runs.list_runs(home)
    assert listed.status == "crashed" and not listed.problem

    if before is None:
        assert damaged_copies(run_dir) == []
    else:
        (copy,) = damaged_copies(run_dir)
        assert copy.read_bytes() == before  # the damaged file is kept as it was
        assert f"kept the damaged record as {copy.name}" in out
    if kind in ("truncated", "invalid"):  # the readable lines of the old record are kept
        assert "run.toml" in run["repaired_from"]
        assert doc["model"]["id"] == "bundled:smollm2-135m-instruct"
        if kind == "invalid":  # one bad line: everything else is read back
            assert doc["training"]["learning_rate"] == 1e-4
            assert doc["data"]["path"] == str(tmp_path / "tickets.jsonl") and repair.rerunnable(rec)
        else:  # cut off in [data]: what came after it is not known, and says so
            assert "data.path" in run["repair_unknown"] and "training.learning_rate" in run["repair_unknown"]
    else:  # nothing but what the run left: the adapter names its base; the data is not known
        assert doc["model"]["id"] == BASE
        assert "data.path" in run["repair_unknown"] and not repair.rerunnable(rec)
        assert "it cannot be re-run or resumed until run.toml names the model and the data" in out

    assert cli.main(["--home", str(home), "repair", run_dir.name]) == 0  # twice: nothing more to do
    assert "reads fine; nothing to repair" in capsys.readouterr().out
    assert cli.main(["--home", str(home), "show", run_dir.name]) == 0


def test_repair_of_a_completed_run_takes_its_results_from_the_events(home, tmp_path):
    results = {"train_loss": 0.42, "wall_time_s": 300.0}
    run_dir = make_run(home, tmp_path, "missing", end={"status": "completed", "results": results})
    rec, done = repair.repair(run_dir)
    assert rec.run.status == "completed" and rec.to_dict()["results"] == results
    assert "status completed: the last status event in events.jsonl is 'completed'" in done
    (r,) = runs.list_runs(home)
    assert r.status == "completed" and r.train_loss == 0.42


def test_repair_keeps_a_live_trainer_running(home, tmp_path):
    run_dir = make_run(home, tmp_path, "empty")
    with runs.hold_trainer_lock(run_dir):
        rec, _ = repair.repair(run_dir)
        assert rec.run.status == "running"
    assert runs.reconcile(run_dir).to_dict()["run"]["status"] == "crashed"  # once it is gone, as for any run


def test_repair_takes_an_unfinished_write_of_the_record(home, tmp_path):
    run_dir = make_run(home, tmp_path)
    text = (run_dir / runs.RECORD).read_text(encoding="utf-8")
    (run_dir / ".run.toml.x1y2.tmp").write_text(text, encoding="utf-8")  # a writer killed before its rename
    damage_record(run_dir, "missing")
    assert ".run.toml.x1y2.tmp (an unfinished write of the record)" in runs.list_runs(home)[0].left
    rec, _ = repair.repair(run_dir)
    doc = rec.to_dict()
    assert ".run.toml.x1y2.tmp" in doc["run"]["repaired_from"]
    assert doc["data"]["path"] == str(tmp_path / "tickets.jsonl") and repair.rerunnable(rec)
    assert RunConfig.from_dict(doc).training.learning_rate == 1e-4
    assert (run_dir / ".run.toml.x1y2.tmp").exists()  # nothing of the user's is deleted


def test_repair_that_cannot_write_changes_nothing(home, tmp_path, monkeypatch, capsys):
    run_dir = make_run(home, tmp_path, "invalid")
    before = (run_dir / runs.RECORD).read_bytes()

    def full(path, doc):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(repair, "write_toml_atomic", full)
    assert cli.main(["--home", str(home), "repair", run_dir.name]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Nothing was changed" in err
    assert (run_dir / runs.RECORD).read_bytes() == before and damaged_copies(run_dir) == []


def test_repair_of_something_that_is_not_a_run(tmp_path):
    with pytest.raises(runs.RunError, match="is not a run"):
        repair.repair(tmp_path)


# -- a full disk ------------------------------------------------------------------------


def _running(home: Path, tmp_path: Path, log: str = "step 8/12 loss 0.25\n") -> Path:
    run_dir = make_run(home, tmp_path)
    (run_dir / "train.log").write_text(log, encoding="utf-8")
    return run_dir


def test_a_full_disk_never_hides_a_crashed_run(home, tmp_path, monkeypatch, capsys):
    run_dir = _running(home, tmp_path)

    def full(path, doc):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs, "write_toml_atomic", full)
    (r,) = runs.list_runs(home)
    assert r.status == "crashed"  # as a reader sees it; listing writes nothing in any case
    reconciled = runs.reconcile(run_dir)
    assert "not yet saved in run.toml: No space left on device" in reconciled.run.failure_reason
    assert runs.read_record(run_dir).to_dict()["run"]["status"] == "running"  # nothing could be written
    assert cli.main(["--home", str(home), "runs"]) == 0
    out = capsys.readouterr().out
    assert "no runs yet" not in out and "crashed" in out
    assert cli.main(["--home", str(home), "show", run_dir.name]) == 0
    assert f"run {run_dir.name}: crashed" in capsys.readouterr().out

    monkeypatch.undo()  # space is back: the next reconcile writes it
    runs.reconcile(run_dir)
    (r,) = runs.list_runs(home)
    on_disk = runs.read_record(run_dir).to_dict()["run"]
    assert r.status == on_disk["status"] == "crashed"
    assert "not yet saved" not in on_disk["failure_reason"]


@pytest.mark.parametrize(
    "line",
    [
        "OSError: [Errno 28] No space left on device: '/runs/x/checkpoints/checkpoint-9/optimizer.pt'",
        "safetensors_rust.SafetensorError: Error while serializing: I/O error (os error 28)",
    ],
)
def test_a_crash_on_a_full_disk_says_so_and_what_to_do(home, tmp_path, line):
    run_dir = _running(home, tmp_path, f"step 8/12 loss 0.25\nTraceback (most recent call last):\n{line}\n")
    reason = runs.reconcile(run_dir).to_dict()["run"]["failure_reason"]
    assert reason.startswith("the disk was full: the training process ended at step 8")
    assert f"Free some space, then `tunewiz resume {run_dir.name}` continues from the newest complete checkpoint" in (
        reason
    )


def test_torchs_short_write_counts_as_a_full_disk_only_when_space_is_short(home, tmp_path, monkeypatch):
    torn = "RuntimeError: [enforce fail at inline_container.cc:626] . unexpected pos 1536 vs 1432\n"
    monkeypatch.setattr(checkpoints, "free_bytes", lambda path: 50 << 30)
    roomy = _running(home, tmp_path, torn)
    assert "disk was full" not in runs.reconcile(roomy).to_dict()["run"]["failure_reason"]
    monkeypatch.setattr(checkpoints, "free_bytes", lambda path: 1 << 20)
    full = _running(home, tmp_path, torn)
    assert "the disk was full" in runs.reconcile(full).to_dict()["run"]["failure_reason"]


# -- the history screen -----------------------------------------------------------------


def test_history_lists_a_damaged_run_and_repairs_it(home, tmp_path):
    from textual.widgets import DataTable, Static
    from tunewiz.tui.app import create_app

    healthy = runs.create_run(RunConfig(name="fine-run"), home)
    runs.set_status(healthy, "completed")
    run_dir = make_run(home, tmp_path, "invalid")

    async def wait_until(pilot, predicate, timeout: float = 600.0) -> None:
        for _ in range(int(timeout / 0.1)):
            if predicate():
                return
            await pilot.pause(0.1)
        raise AssertionError(f"condition not met within {timeout}s")

    async def run() -> None:
        app = create_app(home, start="history")
        async with app.run_test(size=(80, 24)) as pilot:
            table = app.screen.query_one("#runs", DataTable)
            await wait_until(pilot, lambda: table.row_count == 2)

            def status_of(name: str) -> str:
                return next(str(table.get_row_at(i)[1]) for i in range(2) if table.get_row_at(i)[2] == name)

            assert "damaged" in status_of("tickets") and "completed" in status_of("fine-run")
            table.move_cursor(row=next(i for i in range(2) if table.get_row_at(i)[2] == "tickets"))
            await pilot.pause(0.2)
            detail = str(app.screen.query_one("#history-detail", Static).render())
            assert "not valid TOML at line 3" in detail and "f rebuilds run.toml" in detail
            await pilot.press("enter")  # no run screen for a record that cannot be read, and no crash
            await pilot.pause(0.2)
            assert type(app.screen).__name__ == "HistoryScreen"
            await pilot.press("f")
            await wait_until(pilot, lambda: "crashed" in status_of("tickets"))
            assert "damaged" not in str(app.screen.query_one("#history-title").render())
            await pilot.press("enter")  # now it has a record to show
            await wait_until(pilot, lambda: type(app.screen).__name__ == "RunScreen")

    asyncio.run(run())
    assert runs.read_record(run_dir).to_dict()["run"]["repaired"]
    assert len(damaged_copies(run_dir)) == 1
    assert read_toml(run_dir / runs.RECORD)["run"]["status"] == "crashed"
