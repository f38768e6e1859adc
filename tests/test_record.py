"""The typed run record (core.bookkeeping.record): records every earlier tunewiz wrote read and migrate,
a newer tunewiz's record and a hand edit survive a write, the statuses carry their sets, and no module but
the record's owner looks up a record's tables by name."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from tunewiz.core.bookkeeping import record, repair, runs
from tunewiz.core.bookkeeping.record import SCHEMA, FailureKind, Record, Status
from tunewiz.core.toml import tomllib
from tunewiz.tui.record_text import record_summary_lines

FIXTURES = Path(__file__).parent / "fixtures" / "records"
REPO = Path(__file__).resolve().parent.parent


def home_with(tmp_path: Path, *names: str) -> Path:
    """A tunewiz home holding the fixture records as runs (each in the directory its id names)."""
    home = tmp_path / "home"
    for name in names:
        doc = tomllib.loads((FIXTURES / name).read_text())
        run_dir = home / "runs" / doc["run"]["id"]
        run_dir.mkdir(parents=True)
        shutil.copy(FIXTURES / name, run_dir / runs.RECORD)
    return home


def read_toml(run_dir: Path) -> dict:
    return tomllib.loads((run_dir / runs.RECORD).read_text())


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.toml")))
def test_every_fixture_reads_lists_and_shows(tmp_path, name):
    home = home_with(tmp_path, name)
    (listed,) = runs.list_runs(home)
    assert listed.status != runs.DAMAGED, listed.problem
    lines = record_summary_lines(runs.read_record(listed.path))
    assert lines[0].startswith(f"run {listed.id}: ")


def test_a_record_from_before_versions_reads_typed_and_is_written_at_this_version(tmp_path):
    home = home_with(tmp_path, "v0-2026-11-23-completed.toml")
    (run_dir,) = (home / "runs").iterdir()
    rec = runs.read_record(run_dir)
    assert rec.read_schema == 0 and rec.schema == SCHEMA
    assert rec.run.state is Status.COMPLETED and rec.results.train_loss == 0.8123
    assert rec.results.finetuned_eval_loss == 0.9012  # no comparison loss in 2026-11: training's
    assert rec.run.created_unix is not None  # from `created`: the history sorts it among newer runs
    (summary,) = runs.list_runs(home)
    assert summary.metric == "fields 81%" and summary.preset == "balanced"
    before = read_toml(run_dir)
    runs.update_record(run_dir, lambda r: r.run.update({"note": "looked at"}))
    after = read_toml(run_dir)
    assert after["schema"] == SCHEMA
    assert after["training"]["reasons"] == before["training"]["reasons"]  # an old table is kept as it was
    assert after["results"] == before["results"] and after["run"]["note"] == "looked at"
    assert rec.request().training.lora_r == 16  # still a config: `tunewiz train --config` re-runs it


def test_an_old_out_of_memory_failure_gets_its_kind_as_a_field(tmp_path):
    home = home_with(tmp_path, "v0-2026-12-01-out-of-memory.toml")
    (run_dir,) = (home / "runs").iterdir()
    assert "failure_kind" not in read_toml(run_dir)["run"]
    rec = runs.read_record(run_dir)
    assert rec.run.kind_of_failure is FailureKind.OUT_OF_MEMORY
    assert runs.failure_kind(rec) == runs.OUT_OF_MEMORY  # what the train screen's r (retry) asks
    runs.update_record(run_dir, lambda r: None)  # the next write migrates the file
    assert read_toml(run_dir)["run"]["failure_kind"] == "out_of_memory"
    assert read_toml(run_dir)["schema"] == SCHEMA


def test_a_newer_tunewizs_record_keeps_its_version_keys_and_tables(tmp_path):
    home = home_with(tmp_path, "v2-from-a-newer-tunewiz.toml")
    (run_dir,) = (home / "runs").iterdir()
    before = read_toml(run_dir)
    rec = runs.update_record(run_dir, lambda r: r.run.update({"notified": "now"}))
    after = read_toml(run_dir)
    assert rec.read_schema == 2 and after["schema"] == 2
    assert after["run"]["best_step"] == 120 and after["run"]["stopped_early"] == before["run"]["stopped_early"]
    assert after["cost"] == before["cost"] and after["training"] == before["training"]
    (summary,) = runs.list_runs(home)
    assert summary.label == "completed"


def test_a_value_of_the_wrong_type_reads_unset_and_is_written_back_as_it_was(tmp_path):
    home = home_with(tmp_path, "v0-hand-edited-types.toml")
    (run_dir,) = (home / "runs").iterdir()
    rec = runs.read_record(run_dir)
    assert rec.run.pid is None and rec.run.name is None and rec.results.train_loss is None
    assert rec.data.train_rows is None and rec.results.wall_time_s == 12.5
    (summary,) = runs.list_runs(home)
    assert summary.status == "completed" and summary.train_loss is None
    runs.update_record(run_dir, lambda r: None)
    after = read_toml(run_dir)
    assert after["run"]["pid"] == "not a number" and after["run"]["name"] == 42
    assert after["results"]["train_loss"] == "n/a" and after["data"]["train_rows"] == "many"


def test_a_record_round_trips_unchanged_but_for_its_version():
    doc = tomllib.loads((FIXTURES / "v0-2026-12-07-labels.toml").read_text())
    out = Record.from_dict(doc).to_dict()
    assert out.pop("schema") == SCHEMA
    assert out == doc and list(out) == list(doc)  # same tables, same order


def test_the_status_type_carries_its_sets_and_colours():
    assert {s.value for s in Status if s.active} == {"queued", "running"}
    assert {s.value for s in Status if s.resumable} == {"stopped", "crashed", "failed"}
    assert {s.value for s in Status if s.final} == {"completed", "stopped", "failed", "crashed", "cancelled"}
    assert Status.WAITING not in record.ACTIVE and Status.WAITING not in record.FINAL
    assert Status.COMPLETED.colour == "green" and Status.CRASHED.colour == "red"
    assert runs.COLOURS["waiting"] == "cyan" and "damaged" not in record.WRITTEN
    assert Record.from_dict({"run": {"status": "banana"}}).run.state is None


def test_a_repaired_record_is_written_at_this_version(tmp_path):
    home = home_with(tmp_path, "v0-2026-11-23-completed.toml")
    (run_dir,) = (home / "runs").iterdir()
    (run_dir / runs.RECORD).write_text('[run]\nid = "x"\nstatus = "runn')  # cut off mid-write
    rec, done = repair.repair(run_dir)
    assert read_toml(run_dir)["schema"] == SCHEMA and rec.run.repaired
    assert any("what was wrong" in line for line in done)


SECTIONS = "run|model|data|request|plan|estimate|results|artifacts|preset|training|evaluation|notify|hardware|versions"
RAW_LOOKUP = re.compile(rf"""(\.get\(\s*|\[\s*|setdefault\(\s*)["']({SECTIONS})["']""")
OWNERS = {"core/bookkeeping/record.py", "core/config.py"}
"""The record's owner, and the request's (RunConfig reads the same tables from --config files)."""


def raw_lookups(text: str) -> list[str]:
    """Lines of `text` that look a record's table up by its name: doc.get("run"), doc["results"], ..."""
    return [line.strip() for line in text.splitlines() if RAW_LOOKUP.search(line) and "noqa: record" not in line]


def test_the_raw_lookup_check_finds_what_it_should():
    assert raw_lookups('x = doc.get("run", {})\ny = doc["results"]\nz = d.setdefault("plan", {})') == [
        'x = doc.get("run", {})',
        'y = doc["results"]',
        'z = d.setdefault("plan", {})',
    ]
    assert raw_lookups('rec.run.status\nrec.results.train_loss\nmerge({"results": {}})') == []


def test_no_module_but_the_records_owner_looks_up_a_table_by_name():
    found = []
    for root in ("core", "tui"):
        for path in sorted((REPO / root).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel in OWNERS:
                continue
            found += [f"{rel}: {line}" for line in raw_lookups(path.read_text(encoding="utf-8"))]
    assert not found, "use the typed record (core.bookkeeping.record):\n  " + "\n  ".join(found)


def test_a_non_finite_held_out_loss_is_shown_as_what_it_is(tmp_path):
    """A NaN held-out loss (issue 24) reads `nan` in `show` and in the listing, never '-' or a number."""
    home = home_with(tmp_path, "v0-2026-11-23-completed.toml")
    (run_dir,) = (home / "runs").iterdir()
    runs.update_record(run_dir, lambda r: r.results.update({"eval_loss": float("nan")}))
    rec = runs.read_record(run_dir)
    line = next(x for x in record_summary_lines(rec) if x.strip().startswith("result"))
    assert "eval loss nan" in line
    (summary,) = runs.list_runs(home)
    assert f"{summary.eval_loss:.3f}" == "nan"
