"""Nothing lost: checkpoints are whole or do not count, a full disk reads as a full disk and the run
resumes from its newest complete checkpoint, a removed run stops its trainer.

The fast tests build checkpoint directories by hand; the slow ones train the tiny model for real,
on a small tmpfs (mounting needs root, as in CI; elsewhere they skip)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tunewiz.core.bookkeeping import checkpoints, runs
from tunewiz.core.training import launcher
from tunewiz.tui import cli

from tests.conftest import HANG_S, sample_tickets

# -- checkpoints built by hand ----------------------------------------------------------------------


def fake_checkpoint(root: Path, step: int, mark: bool = True) -> Path:
    ckpt = root / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_model.safetensors").write_bytes(b"a" * 1000)
    (ckpt / "optimizer.pt").write_bytes(b"o" * 3000)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if mark:
        checkpoints.mark_complete(ckpt, step)
    return ckpt


def test_a_marked_checkpoint_is_whole_until_a_file_is_cut_or_missing(tmp_path):
    ckpt = fake_checkpoint(tmp_path, 4)
    assert checkpoints.why_incomplete(ckpt) == ""
    with open(ckpt / "optimizer.pt", "r+b") as fh:
        fh.truncate(800)
    assert checkpoints.why_incomplete(ckpt) == "optimizer.pt is 800 bytes, 3,000 when saved"
    (ckpt / "optimizer.pt").unlink()
    assert checkpoints.why_incomplete(ckpt) == "optimizer.pt is missing"


def test_an_unmarked_checkpoint_counts_only_in_a_run_from_before_the_marker(tmp_path):
    legacy = fake_checkpoint(tmp_path / "old", 2, mark=False)
    assert checkpoints.why_incomplete(legacy) == ""  # runs from before the marker keep resuming
    torn = tmp_path / "old" / "checkpoint-4"
    torn.mkdir()
    (torn / "optimizer.pt").write_bytes(b"o" * 10)
    assert "no trainer_state.json" in checkpoints.why_incomplete(torn)
    fake_checkpoint(tmp_path / "new", 2)
    unmarked = fake_checkpoint(tmp_path / "new", 4, mark=False)
    assert "never marked complete" in checkpoints.why_incomplete(unmarked)


def test_resume_takes_the_newest_whole_checkpoint_and_says_what_it_skipped(tmp_path):
    fake_checkpoint(tmp_path, 2)
    fake_checkpoint(tmp_path, 4)
    torn = fake_checkpoint(tmp_path, 6, mark=False)
    (torn / "trainer_state.json").unlink()
    (tmp_path / "checkpoint-10").mkdir()  # the Trainer made the folder, then the disk filled
    ckpt, skipped = checkpoints.newest_complete(tmp_path)
    assert ckpt.name == "checkpoint-4"
    assert [s.path.name for s in skipped] == ["checkpoint-10", "checkpoint-6"]
    assert all("cut off while being saved" in s.why for s in skipped)
    assert checkpoints.newest_complete(tmp_path / "none") == (None, [])


def test_rotation_counts_only_whole_checkpoints(tmp_path):
    for step in (2, 4, 6):
        fake_checkpoint(tmp_path, step)
    torn = fake_checkpoint(tmp_path, 8, mark=False)
    (torn / "trainer_state.json").unlink()
    deleted = checkpoints.rotate(tmp_path, keep=2)
    # The torn one does not push a whole one out: 4 and 6 stay, 2 goes, the torn 8 stays for a look.
    assert [p.name for p in deleted] == ["checkpoint-2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4", "checkpoint-6", "checkpoint-8"]
    fake_checkpoint(tmp_path, 10)  # the next whole save: the torn one older than it goes too
    checkpoints.rotate(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-6"]


def test_a_full_disk_reads_as_disk_full_from_any_layer(tmp_path, monkeypatch):
    assert checkpoints.is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert checkpoints.is_disk_full(RuntimeError("safetensors: No space left on device (os error 28)"))
    try:  # torch's writer, when a write came up short, raises this around the OSError
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 8000 vs 7914") from inner
    except RuntimeError as exc:
        assert checkpoints.is_disk_full(exc)
    bare = RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 8000 vs 7914")
    monkeypatch.setattr(checkpoints, "free_bytes", lambda path: 4096)
    assert checkpoints.is_disk_full(bare, tmp_path)  # says nothing of space; the disk is full
    monkeypatch.setattr(checkpoints, "free_bytes", lambda path: 10 << 30)
    assert not checkpoints.is_disk_full(bare, tmp_path)
    assert not checkpoints.is_disk_full(ValueError("bad value"), tmp_path)

    from tunewiz.core.training.trainer import classify_failure

    reason = classify_failure(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert reason.startswith("Disk full") and "tunewiz resume" in reason


def test_room_is_checked_against_the_last_whole_checkpoint(tmp_path, monkeypatch):
    fake_checkpoint(tmp_path, 2)  # 4,000 bytes of files, and the marker
    monkeypatch.setattr(checkpoints, "free_bytes", lambda path: 4000)
    with pytest.raises(checkpoints.DiskFullError) as info:
        checkpoints.check_room(tmp_path, 4, expected=100)
    text = str(info.value)
    assert text.startswith("Disk full: checkpoint-4 needs about") and "checkpoint-2 is whole and stays" in text
    assert info.value.errno == errno.ENOSPC
    monkeypatch.setattr(checkpoints, "free_bytes", lambda path: 1 << 20)
    checkpoints.check_room(tmp_path, 4, expected=100)


# -- real trainings on a small disk ------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode:
        pytest.skip("mounting a tmpfs needs root: " + proc.stderr.decode(errors="replace").strip())
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def tiny(model_dir, data, **training):
    """The loader-workers test's tiny run with no accumulation: a step (and a checkpoint) every second or so."""
    from tests.test_trainer_phases import tiny as tiny_run

    return tiny_run(model_dir, data, per_device_batch_size=2, gradient_accumulation_steps=1, **training)


FILL_AT_STEP_4 = """
import os, sys
from pathlib import Path
from transformers import TrainerCallback
from tunewiz.core.bookkeeping import checkpoints

run_dir = Path({run_dir!r})
if {bypass_check!r}:  # as when another process fills the disk during the save itself
    checkpoints.check_room = lambda *a, **k: None

class FillTheDisk(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 4:  # checkpoint-4 is saved right after this step
            prev = checkpoints.size_of(run_dir / "checkpoints" / "checkpoint-2")
            leave = int(prev * 0.4)
            with open({filler!r}, "wb") as fh:
                while checkpoints.free_bytes(run_dir) > leave + (1 << 20):
                    fh.write(b"x" * (1 << 20))
                while checkpoints.free_bytes(run_dir) > leave:
                    fh.write(b"x" * 4096)
                    fh.flush()
"""


@pytest.mark.slow
@pytest.mark.parametrize("bypass_check", [False, True], ids=["refused-before-the-save", "torn-half-way"])
def test_a_full_disk_is_recorded_listed_and_resumed_from_the_newest_whole_checkpoint(
    small_disk, tiny_model_dir, tmp_path, monkeypatch, capsys, bypass_check
):
    from tests.test_trainer_phases import with_callbacks

    home = small_disk / "home"
    monkeypatch.setenv("TUNEWIZ_HOME", str(home))
    cfg = tiny(tiny_model_dir, sample_tickets(tmp_path / "t.jsonl", rows=20), max_steps=8, save_steps=2)
    run_dir = runs.create_run(cfg, home)
    filler = small_disk / "filler"
    code = FILL_AT_STEP_4.format(run_dir=str(run_dir), bypass_check=bypass_check, filler=str(filler))
    code += with_callbacks([str(run_dir)], "[FillTheDisk()]")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_S)
    log = (run_dir / runs.LOG).read_text() if (run_dir / runs.LOG).exists() else proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-3000:]

    # The record says disk full, whichever layer noticed, though the disk was full when it was written.
    doc = runs.read_record(run_dir).to_dict()
    assert doc["run"]["status"] == "failed", doc["run"]
    reason = doc["run"]["failure_reason"]
    assert reason.startswith("Disk full") and "tunewiz resume" in reason, reason
    ckpts = run_dir / "checkpoints"
    assert checkpoints.why_incomplete(ckpts / "checkpoint-2") == ""
    if bypass_check:
        assert checkpoints.why_incomplete(ckpts / "checkpoint-4"), "checkpoint-4 should be torn"
    else:
        assert not (ckpts / "checkpoint-4").exists() and "checkpoint-4 needs about" in reason

    # While the disk is still full, `runs` and `show` work.
    assert checkpoints.free_bytes(run_dir) < checkpoints.size_of(ckpts / "checkpoint-2")  # no room for another
    capsys.readouterr()
    assert cli.main(["runs"]) == 0
    assert run_dir.name in capsys.readouterr().out
    assert cli.main(["show", run_dir.name]) == 0
    assert "Disk full" in capsys.readouterr().out

    # Space returns: resume continues from the newest whole checkpoint and completes.
    filler.unlink()
    assert cli.main(["resume", run_dir.name]) == 0
    out = capsys.readouterr().out
    assert "from checkpoint-2" in out, out
    if bypass_check:
        assert "skipping checkpoint-4" in out
    doc = launcher.wait(run_dir, timeout=HANG_S).to_dict()
    assert doc["run"]["status"] == "completed", (run_dir / runs.LOG).read_text()[-3000:]
    assert doc["results"]["steps"] == 8
    steps = [json.loads(line).get("step") for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert steps.count(3) == 2  # step 3 trained again after checkpoint-2: nothing after it was kept


def steps_seen(run_dir: Path) -> list[int]:
    from tunewiz.core.bookkeeping.events import read_events

    return [e["step"] for e in read_events(run_dir)[0] if e.get("event") == "step"]


def wait_for(pred, timeout: float = HANG_S) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


@pytest.mark.slow
def test_a_checkpoint_torn_after_a_kill_is_skipped_on_resume(home, tiny_model_dir, tmp_path, capsys):
    cfg = tiny(tiny_model_dir, sample_tickets(tmp_path / "t.jsonl", rows=20), max_steps=400, save_steps=2)
    run_dir = launcher.submit(cfg, home)
    ckpts = run_dir / "checkpoints"
    wait_for(lambda: len([c for c in checkpoints.all_checkpoints(ckpts) if not checkpoints.why_incomplete(c)]) >= 2)
    pid = int(runs.read_record(run_dir).to_dict()["run"]["pid"])
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not runs.trainer_alive(run_dir), timeout=600)
    whole = [c for c in checkpoints.all_checkpoints(ckpts) if not checkpoints.why_incomplete(c)]
    newest, previous = whole[0], whole[1]
    for c in checkpoints.all_checkpoints(ckpts):  # anything newer was cut by the kill itself
        if checkpoints.step_of(c) > checkpoints.step_of(newest):
            shutil.rmtree(c)
    with open(newest / "optimizer.pt", "r+b") as fh:  # as a power cut during its save would leave it
        fh.truncate(fh.seek(0, os.SEEK_END) // 2)
    assert runs.reconcile(run_dir).to_dict()["run"]["status"] == "crashed"

    capsys.readouterr()
    assert cli.main(["resume", run_dir.name]) == 0
    out = capsys.readouterr().out
    assert f"skipping {newest.name}: optimizer.pt is" in out and f"from {previous.name}" in out, out
    resumed_step = checkpoints.step_of(previous) + 1
    wait_for(lambda: steps_seen(run_dir).count(resumed_step) == 2)  # trained again from the previous one
    launcher.stop(run_dir)
    doc = launcher.wait(run_dir, timeout=HANG_S).to_dict()
    log = (run_dir / runs.LOG).read_text()
    assert f"skipping {newest.name}" in log and f"resuming from {previous.name}" in log, log[-3000:]
    assert doc["run"]["status"] == "stopped"


@pytest.mark.slow
def test_removing_a_run_stops_its_trainer_and_leaves_nothing(home, tiny_model_dir, tmp_path):
    cfg = tiny(tiny_model_dir, sample_tickets(tmp_path / "t.jsonl", rows=20), max_steps=400, save_steps=3)
    run_dir = launcher.submit(cfg, home)
    wait_for(lambda: len(steps_seen(run_dir)) >= 2)
    pid = int(runs.read_record(run_dir).to_dict()["run"]["pid"])
    while run_dir.exists():
        shutil.rmtree(run_dir, ignore_errors=True)

    def exited() -> bool:
        try:
            return os.waitpid(pid, os.WNOHANG)[0] == pid
        except ChildProcessError:  # not our child (started by the launcher's own child)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") >= 0

    wait_for(exited)  # the trainer notices at its next step: as slow as the machine
    time.sleep(1.0)
    assert not run_dir.exists(), sorted(str(p) for p in run_dir.rglob("*"))
    assert runs.list_runs(home) == [] or all(r.path != run_dir for r in runs.list_runs(home))
