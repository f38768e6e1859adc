"""Records are data, never instructions (issue 24, 26): looking at runs (`show`, `runs`, the history, the
wizard's start) writes nothing and starts nothing, whatever a record says; a notify program runs only for
this machine's own run, from the one place that reconciles, with an environment that keeps secrets out.
"""

import asyncio
import hashlib
import os
import sys
import time
from pathlib import Path

import pytest
from tunewiz.core.bookkeeping import notify, runs
from tunewiz.core.bookkeeping.events import EventWriter
from tunewiz.core.config import RunConfig
from tunewiz.core.toml import write_toml_atomic

from tests.conftest import HANG_S
from tests.test_cli import run_cli


def planted(home: Path, tmp_path: Path, host: str | None, name: str) -> tuple[Path, Path]:
    """A run whose record says `running` with no trainer alive and a notify command that would leave a
    marker file (and the caller's HF_TOKEN in it); (the run directory, the marker)."""
    marker = tmp_path / f"{name}-stolen"
    cfg = RunConfig(name=name)
    cfg.data.path = str(tmp_path / "train.jsonl")
    cfg.notify.command = [
        sys.executable,
        "-c",
        f"import os; open({str(marker)!r}, 'w').write(os.environ.get('HF_TOKEN', ''))",
    ]
    run_dir = runs.create_run(cfg, home)
    doc = runs.read_record(run_dir).to_dict()
    doc["run"]["status"] = "running"
    doc["run"]["pid"] = 999999
    if host is not None:
        doc["run"]["host"] = host
    write_toml_atomic(run_dir / runs.RECORD, doc)
    w = EventWriter(run_dir)
    w.emit("step", step=2, loss=1.5)
    w.close()
    return run_dir, marker


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` with a hash of its bytes (the record lock file's existence aside)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != runs.RECORD_LOCK
    }


@pytest.fixture
def foreign_and_dead(home, tmp_path):
    """Two runs no trainer is behind: one copied from another machine, one of this machine's."""
    foreign, foreign_marker = planted(home, tmp_path, "other-gpu-box", "copied")
    dead, dead_marker = planted(home, tmp_path, None, "local")
    return foreign, dead, [foreign_marker, dead_marker]


def no_marker_after(markers: list[Path], wait_s: float = 1.5) -> None:
    time.sleep(wait_s)  # a notify program runs detached: give one the time it would need
    assert not any(m.exists() for m in markers), "a viewer started a record's notify program"


def test_show_and_runs_run_nothing_and_write_nothing(home, foreign_and_dead):
    foreign, dead, markers = foreign_and_dead
    before = snapshot(home)
    env = {"TUNEWIZ_HOME": str(home), "HF_TOKEN": "s3cret"}
    for args in (["show", str(foreign)], ["show", foreign.name], ["show", dead.name], ["runs"], ["runs", "--json"]):
        proc = run_cli(*args, env=env)
        assert proc.returncode == 0, proc.stderr
    no_marker_after(markers)
    assert snapshot(home) == before
    listed = run_cli("runs", env=env).stdout
    assert "on other-gpu" in listed  # another machine's run: where it runs, not 'crashed'
    assert "crashed" in listed  # this machine's dead trainer reads as crashed, unwritten
    assert runs.read_record(dead).to_dict()["run"]["status"] == "running"


def test_the_history_and_the_wizards_start_run_nothing_and_write_nothing(home, foreign_and_dead):
    from textual.widgets import DataTable
    from tunewiz.tui.app import create_app

    from tests.test_app import SIZE, screen_name, wait_until

    foreign, dead, markers = foreign_and_dead
    before = snapshot(home)

    async def look() -> None:
        app = create_app(home, start="history")
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one("#runs", DataTable)
            await wait_until(pilot, lambda: table.row_count == 2)
            await pilot.pause(0.5)
        app = create_app(home)  # the wizard reads the runs for the devices they train on
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: screen_name(app) == "HardwareStep")
            await pilot.pause(1.0)

    asyncio.run(look())
    no_marker_after(markers)
    assert snapshot(home) == before


def test_only_reconcile_records_a_dead_trainer_and_only_for_this_machine(home, foreign_and_dead, monkeypatch):
    foreign, dead, markers = foreign_and_dead
    monkeypatch.setenv("HF_TOKEN", "s3cret")
    assert runs.observe(foreign).to_dict()["run"]["status"] == "running"
    assert runs.observe(dead).to_dict()["run"]["status"] == "crashed"  # as a reader sees it; not written
    assert runs.reconcile(foreign).to_dict()["run"]["status"] == "running"
    assert runs.reconcile_all(home) == [dead]
    assert runs.read_record(dead).to_dict()["run"]["status"] == "crashed"
    assert runs.read_record(foreign).to_dict()["run"]["status"] == "running"
    deadline = time.time() + HANG_S
    while not markers[1].exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    assert markers[1].read_text() == ""  # told, without the caller's secret
    assert not markers[0].exists()  # the copied run's program never ran here


def test_resume_refuses_another_machines_run(home, foreign_and_dead):
    foreign, _, markers = foreign_and_dead
    proc = run_cli("resume", foreign.name, env={"TUNEWIZ_HOME": str(home)})
    assert proc.returncode != 0 and "other-gpu-box" in proc.stderr and "Traceback" not in proc.stderr
    no_marker_after(markers[:1], 0.5)


def test_the_notify_environment_keeps_secrets_out_unless_named():
    source = {"PATH": "/bin", "HOME": "/h", "HF_TOKEN": "s3cret", "AWS_SECRET_ACCESS_KEY": "k", "HOOK": "u"}
    env = notify.base_environment([], source)
    assert env == {"PATH": "/bin", "HOME": "/h"}
    assert notify.base_environment(["HOOK"], source) == {"PATH": "/bin", "HOME": "/h", "HOOK": "u"}
    assert "HF_TOKEN" not in notify.base_environment() or "HF_TOKEN" in notify.BASE_ENV  # never by default
    assert not {"HF_TOKEN", "WANDB_API_KEY", "OPENAI_API_KEY"} & set(notify.BASE_ENV)


def test_a_symlink_in_runs_that_leads_out_of_the_home_is_not_a_run(home, tmp_path):
    outside = tmp_path / "elsewhere" / "victim"
    outside.mkdir(parents=True)
    (outside / runs.RECORD).write_text('[run]\nid = "victim"\nstatus = "completed"\n[data]\npath = "x"\n')
    root = runs.runs_root(home)
    root.mkdir(parents=True, exist_ok=True)
    os.symlink(outside, root / "victim")
    assert runs.list_runs(home) == []
    with pytest.raises(runs.RunError):
        runs.find_run(home, "victim")


def test_an_unknown_status_is_damage(home, tmp_path):
    cfg = RunConfig(name="banana")
    cfg.data.path = str(tmp_path / "d.jsonl")
    run_dir = runs.create_run(cfg, home)
    doc = runs.read_record(run_dir).to_dict()
    doc["run"]["status"] = "banana"
    write_toml_atomic(run_dir / runs.RECORD, doc)
    (item,) = runs.list_runs(home)
    assert item.status == runs.DAMAGED and "'banana'" in item.problem


def test_runs_reconcile_records_this_machines_dead_runs_only(home, foreign_and_dead):
    foreign, dead, markers = foreign_and_dead
    proc = run_cli("runs", "--reconcile", env={"TUNEWIZ_HOME": str(home)})
    assert proc.returncode == 0 and f"recorded {dead.name} as crashed" in proc.stderr
    assert runs.read_record(dead).to_dict()["run"]["status"] == "crashed"
    assert runs.read_record(foreign).to_dict()["run"]["status"] == "running"
    no_marker_after(markers[:1])
