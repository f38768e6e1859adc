"""A worker that fails says what failed and what to do, on the screen, and the wizard goes on
(Textual pilot at 80x24, nothing trained)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from textual.widgets import Label
from tunewiz.core.data import lint
from tunewiz.core.data.dataset import DataError
from tunewiz.core.errors import TunewizError
from tunewiz.core.planning import hardware
from tunewiz.core.planning.hardware import Hardware
from tunewiz.core.training import launcher
from tunewiz.tui.app import create_app
from tunewiz.tui.data_step import DataStep
from tunewiz.tui.review_step import ReviewStep

from tests.conftest import SAMPLE
from tests.test_app import SIZE, make_run, screen_name, text_of, wait_until

TEST_BOX = Hardware(cpu_model="Test CPU", cpu_physical_cores=4, ram_total_gb=16, ram_available_gb=12)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def notes(app) -> list[str]:
    return [n.message for n in app._notifications]


def nav_message(app) -> str:
    return str(app.screen.query_one("#nav-msg", Label).render())


def failing_then(result: Hardware, error: Exception, calls: list):
    """A hardware.detect that raises `error` on its first call and returns `result` after."""

    def detect(disk_path=None) -> Hardware:
        calls.append(disk_path)
        if len(calls) == 1:
            raise error
        return result

    return detect


def test_failed_hardware_detection_is_shown_and_r_detects_again(home, monkeypatch):
    calls: list = []
    bug = RuntimeError("NVML: driver/library version mismatch")
    monkeypatch.setattr(hardware, "detect", failing_then(TEST_BOX, bug, calls))

    async def run() -> None:
        app = create_app(home, data=str(SAMPLE / "support_tickets.jsonl"))
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: "failed" in text_of(app, "#hw"))
            shown = text_of(app, "#hw")
            assert "Detecting" not in shown and "Hardware detection failed" in shown
            assert "RuntimeError: NVML: driver/library version mismatch - this is a bug" in shown
            assert "press r to try again" in shown and "Next to go on" in shown
            assert any("NVML" in n for n in notes(app))
            assert app.screen.check_action("retry", ()) is True  # in the footer now, hidden before

            await pilot.press("r")
            await wait_until(pilot, lambda: app.hardware is not None)
            await pilot.pause()
            assert len(calls) == 2 and "Test CPU" in text_of(app, "#hw") and "failed" not in text_of(app, "#hw")
            assert app.screen.check_action("retry", ()) is False
            await pilot.press("enter")  # Next
            await wait_until(pilot, lambda: screen_name(app) == "ModelStep")
            assert app.hardware is TEST_BOX

    asyncio.run(run())


def test_next_after_failed_detection_goes_on_as_a_cpu_only_machine(home, monkeypatch):
    calls: list = []
    worded = TunewizError("cannot read /proc/meminfo: permission denied. Run tunewiz as a user who can read it.")
    monkeypatch.setattr(hardware, "detect", failing_then(TEST_BOX, worded, calls))

    async def run() -> None:
        app = create_app(home, data=str(SAMPLE / "support_tickets.jsonl"))
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: "failed" in text_of(app, "#hw"))
            shown = text_of(app, "#hw")
            assert "cannot read /proc/meminfo: permission denied. Run tunewiz as a user" in shown
            assert "bug" not in shown and "TunewizError" not in shown  # a worded error is shown as it is
            await pilot.press("enter")  # Next, with nothing detected
            await wait_until(pilot, lambda: screen_name(app) == "ModelStep")
            assert app.hardware == Hardware() and not app.hardware.gpus
            assert len(calls) == 1  # the model step ranks the fallback; it does not detect again

    asyncio.run(run())


def test_a_run_the_launcher_refuses_is_submitted_in_a_worker_and_its_error_shown(home, monkeypatch):
    threads: list = []

    def refuse(cfg, home_dir, hw=None):
        threads.append(threading.current_thread())
        raise DataError(["tickets.jsonl:3: not valid JSON (Expecting ',' delimiter). Fix the line or delete it."])

    monkeypatch.setattr(launcher, "submit", refuse)

    async def run() -> None:
        app = create_app(home, data=str(SAMPLE / "support_tickets.jsonl"))
        app.hardware = TEST_BOX
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: screen_name(app) == "HardwareStep")
            await app.push_screen(ReviewStep())
            await pilot.pause()
            await pilot.press("ctrl+n")  # Start training
            await wait_until(pilot, lambda: "did not start" in nav_message(app))
            assert threads and threads[0] is not threading.main_thread()
            assert any("tickets.jsonl:3: not valid JSON" in n for n in notes(app))
            assert not any("bug" in n for n in notes(app))
            await pilot.pause(0.2)
            assert screen_name(app) == "ReviewStep"  # still there: fix the data, Back, try again

    asyncio.run(run())


def test_a_submitted_run_opens_the_train_screen_once_however_often_start_is_pressed(home, tmp_path, monkeypatch):
    run_dir = make_run(home, tmp_path, "submitted", "queued")
    calls: list = []
    release = threading.Event()

    def slow_submit(cfg, home_dir, hw=None):
        calls.append(cfg)
        release.wait(10)  # reading a big data file
        return run_dir

    monkeypatch.setattr(launcher, "submit", slow_submit)

    async def run() -> None:
        app = create_app(home, data=str(SAMPLE / "support_tickets.jsonl"))
        app.hardware = TEST_BOX
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: screen_name(app) == "HardwareStep")
            await app.push_screen(ReviewStep())
            await pilot.pause()
            await pilot.press("ctrl+n")  # Start training
            await wait_until(pilot, lambda: calls)
            assert "starting the run" in nav_message(app)  # the screen answers while the launcher works
            await pilot.press("ctrl+n")  # impatient: no second run
            assert "already starting the run" in " ".join(nav_message(app).split())  # by the buttons, wrapped
            release.set()
            await wait_until(pilot, lambda: screen_name(app) == "TrainScreen")
            assert app.screen.run_dir == run_dir and app.run_dir == run_dir
            assert len(calls) == 1

    asyncio.run(run())


def test_a_data_check_that_crashes_says_so_instead_of_checking_forever(home, monkeypatch):
    def crash(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(lint, "tokenizer_for", lambda *a, **k: None)
    monkeypatch.setattr(lint, "lint", crash)

    async def run() -> None:
        app = create_app(home, data=str(SAMPLE / "support_tickets.jsonl"))
        app.hardware = TEST_BOX
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: screen_name(app) == "HardwareStep")
            await app.push_screen(DataStep())
            await wait_until(pilot, lambda: "failed" in text_of(app, "#data-summary"))
            summary = text_of(app, "#data-summary")
            assert "Checking the data failed: ZeroDivisionError: division by zero - this is a bug" in summary
            await pilot.press("ctrl+n")
            assert screen_name(app) == "DataStep"  # nothing was checked: Next stays refused

    asyncio.run(run())
