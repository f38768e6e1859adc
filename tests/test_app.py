"""The wizard driven with the keyboard at 80x24, as a user would (Textual pilot)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input, Static
from tunewiz.core.bookkeeping import runs
from tunewiz.core.bookkeeping.record import Record
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
    (run_dir,) = [p for p in runs.runs_root(home).iterdir() if not p.name.startswith(".")]  # no lock files
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

    from tunewiz.core.data import lint

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
    from tunewiz.core.planning.hardware import Hardware
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
    runs.update_record(run_dir, lambda rec: rec.results.update(results))
    if status != "queued":
        oom = {"failure_reason": "Out of memory. Try ...", "failure_kind": runs.OUT_OF_MEMORY.value}
        runs.set_status(run_dir, status, **(oom if status == "failed" else {}))
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
    runs.update_record(other, lambda rec: rec.merge({"training": {"learning_rate": 5e-4}}))

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
    assert len([p for p in runs.runs_root(home).iterdir() if not p.name.startswith(".")]) == 3


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
    runs.update_record(done, lambda rec: rec.artifacts.update({"gguf_q4_0": bad}))

    async def run() -> None:
        app = create_app(home, start="history")
        async with app.run_test(size=SIZE) as pilot:
            app.push_screen(EvalScreen(done))
            await wait_until(pilot, lambda: bool(app.screen.query("#next-steps")))
            text = text_of(app, "#next-steps")
            assert "gguf q4_0: 0% identical on 4 held-out prompts" in text and "DOES NOT STOP" in text
            assert "WARNING does not stop at the end of turn (25% of answers end there" in text.replace("\n", " ")

    asyncio.run(run())


# -- the history screen's keys: re-run asks first, Esc goes back, Home / End, rows told apart ----------


def test_history_rerun_asks_first_saying_what_will_run(home, tmp_path, monkeypatch):
    """r on a 58-minute run asks (preset, length, estimated time); n, Esc and Enter start nothing, y starts it."""
    from tunewiz.core.training import launcher
    from tunewiz.tui.widgets import ConfirmScreen

    long_run = make_run(home, tmp_path, "long-run", "completed", train_loss=0.24, wall_time_s=3504.8)
    runs.update_record(long_run, lambda rec: rec.data.update({"path": str(SAMPLE / "support_tickets.jsonl")}))
    runs.update_record(long_run, lambda rec: rec.estimate.update({"train_time_s": 673.0}))
    started = make_run(home, tmp_path, "started", "queued")
    calls: list[RunConfig] = []

    def fake_submit(cfg, home_dir, hw=None):  # the launcher boundary: no trainer is started
        calls.append(cfg)
        return started

    monkeypatch.setattr(launcher, "submit", fake_submit)

    async def run() -> None:
        app = create_app(home, start="history")
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one("#runs", DataTable)
            await wait_until(pilot, lambda: table.row_count == 2)
            table.move_cursor(row=next(i for i in range(2) if table.get_row_at(i)[2] == "long-run"))
            for answer in ("n", "escape", "enter"):  # No has the focus: Enter is no slip either
                await pilot.press("r")
                await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
                await pilot.press(answer)
                await wait_until(pilot, lambda: screen_name(app) == "HistoryScreen")
            await pilot.press("r")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            question = str(app.screen.query_one(Static).render())
            assert f"Re-run {long_run.name}?" in question
            assert "preset  balanced, 3 epochs" in question
            assert "data    support_tickets.jsonl" in question
            assert "time    ~11m13s estimated; this run took 58m24s" in question
            assert not calls  # asking started nothing
            await pilot.press("y")
            await wait_until(pilot, lambda: screen_name(app) == "TrainScreen")
            assert app.screen.run_dir == started

    asyncio.run(run())
    (cfg,) = calls
    assert cfg.data.path == str(SAMPLE / "support_tickets.jsonl") and cfg.preset == "balanced"


def test_rerun_question_names_max_steps_and_a_record_without_times():
    from tunewiz.tui.history_screen import rerun_question

    cfg = RunConfig(preset="aggressive")
    cfg.data.path = "/data/tickets.jsonl"
    cfg.training.max_steps = 40
    r = runs.RunSummary(
        "20261201-120000-x", Path("/x"), "failed", "x", "", "", "", "", "", None, None, "", None, Record()
    )
    text = rerun_question(r, cfg)
    assert "preset  aggressive, at most 40 steps" in text and "data    tickets.jsonl" in text
    assert "time    no estimate in its record" in text


def footer_keys(app) -> set[tuple[str, str]]:
    from textual.widgets._footer import FooterKey

    return {(k.key, k.description) for k in app.screen.query(FooterKey)}


def test_history_escape_goes_back_home_and_end_jump_and_runs_of_one_name_differ(home, tmp_path):
    """Esc from a history opened with h goes back to the train screen; Home / End go to the first / last
    run; runs of one name differ by their start time and a long name ends in '…'."""
    made = []
    for n, (name, created) in enumerate(
        (
            ("bench-tunewiz", "2026-12-01T18:17:20+00:00"),
            ("bench-tunewiz", "2026-12-01T18:22:33+00:00"),
            ("support_tickets_long_name", "2026-12-01T18:27:26+00:00"),
        )
    ):
        run_dir = make_run(home, tmp_path, f"{name}-{n}", "completed")
        when = {"name": name, "created": created, "created_unix": 1796148000.0 + n}
        runs.update_record(run_dir, lambda rec, when=when: rec.run.update(when))
        made.append(run_dir)

    async def run() -> None:
        app = create_app(home, start="attach", run=made[0])
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: getattr(app.screen, "status", "") == "completed")
            await pilot.press("h")
            await wait_until(pilot, lambda: screen_name(app) == "HistoryScreen")
            table = app.screen.query_one("#runs", DataTable)
            await wait_until(pilot, lambda: table.row_count == 3)
            rows = [table.get_row_at(i) for i in range(3)]  # newest first
            assert [r[2] for r in rows] == ["support_tickets…", "bench-tunewiz", "bench-tunewiz"]
            assert [r[3] for r in rows] == ["12-01 18:27", "12-01 18:22", "12-01 18:17"]
            await pilot.press("end")
            assert table.cursor_row == 2
            await pilot.press("home")
            assert table.cursor_row == 0
            await wait_until(pilot, lambda: ("escape", "Back") in footer_keys(app))
            await pilot.press("escape")
            await wait_until(pilot, lambda: screen_name(app) == "TrainScreen")
            assert app.screen.run_dir == made[0]

    asyncio.run(run())


def test_history_as_the_first_screen_shows_q_quit_and_escape_stays(home, tmp_path):
    make_run(home, tmp_path, "only-run", "completed")

    async def run() -> None:
        app = create_app(home, start="history")
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one("#runs", DataTable)
            await wait_until(pilot, lambda: table.row_count == 1)
            await wait_until(pilot, lambda: ("q", "Quit") in footer_keys(app))
            keys = footer_keys(app)
            assert not any(key in ("escape", "ctrl+q") for key, _ in keys)  # q Quit stands for ^q as well
            await pilot.press("escape")  # nowhere to go back to: nothing happens
            await pilot.pause(0.2)
            assert screen_name(app) == "HistoryScreen"
            await pilot.press("q")
            await wait_until(pilot, lambda: not app.is_running)

    asyncio.run(run())


# -- the data step: the findings list's hint, the file browser, an empty path --------------------------


def data_step_app(home, data: str | None = None):
    from tunewiz.core.planning.hardware import Hardware

    app = create_app(home, data=data)
    app.hardware = Hardware(cpu_model="Test CPU", cpu_physical_cores=4, ram_total_gb=16, ram_available_gb=12)
    return app


async def open_data_step(pilot) -> None:
    from tunewiz.tui.data_step import DataStep

    await wait_until(pilot, lambda: screen_name(pilot.app) == "HardwareStep")
    await pilot.app.push_screen(DataStep())
    await pilot.pause()


@pytest.fixture
def no_tokenizer(monkeypatch):
    """The structure is checked without the model's tokenizer: faster, and all these tests need."""
    from tunewiz.core.data import lint

    monkeypatch.setattr(lint, "tokenizer_for", lambda *a, **k: None)


def test_data_step_tab_from_the_example_reaches_the_findings_and_enter_shows_one(home, no_tokenizer):
    async def run() -> None:
        app = data_step_app(home, data=str(SAMPLE / "support_tickets.jsonl"))
        async with app.run_test(size=SIZE) as pilot:
            await open_data_step(pilot)
            await wait_until(pilot, lambda: app.screen.ready)
            assert "(Tab: list, Enter: show row)" in text_of(app, "#data-summary")
            await wait_until(pilot, lambda: app.focused is app.screen.query_one("#preview-box"))
            assert "example 1/360" in text_of(app, "#preview")
            await pilot.press("tab")  # one Tab, as the summary says
            findings = app.screen.query_one("#findings")
            assert app.focused is findings and findings.highlighted == 0
            await pilot.press("enter")
            await wait_until(pilot, lambda: "[dataset-size]" in text_of(app, "#preview"))
            await pilot.press("tab")
            assert app.focused is app.screen.query_one("#back")
            await pilot.press("shift+tab", "shift+tab")  # back through the list to the example
            assert app.focused is app.screen.query_one("#preview-box")

    asyncio.run(run())


def test_data_step_with_errors_focuses_the_list_on_the_first_error(home, tmp_path, no_tokenizer):
    bad = tmp_path / "bad.jsonl"
    good = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
    bad.write_text(good + '{"messages": [\n' + good)

    async def run() -> None:
        app = data_step_app(home, data=str(bad))
        async with app.run_test(size=SIZE) as pilot:
            await open_data_step(pilot)
            await wait_until(pilot, lambda: "problem(s) to fix" in text_of(app, "#data-summary"))
            assert "(↑/↓: list, Enter: show row)" in text_of(app, "#data-summary")
            findings = app.screen.query_one("#findings")
            await wait_until(pilot, lambda: app.focused is findings)
            await wait_until(pilot, lambda: "bad.jsonl:2" in text_of(app, "#preview"))  # the first error's row
            assert findings.highlighted == 0

    asyncio.run(run())


def test_data_step_file_browser_opens_here_and_escape_closes_it(home, tmp_path, monkeypatch, no_tokenizer):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tickets.jsonl").write_text((SAMPLE / "support_tickets.jsonl").read_text())

    async def run() -> None:
        app = data_step_app(home)
        async with app.run_test(size=SIZE) as pilot:
            await open_data_step(pilot)
            tree = app.screen.query_one("#tree")
            path_field = app.screen.query_one("#data-path", Input)
            await pilot.press("ctrl+b")  # nothing typed: the working directory, not the one above it
            assert tree.display and app.focused is tree and Path(tree.path) == tmp_path
            assert ("escape", "Close") in footer_keys(app)
            await pilot.press("escape")  # closes the browser, not the step
            assert screen_name(app) == "DataStep" and not tree.display and app.focused is path_field
            path_field.value = "data/not-yet.jsonl"
            await pilot.press("ctrl+b")  # the typed path's folder
            assert Path(tree.path) == tmp_path / "data"
            await pilot.press("ctrl+b")  # ctrl+b again closes it too
            assert not tree.display and app.focused is path_field
            await pilot.press("ctrl+b")
            await pilot.press("tab")  # the focus elsewhere: Esc still closes the open browser first
            await pilot.press("escape")
            assert screen_name(app) == "DataStep" and not tree.display
            await pilot.press("escape")  # and with the browser closed, Esc is Back as on every step
            await wait_until(pilot, lambda: screen_name(app) == "HardwareStep")

    asyncio.run(run())


def test_data_step_empty_path_says_choose_a_file_and_how(home, no_tokenizer):
    from tunewiz.tui.data_step import NO_FILE

    async def run() -> None:
        app = data_step_app(home)
        async with app.run_test(size=SIZE) as pilot:
            await open_data_step(pilot)
            await pilot.press("enter")  # Enter in the empty path field
            summary = text_of(app, "#data-summary")
            assert "Choose a data file first: type its path, or press ctrl+b to browse" in summary
            assert "directory" not in summary
            await pilot.press("ctrl+n")
            assert screen_name(app) == "DataStep"
            assert NO_FILE in " ".join(str(app.screen.query_one("#nav-msg").render()).split())  # said in the bar

    asyncio.run(run())


def test_data_step_says_when_it_waits_for_the_bundled_models_first_conversion(home, monkeypatch):
    """A fresh home: the bundled model is converted before anything can be rendered (a minute on 2
    cores); the data step says so instead of "Checking the data..." alone, then shows the check."""
    import threading

    from tunewiz.core.data import lint

    release = threading.Event()
    monkeypatch.setattr(lint, "tokenizer_for", lambda *a, **k: release.wait(HANG_S) and None)

    async def run() -> None:
        app = data_step_app(home, data=str(SAMPLE / "support_tickets.jsonl"))
        async with app.run_test(size=SIZE) as pilot:
            await open_data_step(pilot)
            await wait_until(pilot, lambda: "first use" in text_of(app, "#data-summary"))
            assert "Preparing the bundled model for its first use" in text_of(app, "#data-summary")
            release.set()
            await wait_until(pilot, lambda: "360 examples" in text_of(app, "#data-summary"))

    asyncio.run(run())


def test_first_use_names_only_what_takes_a_while(tmp_path, session_home, bundled_dir):
    from tunewiz.core.models import resolve as models
    from tunewiz.tui.data_step import first_use

    assert first_use(models.DEFAULT_MODEL, tmp_path).startswith("Preparing the bundled model")
    assert first_use(models.DEFAULT_MODEL, session_home) == ""  # converted already
    assert first_use(str(bundled_dir), tmp_path) == ""  # a model directory on this machine
    assert first_use("someone/not-in-the-cache-xyz", tmp_path).startswith("Fetching someone/not-in-the-cache-xyz")


def test_data_step_proposes_columns_for_a_labelled_table_and_the_keyboard_changes_one(
    home, session_home, bundled_dir, tmp_path
):
    """80x24, keyboard only: the labelled CSV opens the column dialog with the proposal; Next is refused
    until a choice is made; the user moves the answer to another column with the keyboard and accepts;
    the preview then shows the mapped example, its answer trained (highlighted)."""
    from textual.widgets import Select
    from tunewiz.core.data.columns import Mapping
    from tunewiz.tui.columns_dialog import ColumnsScreen

    link_models(session_home, home)
    table = tmp_path / "tickets.csv"
    rows = ["text,team,category"] + [
        f"message {i} about my {thing},{('ops', 'web')[i % 2]},{thing}s"
        for i in range(30)
        for thing in [("card", "loan", "app")[i % 3]]
    ]
    table.write_text("\n".join(rows) + "\n")

    async def run() -> None:
        app = data_step_app(home, data=str(table))
        async with app.run_test(size=SIZE) as pilot:
            await open_data_step(pilot)
            await wait_until(pilot, lambda: isinstance(app.screen, ColumnsScreen), timeout=HANG_S)
            dialog = app.screen
            await wait_until(pilot, lambda: app.focused is dialog.query_one("#use"))  # Enter accepts it
            assert dialog.chosen() == Mapping("text", "category")  # by its name
            await pilot.press("escape")  # no choice: the step refuses Next, saying why
            await wait_until(pilot, lambda: screen_name(app) == "DataStep")
            assert "--prompt-column text --answer-column category" in app.screen.can_continue()
            await pilot.press("ctrl+o")
            await wait_until(pilot, lambda: isinstance(app.screen, ColumnsScreen))
            answer = app.screen.query_one("#answer", Select)
            while app.focused is not answer:
                await pilot.press("tab")
            await pilot.press("enter")  # open it
            await pilot.press("up", "enter")  # category -> team (the columns in the file's order)
            await wait_until(pilot, lambda: answer.value == "team")
            app.screen.query_one("#use").focus()
            await pilot.press("enter")
            await wait_until(pilot, lambda: screen_name(app) == "DataStep")
            step = app.screen
            assert (step.wiz.cfg.data.prompt_column, step.wiz.cfg.data.answer_column) == ("text", "team")
            await wait_until(pilot, lambda: step.ready, timeout=HANG_S)
            assert "columns: prompt 'text' -> answer 'team'" in text_of(app, "#data-summary")
            preview = text_of(app, "#preview")
            assert "message 0 about my card" in preview and "ops" in preview and "trained" in preview
            assert step.can_continue() is None

    asyncio.run(run())
