"""The run queue (core.queue): waiting runs, their order, one run per device, cancel; the runner that
starts them with no terminal attached (slow: real tiny runs, started from a terminal that is killed)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from tunewiz.core.bookkeeping import runs
from tunewiz.core.bookkeeping.events import read_events
from tunewiz.core.config import RunConfig
from tunewiz.core.toml import write_toml_atomic
from tunewiz.core.training import launcher, queue
from tunewiz.tui import cli

from tests.conftest import HANG_S, hang_up, open_terminal, sample_tickets


def waiting_run(home: Path, name: str, order: float, placement=("cpu",)) -> Path:
    """A run in the queue, as submit writes it (without the checks)."""
    cfg = RunConfig(name=name)
    cfg.data.path = f"/data/{name}.jsonl"
    return runs.create_run(
        cfg,
        home,
        extra={
            "run": {"status": runs.WAITING, "queue_order": order, "queued_unix": time.time() - 3600},
            "plan": {"placement": list(placement)},
        },
    )


def order(home: Path) -> list[str]:
    return [runs.read_record(d).to_dict()["run"]["name"] for d, _ in queue.waiting(home)]


def test_a_waiting_run_is_never_crashed_and_is_listed_by_its_place(home, capsys):
    first, second = waiting_run(home, "first", 1), waiting_run(home, "second", 2)
    # an hour old and no trainer: a queued run would be crashed by now; a waiting one waits
    assert runs.reconcile(first).to_dict()["run"]["status"] == runs.WAITING
    listed = {r.name: r for r in runs.list_runs(home)}
    assert listed["first"].label == "queued #1" and listed["second"].label == "queued #2"
    assert not launcher.is_finished(first)
    assert cli.main(["runs"]) == 0
    assert "queued #2" in capsys.readouterr().out
    assert cli.main(["show", second.name]) == 0
    assert "queue   #2 of 2 waiting" in capsys.readouterr().out
    assert cli.main(["stop", second.name]) == 2  # not running: says how to take it out of the queue
    assert "tunewiz queue cancel" in capsys.readouterr().err


def test_move_and_cancel_keep_the_order_and_the_directory(home, capsys):
    for n, name in enumerate(["a", "b", "c"], 1):
        waiting_run(home, name, n)
    c = next(d for d, rec in queue.waiting(home) if rec.run.name == "c")
    assert queue.move(home, c, 1) == 1
    assert order(home) == ["c", "a", "b"]
    assert cli.main(["queue", "move", c.name, "9"]) == 0  # past the end: last
    assert order(home) == ["a", "b", "c"]
    assert "is now #3" in capsys.readouterr().out
    a = queue.waiting(home)[0][0]
    assert cli.main(["queue", "cancel", a.name]) == 0
    doc = runs.read_record(a).to_dict()
    assert doc["run"]["status"] == "cancelled" and "nothing was trained" in doc["run"]["failure_reason"]
    assert doc["run"]["finished"] and a.is_dir() and launcher.is_finished(a)
    assert order(home) == ["b", "c"] and queue.place_of(home, queue.waiting(home)[1][0]) == 2
    with pytest.raises(queue.QueueError, match="not waiting"):
        queue.cancel(home, a)
    with pytest.raises(queue.QueueError, match="counts from 1"):
        queue.move(home, queue.waiting(home)[0][0], 0)


def test_the_runner_starts_one_run_per_device_in_queue_order(home, monkeypatch):
    """GPU 0 is busy: the GPU 0 runs wait, and the one behind a waiting DDP run on GPUs 0+1 waits too;
    the CPU run and nothing else starts (launcher.start is recorded, not run)."""
    started: list[str] = []
    monkeypatch.setattr(launcher, "start", lambda run_dir, resume=False: started.append(run_dir.name) or 1)
    busy = runs.create_run(RunConfig(name="training"), home, extra={"plan": {"placement": ["cuda:0"]}})
    runs.set_status(busy, "running")
    gpu0 = waiting_run(home, "gpu0", 1, ["cuda:0"])
    both = waiting_run(home, "both", 2, ["cuda:0", "cuda:1"])
    gpu1 = waiting_run(home, "gpu1", 3, ["cuda:1"])
    cpu = waiting_run(home, "cpu", 4, ["cpu"])
    cpu2 = waiting_run(home, "cpu-second", 5, ["cpu"])
    with runs.hold_trainer_lock(busy):
        assert launcher.busy_devices(home) == {"cuda:0": busy.name}
        assert queue.start_ready(home) == [cpu]
    assert started == [cpu.name]
    assert runs.read_record(cpu).to_dict()["run"]["status"] == "queued"  # its trainer is starting
    assert [d for d, _ in queue.waiting(home)] == [gpu0, both, gpu1, cpu2]
    # the busy run ended; the CPU run is still starting (queued): GPU 0 takes its first run only
    runs.set_status(busy, "completed")
    assert queue.start_ready(home) == [gpu0]
    assert queue.start_ready(home) == []  # gpu0 starting: both waits for it, gpu1 waits behind both


def test_a_one_gpu_run_starts_on_a_free_gpu_when_its_own_is_in_use(home, monkeypatch):
    """Two GPUs, GPU 0 training: the first one-GPU run planned on GPU 0 starts on GPU 1 (its record
    says so and why); the next waits for a GPU, and the DDP run behind it waits for both."""
    from tunewiz.core.planning.hardware import GPU

    started: list[str] = []
    monkeypatch.setattr(launcher, "start", lambda run_dir, resume=False: started.append(run_dir.name) or 1)
    two = [GPU(0, "NVIDIA H100", 79.6, 20.0, "9.0", True), GPU(1, "NVIDIA H100", 79.6, 79.0, "9.0", True)]
    monkeypatch.setattr(queue, "machine_gpus", lambda: two)
    busy = runs.create_run(RunConfig(name="training"), home, extra={"plan": {"placement": ["cuda:0"]}})
    runs.set_status(busy, "running")
    first = waiting_run(home, "first", 1, ["cuda:0"])
    second = waiting_run(home, "second", 2, ["cuda:0"])
    ddp = waiting_run(home, "ddp", 3, ["cuda:0", "cuda:1"])
    with runs.hold_trainer_lock(busy):
        assert queue.start_ready(home) == [first]
        plan = runs.read_record(first).to_dict()["plan"]
        assert plan["placement"] == ["cuda:1"]
        assert plan["reasons"]["placement"] == f"cuda:1: the queue started it on a free GPU; GPU 0 trains {busy.name}"
        assert queue.start_ready(home) == []  # both GPUs in use: second waits, ddp waits behind it
    assert [d for d, _ in queue.waiting(home)] == [second, ddp]
    runs.set_status(busy, "completed")
    assert queue.start_ready(home) == [second]  # GPU 0 is free again: its own GPU
    assert runs.read_record(second).to_dict()["plan"]["placement"] == ["cuda:0"]
    assert started == [first.name, second.name]


def test_the_runner_starts_the_runs_one_after_another_then_exits(home, monkeypatch):
    """In this process, with a 'trainer' that completes at once: each run starts once the one before
    it has ended, in queue order, and the runner exits when nothing waits."""
    started: list[str] = []

    def start(run_dir, resume=False):
        assert runs.read_record(run_dir).to_dict()["run"]["status"] == "queued"  # starting; no other run is
        assert not [r for r in runs.list_runs(home) if r.status in runs.ACTIVE and r.path != run_dir]
        started.append(runs.read_record(run_dir).to_dict()["run"]["name"])
        runs.set_status(run_dir, "running")
        runs.set_status(run_dir, "completed")
        return 1

    monkeypatch.setattr(launcher, "start", start)
    for n, name in enumerate(["a", "b", "c"], 1):
        waiting_run(home, name, n)
    assert queue.run(home, poll=0.01) == 0
    assert started == ["a", "b", "c"] and queue.waiting(home) == []
    assert queue.runner_pid(home) is None


def test_submit_checks_at_once_and_a_runner_exits_when_nothing_waits(home, tmp_path):
    from tunewiz.core.data.dataset import DataError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [\n')
    cfg = RunConfig()
    cfg.data.path = str(bad)
    with pytest.raises(DataError, match="bad.jsonl"):
        queue.submit(cfg, home)
    assert runs.list_runs(home) == []  # refused now, not at 3 a.m.
    assert queue.run(home, poll=0.05) == 0 and queue.runner_pid(home) is None


def test_queue_command_lists_running_and_waiting_runs(home, capsys, monkeypatch):
    monkeypatch.setattr(queue, "ensure_runner", lambda home_dir: None)
    live = runs.create_run(RunConfig(name="live"), home, extra={"plan": {"placement": ["cpu"]}})
    runs.set_status(live, "running")
    waiting_run(home, "next", 1)
    with runs.hold_trainer_lock(live):
        assert cli.main(["queue"]) == 0
    out = capsys.readouterr().out
    assert f"now   {live.name}" in out and "running" in out
    assert "#1" in out and "next" in out and "one run per device at a time" in out
    assert all(len(line) <= 80 for line in out.splitlines() if "its log:" not in line)  # a path is a path


# -- real runs ---------------------------------------------------------------------------------------


def tiny_queue_config(model_dir: Path, data: Path, tmp_path: Path) -> Path:
    from tunewiz.core.planning.presets import build_config

    cfg = build_config("balanced", split=(2, 2))
    cfg.model.id = str(model_dir)
    cfg.data.path = str(data)
    cfg.data.max_seq_len = 128
    cfg.training.max_steps = 3
    cfg.training.threads = 1
    cfg.evaluation.enabled = False
    path = tmp_path / "tiny.toml"
    write_toml_atomic(path, cfg.validate().to_dict())
    return path


def wait_for(pred, timeout: float, poll: float = 0.5) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(poll)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.mark.slow
def test_a_queue_of_three_survives_the_terminal_and_runs_one_at_a_time(home, tiny_model_dir, tmp_path):
    """Three `tunewiz train --queue` from a shell in its own process group (a terminal over SSH); once
    the first run trains, the whole group gets SIGHUP, then SIGKILL: all three complete, in order, one
    at a time."""
    config = tiny_queue_config(tiny_model_dir, sample_tickets(tmp_path / "tickets.jsonl"), tmp_path)
    train = f"{sys.executable} -m tunewiz.tui.cli train --config {config} --queue"
    script = "; ".join(f"{train} --name q{n}" for n in (1, 2, 3)) + "; sleep 600"
    terminal = open_terminal(["/bin/sh", "-c", script], {**os.environ, "TUNEWIZ_HOME": str(home)})

    def named() -> dict[str, Path]:
        return {runs.read_record(d).to_dict()["run"]["name"]: d for d in runs._run_dirs(runs.runs_root(home))}

    try:
        wait_for(lambda: len(named()) == 3, timeout=HANG_S)  # all three queued (each submit checks the data)
        q1 = named()["q1"]
        wait_for(lambda: runs.read_record(q1).to_dict()["run"]["status"] in ("running", *runs.FINAL), timeout=HANG_S)
        assert runs.read_record(named()["q3"]).to_dict()["run"]["status"] == runs.WAITING
    finally:
        hang_up(terminal)  # the SSH connection drops
    assert terminal.returncode != 0  # the terminal is gone; the queue is not

    dirs = named()
    wait_for(lambda: all(launcher.is_finished(d) for d in dirs.values()), timeout=HANG_S, poll=2)
    docs = {name: runs.read_record(d).to_dict() for name, d in dirs.items()}
    for name, doc in docs.items():
        assert doc["run"]["status"] == "completed", (name, (dirs[name] / runs.LOG).read_text()[-2000:])
    # in order, one at a time: each run's first event comes after the previous run's last
    spans = []
    for name in ("q1", "q2", "q3"):
        events = read_events(dirs[name])[0]
        spans.append((events[0]["t"], events[-1]["t"]))
    assert docs["q1"]["run"]["queue_order"] < docs["q2"]["run"]["queue_order"] < docs["q3"]["run"]["queue_order"]
    assert spans[0][1] < spans[1][0] and spans[1][1] < spans[2][0], spans
    assert docs["q1"]["run"]["finished"] <= docs["q2"]["run"]["started"] <= docs["q2"]["run"]["finished"]
    assert docs["q2"]["run"]["finished"] <= docs["q3"]["run"]["started"]
    log = (runs.runs_root(home) / queue.LOG).read_text()
    assert all(f"started {dirs[n].name}" in log for n in ("q1", "q2", "q3")), log
    wait_for(lambda: queue.runner_pid(home) is None, timeout=600)  # nothing waits: the runner exited


def test_the_review_step_offers_to_queue_after_the_run_on_the_same_device(home, monkeypatch):
    import asyncio

    from textual.widgets import Button
    from tunewiz.core.planning.hardware import Hardware
    from tunewiz.tui.app import create_app
    from tunewiz.tui.review_step import ReviewStep

    from tests.conftest import SAMPLE
    from tests.test_app import SIZE, screen_name, text_of, wait_until

    asked = []

    def fake_submit(cfg, home_dir, hw=None, warn=None, extra=None):
        asked.append(cfg)
        return queue.Queued(waiting_run(home_dir, cfg.name, 1), 1, [live.name])

    monkeypatch.setattr(queue, "submit", fake_submit)
    live = runs.create_run(RunConfig(name="live"), home, extra={"plan": {"placement": ["cpu"]}})
    runs.set_status(live, "running")

    async def run() -> None:
        app = create_app(home, data=str(SAMPLE / "support_tickets.jsonl"))
        app.hardware = Hardware(cpu_physical_cores=2, ram_total_gb=24, ram_available_gb=22)
        async with app.run_test(size=SIZE) as pilot:
            await app.push_screen(ReviewStep())
            button = app.screen.query_one("#queue", Button)
            await wait_until(pilot, lambda: button.display)
            assert "w queues this run after it" in text_of(app, "#review-warnings")
            await pilot.press("w")
            await wait_until(pilot, lambda: screen_name(app) == "HistoryScreen")
            table = app.screen.query_one("#runs")
            await wait_until(pilot, lambda: table.row_count == 2)
            labels = {str(table.get_row_at(i)[1]) for i in range(2)}
            assert any("queued #1" in x for x in labels), labels

    with runs.hold_trainer_lock(live):
        asyncio.run(run())
    (cfg,) = asked
    assert cfg.data.path.endswith("support_tickets.jsonl")


def test_a_one_gpu_trainer_records_the_gpu_as_the_machine_numbers_it(monkeypatch):
    """The trainer on GPU 1 sees only it, as cuda:0 (launcher.trainer_env); its record says cuda:1."""
    from tunewiz.core.training.trainer import machine_placement

    env = launcher.trainer_env({}, ["cuda:1"])
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    monkeypatch.setenv(launcher.PLACEMENT_ENV, env[launcher.PLACEMENT_ENV])
    seen = {"device": "cuda", "processes": 1, "placement": ["cuda:0"], "reasons": {"placement": "cuda:0"}}
    assert machine_placement(seen)["placement"] == ["cuda:1"]
    assert "as placed when the run started" in seen["reasons"]["placement"]
    ddp = {"device": "cuda", "processes": 2, "placement": ["cuda:0", "cuda:1"], "reasons": {}}
    assert machine_placement(dict(ddp))["placement"] == ["cuda:0", "cuda:1"]
