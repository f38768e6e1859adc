"""The wizard driven with the keyboard at 80x24, as a user would (Textual pilot)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static
from tunewiz.core import runs
from tunewiz.core.config import RunConfig
from tunewiz.core.toml import read_toml
from tunewiz.tui.app import create_app

from tests.conftest import HANG_S, SAMPLE

SIZE = (80, 24)


async def wait_until(pilot, predicate, timeout: float = HANG_S, step: float = 0.1) -> None:
    """Poll until `predicate()`; the generous timeout is for a busy machine, not an expected wait."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(step)
    raise AssertionError(f"condition not met within {timeout}s on screen {pilot.app.screen!r}")


def screen_name(app) -> str:
    return type(app.screen).__name__


def text_of(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


def link_models(session_home: Path, home: Path) -> None:
    (home / "models").mkdir(parents=True, exist_ok=True)
    for d in (session_home / "models").iterdir():
        if not (home / "models" / d.name).exists():
            (home / "models" / d.name).symlink_to(d)


def set_field(app, field_id: str, value: str) -> None:
    app.screen.query_one(f"#{field_id}", Input).value = value


@pytest.mark.slow
def test_wizard_end_to_end_with_the_keyboard(home, session_home, bundled_dir):
    """Hardware -> model -> data -> preset (tiny override) -> review -> train -> evaluate, all by keys."""
    link_models(session_home, home)

    async def run() -> None:
        app = create_app(home, data=str(SAMPLE / "support_tickets.jsonl"))
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.hardware is not None)
            assert "GPU: none found" in text_of(app, "#hw")
            await pilot.press("enter")  # Next
            await wait_until(pilot, lambda: screen_name(app) == "ModelStep")
            await pilot.press("ctrl+n")
            await wait_until(pilot, lambda: screen_name(app) == "DataStep")
            await wait_until(pilot, lambda: "324 train / 36 held out" in text_of(app, "#data-summary"))
            assert "20 trained" in text_of(app, "#preview")  # the JSON answer + <|im_end|>
            await pilot.press("]")  # focus left the path field once the data loaded: ] browses
            await wait_until(pilot, lambda: "example 2/360 (line 2)" in text_of(app, "#preview"))
            assert app.screen.query_one("#data-path", Input).value.endswith("support_tickets.jsonl")
            await pilot.press("ctrl+n")
            await wait_until(pilot, lambda: screen_name(app) == "PresetStep")
            assert app.cfg.preset == "balanced" and app.cfg.training.lora_r == 16
            await pilot.press("right")
            assert app.cfg.preset == "aggressive" and app.cfg.training.lora_r == 64
            await pilot.press("left")
            assert app.cfg.preset == "balanced"
            await pilot.press("ctrl+a")
            set_field(app, "f-max_steps", "x")
            await pilot.pause()
            assert "max steps (-1: all epochs): expected a whole number" in text_of(app, "#adv-error")
            await pilot.press("ctrl+n")  # refused while a field is invalid
            assert screen_name(app) == "PresetStep"
            set_field(app, "f-max_steps", "2")
            set_field(app, "f-evaluation-max_examples", "2")
            await pilot.pause()
            await pilot.press("ctrl+n")
            await wait_until(pilot, lambda: screen_name(app) == "ReviewStep")
            assert "max_steps = 2" in app.screen.query_one("#toml", Static).content.code
            await pilot.press("ctrl+n")  # Start training (the footer's key; Enter on arrival starts nothing)
            await wait_until(pilot, lambda: screen_name(app) == "TrainScreen")
            train = app.screen
            # 2 steps, then the held-out loss and 2 generations; minutes when the 2 cores are shared
            await wait_until(pilot, lambda: train.status == "completed")
            await pilot.pause(1.0)
            assert "completed" in str(train.query_one("#train-status").render())
            assert "held-out loss" in text_of(app, "#train-stats")
            await pilot.press("e")
            await wait_until(pilot, lambda: screen_name(app) == "EvalScreen")
            metrics = app.screen.query_one("#metrics", DataTable)
            assert metrics.row_count >= 2 and app.screen.query_one("#preds", DataTable).row_count == 2

    asyncio.run(run())
    (run_dir,) = list(runs.runs_root(home).iterdir())
    doc = read_toml(run_dir / runs.RECORD)
    assert doc["run"]["status"] == "completed"
    assert doc["preset"]["name"] == "balanced" and doc["training"]["max_steps"] == 2
    assert doc["training"]["lora_r"] == 16 and doc["results"]["finetuned"]["examples"] == 2


def test_a_refused_next_is_said_once_by_the_buttons_and_goes_when_it_is_no_longer_true(
    home, session_home, bundled_dir, monkeypatch
):
    """Ctrl+N while the data is still loading: the reason between Back and Next (no toast over them),
    gone once the data has loaded."""
    import threading

    from tunewiz.core import lint

    link_models(session_home, home)
    loading = threading.Event()
    tokenizer_for = lint.tokenizer_for

    def held(*args, **kwargs):  # the data step's check waits until the test lets it finish
        loading.wait(HANG_S)
        return tokenizer_for(*args, **kwargs)

    monkeypatch.setattr(lint, "tokenizer_for", held)

    async def run() -> None:
        app = create_app(home, data=str(SAMPLE / "support_tickets.jsonl"))
        toasts = []
        monkeypatch.setattr(app, "notify", lambda *a, **k: toasts.append(a))
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.hardware is not None)
            await pilot.press("enter")
            await wait_until(pilot, lambda: screen_name(app) == "ModelStep")
            await pilot.press("ctrl+n")
            await wait_until(pilot, lambda: screen_name(app) == "DataStep")
            await pilot.press("ctrl+n")  # refused: the file is still being checked
            await pilot.pause()
            bar = app.screen.query_one("#nav-msg")
            assert screen_name(app) == "DataStep" and "not loaded yet" in str(bar.render())
            assert toasts == []  # the one message, by the buttons
            loading.set()
            await wait_until(pilot, lambda: app.screen.ready)
            await pilot.pause()
            assert str(bar.render()).strip() == ""

    try:
        asyncio.run(run())
    finally:
        loading.set()


def test_the_review_step_starts_only_on_its_key(home, monkeypatch):
    """Arriving at the review focuses the record: a stray Enter starts nothing; Ctrl+N, which the footer
    names Start training, does."""
    from tunewiz.core.hardware import Hardware
    from tunewiz.tui.review_step import ReviewStep

    async def run() -> None:
        app = create_app(home, data=str(SAMPLE / "support_tickets.jsonl"))
        started = []
        monkeypatch.setattr(app, "start_run", lambda cfg: started.append(cfg))
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: screen_name(app) == "HardwareStep")
            app.hardware = Hardware(cpu_physical_cores=2, ram_available_gb=16)
            await app.push_screen(ReviewStep())
            await wait_until(pilot, lambda: "plan:" in text_of(app, "#review-plan"))
            review = app.screen
            assert review.focused is review.query_one("#toml-box")
            assert review.active_bindings["ctrl+n"].binding.description == "Start training"
            await pilot.press("enter", "enter")
            await pilot.pause()
            assert started == [] and app.screen is review
            await pilot.press("ctrl+n")
            await wait_until(pilot, lambda: len(started) == 1)

    asyncio.run(run())


def make_run(home: Path, tmp_path: Path, name: str, status: str, **results) -> Path:
    cfg = RunConfig(name=name)
    cfg.data.path = str(tmp_path / f"{name}.jsonl")
    run_dir = runs.create_run(cfg, home)
    runs.update_record(run_dir, {"results": results} if results else {})
    if status != "queued":
        runs.set_status(run_dir, status, **({"failure_reason": "Out of memory. Try ..."} if status == "failed" else {}))
    return run_dir


def test_history_shows_each_status_and_compares_two(home, tmp_path):
    done = make_run(
        home,
        tmp_path,
        "good-run",
        "completed",
        train_loss=0.42,
        wall_time_s=300,
        finetuned={"eval_loss": 0.15, "field_match": 0.58},
        base={"eval_loss": 1.46, "field_match": 0.0},
    )
    make_run(home, tmp_path, "oom-run", "failed")
    live = make_run(home, tmp_path, "live-run", "running")
    other = make_run(home, tmp_path, "other-run", "completed", train_loss=0.5)
    runs.update_record(other, {"training": {"learning_rate": 5e-4}})

    async def run() -> None:
        app = create_app(home, start="history")
        with runs.hold_trainer_lock(live):  # a live trainer holds its lock
            async with app.run_test(size=SIZE) as pilot:
                table = app.screen.query_one("#runs", DataTable)
                await wait_until(pilot, lambda: table.row_count == 4)
                rows = {table.get_row_at(i)[2]: table.get_row_at(i) for i in range(4)}
                assert set(rows) == {"good-run", "oom-run", "live-run", "other-run"}
                assert "completed" in rows["good-run"][1] and rows["good-run"][6] == "fields 58%"
                assert "failed" in rows["oom-run"][1]
                assert "running" in rows["live-run"][1]
                # mark two and compare
                for name in ("good-run", "other-run"):
                    row = next(i for i in range(4) if table.get_row_at(i)[2] == name)
                    table.move_cursor(row=row)
                    await pilot.press("space")
                    await pilot.pause(0.3)
                await pilot.press("c")
                await wait_until(pilot, lambda: screen_name(app) == "CompareScreen")
                cmp = app.screen.query_one("#compare", DataTable)
                keys = [cmp.get_row_at(i)[0] for i in range(cmp.row_count)]
                assert "training.learning_rate" in keys and "results.train_loss" in keys
                await pilot.press("escape")
                # delete asks first; running runs are refused
                row = next(i for i in range(4) if table.get_row_at(i)[2] == "oom-run")
                table.move_cursor(row=row)
                await pilot.press("x")
                await wait_until(pilot, lambda: screen_name(app) == "ConfirmScreen")
                await pilot.press("y")
                await wait_until(pilot, lambda: table.row_count == 3)

    asyncio.run(run())
    assert done.exists() and live.exists()
    assert len(list(runs.runs_root(home).iterdir())) == 3


def test_wizard_refuses_bad_data_with_the_line(home, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [\n')

    async def run() -> None:
        app = create_app(home, data=str(bad))
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: app.hardware is not None)
            await pilot.press("enter", "ctrl+n")  # hardware -> model -> data
            await wait_until(pilot, lambda: screen_name(app) == "DataStep")
            await wait_until(pilot, lambda: "problem" in text_of(app, "#data-summary"))  # a busy machine
            assert "bad.jsonl:1" in text_of(app, "#data-summary")
            await pilot.press("ctrl+n")
            assert screen_name(app) == "DataStep"

    asyncio.run(run())


def test_out_of_memory_failure_offers_a_one_key_retry(home, tmp_path, monkeypatch):
    failed = make_run(home, tmp_path, "oom-run", "failed")
    started = []
    monkeypatch.setattr("tunewiz.tui.app.TunewizApp.start_run", lambda self, cfg: started.append(cfg))

    async def run() -> None:
        app = create_app(home, start="attach", run=failed)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: getattr(app.screen, "status", "") == "failed")
            assert "press r to retry" in str(app.screen.query_one("#train-status").render())
            await pilot.press("r")

    asyncio.run(run())
    (cfg,) = started
    assert cfg.training.per_device_batch_size == 2 and cfg.training.gradient_accumulation_steps == 4  # same 8


def test_evaluation_screen_exports_in_its_own_process_and_says_why_it_failed(home, tmp_path):
    """m on the evaluation screen exports the merged model (in a child process); a run without an
    adapter cannot be exported, and the screen says so instead of hanging."""
    from tunewiz.tui.eval_screen import EvalScreen

    scores = {"base": {"exact_match": 0.0}, "finetuned": {"exact_match": 0.5}}
    done = make_run(home, tmp_path, "no-adapter", "completed", **scores)

    async def run() -> None:
        app = create_app(home, start="history")
        async with app.run_test(size=SIZE) as pilot:
            app.push_screen(EvalScreen(done))

            def says(text: str) -> bool:
                nodes = app.screen.query("#next-steps")
                return bool(nodes) and text in str(nodes.first().render())

            await wait_until(pilot, lambda: says("m / g: export"))
            await pilot.press("m")
            assert "exporting merged" in text_of(app, "#next-steps")
            await wait_until(pilot, lambda: "export failed" in text_of(app, "#next-steps"))
            assert "adapter" in text_of(app, "#next-steps")

    asyncio.run(run())


def test_evaluation_screen_warns_about_an_export_that_does_not_stop(home, tmp_path):
    """An export that llama.cpp found not stopping at the end of turn says so in red on the evaluation screen."""
    from tunewiz.tui.eval_screen import EvalScreen

    done = make_run(home, tmp_path, "bad-gguf", "completed", base={"exact_match": 0.0}, finetuned={"exact_match": 0.5})
    warning = "does not stop at the end of turn (25% of answers end there, the adapter model's 100%)"
    bad = {"format": "gguf", "type": "q4_0", "path": "/x/model.gguf", "examples": 4, "agreement": 0.0,
           "token_agreement": 0.3, "stops_at_end_of_turn": False, "checked_by": "llama.cpp",
           "warning": warning}  # fmt: skip
    runs.update_record(done, {"artifacts": {"gguf_q4_0": bad}})

    async def run() -> None:
        app = create_app(home, start="history")
        async with app.run_test(size=SIZE) as pilot:
            app.push_screen(EvalScreen(done))
            await wait_until(pilot, lambda: bool(app.screen.query("#next-steps")))
            text = text_of(app, "#next-steps")
            assert "gguf q4_0: 0% identical on 4 held-out prompts" in text and "DOES NOT STOP" in text
            assert "WARNING does not stop at the end of turn (25% of answers end there" in text.replace("\n", " ")

    asyncio.run(run())
