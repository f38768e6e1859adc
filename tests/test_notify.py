"""Tracking (training.report_to) and notifications ([notify] command, the terminal alert).

The notify command here is this Python with a script that appends its TUNEWIZ_* environment to a file
as one JSON line: one line per run end is "exactly once".
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tunewiz.core.bookkeeping import notify, runs
from tunewiz.core.bookkeeping.events import EventWriter, read_events
from tunewiz.core.bookkeeping.record import Record
from tunewiz.core.config import ConfigError, RunConfig, apply_overrides
from tunewiz.core.toml import read_toml
from tunewiz.core.training import launcher

from tests.conftest import HANG_S, sample_tickets

RECORDER = """
import json, os, sys
env = {k: v for k, v in os.environ.items() if k.startswith("TUNEWIZ_") and k != "TUNEWIZ_HOME"}
with open(sys.argv[1], "a", encoding="utf-8") as fh:
    fh.write(json.dumps({"env": env, "cwd": os.getcwd(), "stdin": sys.stdin.read()}) + "\\n")
"""


@pytest.fixture
def recorder(tmp_path) -> tuple[list[str], Path]:
    """(the notify command, the file it appends to)."""
    script = tmp_path / "record_env.py"
    script.write_text(RECORDER)
    out = tmp_path / "notified.jsonl"
    return [sys.executable, str(script), str(out)], out


def lines_of(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def wait_lines(path: Path, n: int, timeout: float = HANG_S) -> list[dict]:
    """The file's lines once it has `n` (the command runs detached); then a little longer, to see no more come."""
    deadline = time.time() + timeout
    while time.time() < deadline and len(lines_of(path)) < n:
        time.sleep(0.1)
    time.sleep(1.0)
    return lines_of(path)


def run_with(home: Path, tmp_path: Path, command: list[str], name: str = "tiny") -> Path:
    cfg = RunConfig(name=name)
    cfg.data.path = str(tmp_path / "train.jsonl")
    cfg.notify.command = command
    return runs.create_run(cfg, home)


# -- the config ------------------------------------------------------------------------------------


def test_report_to_is_off_by_default_and_a_wrong_one_says_what_to_use():
    assert RunConfig().training.report_to == "none"
    cfg = RunConfig()
    cfg.data.path = "x.jsonl"
    cfg.training.report_to = "tensorbord"
    (problem,) = cfg.problems()
    assert "report_to = 'tensorbord'" in problem and "tensorboard, wandb, mlflow, trackio" in problem


def test_notify_command_is_an_argument_list_and_a_string_is_split_like_words_not_run_by_a_shell(tmp_path):
    doc = {"data": {"path": "x.jsonl"}, "notify": {"command": "notify-send 'run ended' --urgency=low"}}
    assert RunConfig.from_dict(doc).notify.command == ["notify-send", "run ended", "--urgency=low"]
    cfg = apply_overrides(RunConfig(), ["notify.command=/usr/bin/printf '%s, done' x"])
    assert cfg.notify.command == ["/usr/bin/printf", "%s, done", "x"]  # the comma is no separator here
    with pytest.raises(ConfigError, match="expected list like"):
        RunConfig.from_dict({"notify": {"command": "say 'unclosed"}})
    # a record keeps it, and reads back the same; a run without one has no [notify] section
    cfg.data.path = "x.jsonl"
    assert RunConfig.from_dict(cfg.to_dict()).notify.command == cfg.notify.command
    assert "notify" not in RunConfig().to_dict()


def test_submit_refuses_a_tracker_or_a_program_this_machine_lacks(home, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    cfg = RunConfig()
    cfg.data.path = str(sample_tickets(tmp_path / "t.jsonl", rows=5))
    cfg.training.report_to = "wandb"
    cfg.notify.command = ["no-such-notifier-here"]
    with pytest.raises(ConfigError) as info:
        launcher.check(cfg, home)
    text = str(info.value)
    assert "pip install wandb" in text and 'report_to = "none"' in text
    assert "no program 'no-such-notifier-here' on PATH" in text
    assert not runs.runs_root(home).exists() or not any(runs.runs_root(home).iterdir())


def test_the_wizard_sets_the_tracker_among_its_advanced_settings(home):
    from textual.widgets import Input
    from tunewiz.tui.app import create_app
    from tunewiz.tui.preset_step import PresetStep

    from tests.conftest import SAMPLE
    from tests.test_app import SIZE, screen_name, text_of, wait_until

    async def run() -> None:
        app = create_app(home, data=str(SAMPLE / "support_tickets.jsonl"))
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: screen_name(app) == "HardwareStep")
            await app.push_screen(PresetStep())
            await pilot.press("ctrl+a")
            field = app.screen.query_one("#f-report_to", Input)
            assert field.value == "none"
            field.value = "tensorbord"
            await pilot.pause()
            assert "report_to = 'tensorbord': use one of none, tensorboard" in text_of(app, "#adv-error")
            field.value = "tensorboard"
            await pilot.pause()
            assert app.cfg.training.report_to == "tensorboard"

    asyncio.run(run())


# -- the command, once per end ------------------------------------------------------------------------


def test_the_command_runs_once_per_end_with_the_documented_environment(home, tmp_path, recorder):
    command, out = recorder
    run_dir = run_with(home, tmp_path, command, name="tiny; $(touch pwned)")
    runs.update_record(
        run_dir,
        lambda rec: rec.results.update(
            {
                "train_loss": 0.61,
                "base": {"kind": "json", "headline": "field_match", "field_match": 0.1},
                "finetuned": {"kind": "json", "headline": "field_match", "field_match": 0.875, "interval": [0.7, 0.95]},
            }
        ),
    )
    assert runs.notify_end(run_dir) is None  # still queued: no end to tell
    runs.set_status(run_dir, "completed")
    assert runs.notify_end(run_dir) is not None
    assert runs.notify_end(run_dir) is None  # told already
    runs.reconcile(run_dir)
    runs.list_runs(home)
    (line,) = wait_lines(out, 1)
    env = line["env"]
    assert set(notify.ENV_VARS) <= set(env)
    assert env["TUNEWIZ_RUN_ID"] == run_dir.name and env["TUNEWIZ_RUN_DIR"] == str(run_dir)
    assert env["TUNEWIZ_RUN_NAME"] == "tiny; $(touch pwned)"  # data, never a command line
    assert env["TUNEWIZ_STATUS"] == "completed"
    assert env["TUNEWIZ_HEADLINE"] == "held-out fields correct 88% (70-95%), base 10%"
    assert (env["TUNEWIZ_METRIC"], env["TUNEWIZ_METRIC_VALUE"]) == ("field_match", "0.875")
    assert env["TUNEWIZ_REASON"] == "" and env["TUNEWIZ_SUMMARY"] == env["TUNEWIZ_HEADLINE"]
    assert line["cwd"] == str(run_dir) and line["stdin"] == ""
    assert not (run_dir / "pwned").exists() and not Path("pwned").exists()
    assert runs.read_record(run_dir).to_dict()["run"]["notified"]
    assert "notify: running" in (run_dir / runs.LOG).read_text()

    # resumed, it ends again: told again, once
    runs.update_record(run_dir, runs.mark_resumed)
    runs.set_status(run_dir, "stopped", stopped_at_step=3)
    runs.notify_end(run_dir)
    runs.notify_end(run_dir)
    assert [x["env"]["TUNEWIZ_STATUS"] for x in wait_lines(out, 2)] == ["completed", "stopped"]


def test_a_dead_trainer_is_told_once_by_the_look_that_finds_it_crashed(home, tmp_path, recorder):
    command, out = recorder
    run_dir = run_with(home, tmp_path, command)
    runs.set_status(run_dir, "running", pid=999999)
    w = EventWriter(run_dir)
    w.emit("step", step=1, loss=2.5)
    w.close()
    with runs.hold_trainer_lock(run_dir):
        assert runs.reconcile(run_dir).to_dict()["run"]["status"] == "running"  # alive: nothing to tell
    for _ in range(3):
        runs.list_runs(home)
        runs.reconcile(run_dir)
    (line,) = wait_lines(out, 1)
    assert line["env"]["TUNEWIZ_STATUS"] == "crashed"
    assert "last step 1" in line["env"]["TUNEWIZ_REASON"] and line["env"]["TUNEWIZ_SUMMARY"]


def test_a_program_that_cannot_start_is_one_line_in_the_log(home, tmp_path):
    run_dir = run_with(home, tmp_path, [str(tmp_path / "missing-notifier")])
    runs.set_status(run_dir, "failed", failure_reason="boom")
    assert runs.notify_end(run_dir) is None
    log = (run_dir / runs.LOG).read_text()
    assert "could not start: No such file or directory" in log and "missing-notifier" in log
    assert runs.read_record(run_dir).to_dict()["run"]["status"] == "failed"


def test_a_run_without_a_command_is_not_written_to(home, tmp_path):
    run_dir = run_with(home, tmp_path, [])
    runs.set_status(run_dir, "completed")
    before = (run_dir / runs.RECORD).read_bytes()
    assert runs.notify_end(run_dir) is None
    assert (run_dir / runs.RECORD).read_bytes() == before and not (run_dir / runs.LOG).exists()


# -- the terminal --------------------------------------------------------------------------------------


def test_the_terminal_alert_goes_through_tmux_when_inside_it(monkeypatch):
    monkeypatch.setenv("TMUX", "/tmp/tmux-0/default,1,0")
    text = notify.terminal_alert("tunewiz: tiny completed", "loss 0.5\x1b]0;evil\x07")
    assert text.startswith("\x07\x1bPtmux;\x1b\x1b]9;tunewiz: tiny completed: loss 0.5 ]0;evil\x07\x1b\\")
    assert "\x1bPtmux;\x1b\x1b]777;notify;tunewiz: tiny completed;loss 0.5 ]0;evil\x07\x1b\\" in text
    monkeypatch.delenv("TMUX")
    assert "tmux" not in notify.terminal_alert("t", "b")


def test_the_train_screen_alerts_once_when_it_sees_the_run_end(home, tmp_path, monkeypatch):
    from tunewiz.tui.app import create_app

    from tests.test_app import SIZE, wait_until

    alerts: list[Record] = []
    monkeypatch.setattr("tunewiz.tui.train_screen.alert_terminal", lambda app, record: alerts.append(record))
    live = run_with(home, tmp_path, [], name="live")
    runs.set_status(live, "running", pid=999999)
    done = run_with(home, tmp_path, [], name="done")
    runs.set_status(done, "completed")

    async def watch(run_dir: Path, end) -> None:
        app = create_app(home, start="attach", run=run_dir)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: getattr(app.screen, "status", "") in runs.ACTIVE + runs.FINAL)
            end()
            await wait_until(pilot, lambda: app.screen.status in runs.FINAL)
            await pilot.pause(2.5)  # more polls: no second alert

    with runs.hold_trainer_lock(live) as got:
        assert got
        asyncio.run(watch(live, lambda: runs.set_status(live, "completed")))
    asyncio.run(watch(done, lambda: None))  # found ended: nothing to tell
    assert [a.run.name for a in alerts] == ["live"]


def test_attach_plain_rings_the_terminal_when_the_run_it_follows_ends(home, tmp_path, monkeypatch, capsys):
    from tunewiz.tui import commands

    run_dir = run_with(home, tmp_path, [], name="followed")
    runs.set_status(run_dir, "running", pid=999999)  # its trainer is gone: the first look finds it crashed
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert commands.follow_run(run_dir) == 1
    out = capsys.readouterr().out
    assert "\x07\x1b]9;tunewiz: followed crashed: " in out and "\x1b]777;notify;tunewiz: followed crashed;" in out


# -- real training ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tensorboard_events_hold_the_loss_curve_and_the_run_is_told_once(
    home, tiny_model_dir, tmp_path, recorder, capsys
):
    """report_to = tensorboard: event files tensorboard's own reader opens, one loss per logged step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tunewiz.tui import cli

    from tests.test_trainer_phases import tiny

    command, out = recorder
    cfg = tiny(tiny_model_dir, sample_tickets(tmp_path / "t.jsonl", rows=20), max_steps=3, logging_steps=1)
    cfg.training.report_to = "tensorboard"
    cfg.notify.command = command
    run_dir = launcher.submit(cfg, home)
    doc = launcher.wait(run_dir, timeout=HANG_S).to_dict()
    assert doc["run"]["status"] == "completed", (run_dir / runs.LOG).read_text()[-3000:]

    logdir = run_dir / "tensorboard"
    assert doc["artifacts"]["tensorboard"] == str(logdir)
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"], acc.Tags()
    curve = [(s.step, s.value) for s in acc.Scalars("train/loss")]
    logged = [(e["step"], e["loss"]) for e in read_events(run_dir)[0] if e.get("event") == "step"]
    assert [s for s, _ in curve] == [s for s, _ in logged] == [1, 2, 3]
    assert [v for _, v in curve] == pytest.approx([v for _, v in logged], rel=1e-5)

    assert cli.main(["show", run_dir.name]) == 0
    assert f"  tracked tensorboard --logdir {logdir}\n" in capsys.readouterr().out
    assert cli.main(["runs"]) == 0
    (line,) = wait_lines(out, 1)
    env = line["env"]
    assert env["TUNEWIZ_STATUS"] == "completed" and env["TUNEWIZ_RUN_ID"] == run_dir.name
    # evaluation off (tiny): no comparison and no held-out loss pass (#24: --no-eval skips it): the train loss
    assert env["TUNEWIZ_METRIC"] == "train_loss"
    assert float(env["TUNEWIZ_METRIC_VALUE"]) == read_toml(run_dir / runs.RECORD)["results"]["train_loss"]


KILLED_AFTER_STEP_1 = """
import os, signal, sys
from transformers import TrainerCallback

class KilledAfterStep1(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kw):  # after the trainer's own (step 1 is in events.jsonl)
        if state.global_step == 1 and "loss" in (logs or {}):
            os.kill(os.getpid(), signal.SIGKILL)  # no handler, no last words: a trainer killed from outside
"""


@pytest.mark.slow
def test_a_killed_trainer_is_told_once_by_refresh(home, tiny_model_dir, tmp_path, recorder):
    from tests.test_trainer_phases import tiny, with_callbacks

    command, out = recorder
    cfg = tiny(tiny_model_dir, sample_tickets(tmp_path / "t.jsonl", rows=20), max_steps=50)
    cfg.notify.command = command
    run_dir = runs.create_run(cfg, home)
    code = KILLED_AFTER_STEP_1 + with_callbacks([str(run_dir)], "[KilledAfterStep1()]")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_S)
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert runs.read_record(run_dir).to_dict()["run"]["status"] == "running" and lines_of(out) == []
    for _ in range(3):
        runs.reconcile(run_dir)
    (line,) = wait_lines(out, 1)
    assert line["env"]["TUNEWIZ_STATUS"] == "crashed" and "last step 1" in line["env"]["TUNEWIZ_REASON"]
    assert not (run_dir / "tensorboard").exists()  # report_to = none: nothing written for a tracker
