"""Every screen at 80x24, compared with its stored snapshot (pytest-textual-snapshot).

Inputs are fixed so the pictures do not depend on the machine: the hardware is
given, the data and the runs live at fixed paths, and run records are written
by hand with fixed ids and numbers. Update with `pytest tests/test_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import fcntl
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from tunewiz.core.bookkeeping import runs
from tunewiz.core.config import RunConfig
from tunewiz.core.planning.hardware import Hardware
from tunewiz.core.toml import write_toml_atomic
from tunewiz.tui.app import create_app

from tests.conftest import HANG_S, SAMPLE

SIZE = (80, 24)
BASE = Path("/tmp/tunewiz-snapshots")
HW = Hardware(
    cpu_model="AMD EPYC",
    cpu_physical_cores=2,
    cpu_logical_cores=2,
    ram_total_gb=23.5,
    ram_available_gb=22.0,
    disk_free_gb=70.0,
    disk_path="/home/user",
    platform="Linux x86_64",
)
RUN_ID = "20260101-120000-tickets-balanced"


@pytest.fixture(scope="module")
def snap_home(session_home, bundled_dir) -> Iterator[Path]:
    # The paths show in the pictures, so they are fixed: two suites on one machine take turns here.
    with open(f"{BASE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield make_snap_home(session_home)


def make_snap_home(session_home: Path) -> Path:
    shutil.rmtree(BASE, ignore_errors=True)
    home = BASE / "home"
    (home / "models").mkdir(parents=True)
    for d in (session_home / "models").iterdir():
        (home / "models" / d.name).symlink_to(d)
    shutil.copy(SAMPLE / "support_tickets.jsonl", BASE / "tickets.jsonl")
    write_run(home, RUN_ID, "completed", loss=0.42, field_match=0.58, created="2026-01-01T12:00:00+00:00")
    write_run(
        home,
        "20260101-110000-oom-aggressive",
        "failed",
        created="2026-01-01T11:00:00+00:00",
        reason="Out of memory. Try a smaller per_device_batch_size ...",
    )
    return home


def write_run(
    home: Path,
    run_id: str,
    status: str,
    *,
    created: str,
    loss: float | None = None,
    field_match: float | None = None,
    reason: str = "",
) -> Path:
    run_dir = home / "runs" / run_id
    run_dir.mkdir(parents=True)
    cfg = RunConfig(name=run_id.split("-", 2)[2], preset=run_id.rsplit("-", 1)[1])
    cfg.data.path = str(BASE / "tickets.jsonl")
    doc = {
        "run": {
            "id": run_id,
            "name": cfg.name,
            "status": status,
            "created": created,
            "created_unix": 1767268800.0 if "12" in created else 1767265200.0,
            "finished": created,
        },
        **cfg.to_dict(),
    }
    doc["data"].update(train_rows=324, eval_rows=36)
    if reason:
        doc["run"]["failure_reason"] = reason
    if loss is not None:
        doc["results"] = {
            "train_loss": loss,
            "eval_loss": 0.1527,
            "tokens_per_s": 127.5,
            "peak_memory_mb": 2570.3,
            "wall_time_s": 396.0,
            "base": {"eval_loss": 1.4575, "exact_match": 0.0, "json_valid": 0.0, "field_match": 0.0, "examples": 3},
            "finetuned": {
                "eval_loss": 0.1525,
                "exact_match": 0.14,
                "json_valid": 1.0,
                "field_match": field_match,
                "examples": 3,
            },
        }
        events = [
            {
                "t": 1.0 + i,
                "event": "step",
                "step": i,
                "max_steps": 8,
                "epoch": i / 8,
                "loss": round(1.5 / i, 4),
                "learning_rate": 2e-4,
                "tokens_per_s": 120.0,
                "memory_mb": 2100.0,
                "eta_s": (8 - i) * 7.0,
            }
            for i in range(1, 9)
        ]
        events.append({"t": 10.0, "event": "eval", "step": 8, "eval_loss": 0.1527})
        events.append({"t": 11.0, "event": "status", "status": "completed"})
        (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
        (run_dir / "eval").mkdir()
        preds = [
            {
                "line": n,
                "prompt": f"Ticket {n}: my parcel never arrived",
                "expected": '{"category": "shipping"}',
                "base": "I'm sorry to hear that.",
                "finetuned": '{"category": "shipping"}',
                "base_score": {
                    "exact": False,
                    "json_expected": True,
                    "json_valid": False,
                    "fields": 1,
                    "fields_matched": 0,
                },
                "finetuned_score": {
                    "exact": True,
                    "json_expected": True,
                    "json_valid": True,
                    "fields": 1,
                    "fields_matched": 1,
                },
            }
            for n in (3, 7, 9)
        ]
        (run_dir / "eval" / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    write_toml_atomic(run_dir / runs.RECORD, doc)
    return run_dir


LABELS_RUN = "20260102-090000-sentiment-balanced"
SENTIMENT = ["positive", "negative", "neutral"] * 12


@pytest.fixture(scope="module")
def labels_home(snap_home) -> Path:
    """A run whose answers are labels (sentiment): its record has the metrics by kind (core.metrics)."""
    from tunewiz.core.judging.metrics import measure, score, summarize

    home = BASE / "labels-home"
    run_dir = write_run(home, LABELS_RUN, "completed", loss=0.31, field_match=0.0, created="2026-01-02T09:00:00+00:00")
    tuned = SENTIMENT[:30] + ["neutral", "positive", "Neutral.", "positive", "negative", "negative"]
    base = ["The review sounds positive to me."] * 12 + SENTIMENT[12:24] + ["positive"] * 12
    doc = runs.read_record(run_dir).to_dict()
    for which, answers in (("base", base), ("finetuned", tuned)):
        scores = [score(e, a) for e, a in zip(SENTIMENT, answers, strict=True)]
        stopped = [not a.startswith("The review") for a in answers]
        doc["results"][which] = {
            "eval_loss": doc["results"][which]["eval_loss"],
            **summarize(scores),
            **measure(SENTIMENT, answers, stopped),
            "seconds": 20.0,
        }
    write_toml_atomic(run_dir / runs.RECORD, doc)
    preds = [
        {
            "line": n,
            "prompt": f"Review {n}: the battery lasts two days",
            "expected": e,
            "base": b,
            "finetuned": t,
            "base_score": score(e, b),
            "finetuned_score": score(e, t),
        }
        for n, (e, b, t) in enumerate(zip(SENTIMENT, base, tuned, strict=True), 1)
    ]
    (run_dir / "eval" / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    return home


def wizard(home: Path):
    app = create_app(home, data=str(BASE / "tickets.jsonl"))
    app.hardware = HW
    return app


async def steady(pilot) -> None:
    """No blinking cursor in the picture (its phase would differ from run to run)."""
    from textual.widgets import Input

    for widget in pilot.app.screen.query(Input):
        widget.cursor_blink = False
    await pilot.pause(0.2)


async def until(pilot, predicate, timeout: float = HANG_S) -> None:
    import time

    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "screen did not settle"
        await pilot.pause(0.1)


def test_hardware_step(snap_compare, snap_home):
    assert snap_compare(wizard(snap_home), terminal_size=SIZE)


def test_model_step(snap_compare, snap_home):
    async def run_before(pilot):
        await pilot.press("enter")
        # the ranked catalog, once it knows which models are on disk and how long the data's examples are
        await until(pilot, lambda: getattr(pilot.app.screen, "local", None) is not None)
        await until(pilot, lambda: getattr(pilot.app.screen, "shape", None) is not None)
        await steady(pilot)

    assert snap_compare(wizard(snap_home), terminal_size=SIZE, run_before=run_before)


def test_data_step(snap_compare, snap_home):
    async def run_before(pilot):
        await pilot.press("enter", "ctrl+n")
        await until(pilot, lambda: getattr(pilot.app.screen, "ready", False))
        await steady(pilot)

    assert snap_compare(wizard(snap_home), terminal_size=SIZE, run_before=run_before)


def test_preset_step(snap_compare, snap_home):
    async def run_before(pilot):
        await pilot.press("enter", "ctrl+n")
        await until(pilot, lambda: getattr(pilot.app.screen, "ready", False))
        await pilot.press("ctrl+n")
        await until(pilot, lambda: getattr(pilot.app.screen, "approx", None) is not None)  # the cards' figures
        await steady(pilot)

    assert snap_compare(wizard(snap_home), terminal_size=SIZE, run_before=run_before)


async def to_preset_step(pilot) -> None:
    await pilot.press("enter", "ctrl+n")
    await until(pilot, lambda: getattr(pilot.app.screen, "ready", False), 120)
    await pilot.press("ctrl+n")
    await until(pilot, lambda: getattr(pilot.app.screen, "approx", None) is not None)


def test_preset_step_with_an_edit_kept(snap_compare, snap_home):
    """Ctrl+A open on max steps (its meaning above the fields), set to 2, then aggressive picked: every card
    a 2-step run, the chosen one naming the edit it keeps."""

    async def run_before(pilot):
        await to_preset_step(pilot)
        await pilot.press("ctrl+a", "tab", "tab", "2", "ctrl+a", "right", "ctrl+a", "tab", "tab")
        await steady(pilot)

    assert snap_compare(wizard(snap_home), terminal_size=SIZE, run_before=run_before)


def test_try_all_dialog(snap_compare, snap_home):
    """Ctrl+T asks before queueing the three runs, with their time in all."""

    async def run_before(pilot):
        await to_preset_step(pilot)
        await pilot.press("ctrl+t")
        await until(pilot, lambda: type(pilot.app.screen).__name__ == "ConfirmScreen")
        await pilot.pause(0.2)

    assert snap_compare(wizard(snap_home), terminal_size=SIZE, run_before=run_before)


def test_review_step(snap_compare, snap_home):
    async def run_before(pilot):
        await pilot.press("enter", "ctrl+n")
        await until(pilot, lambda: getattr(pilot.app.screen, "ready", False))
        await pilot.press("ctrl+n")
        await pilot.pause()
        await pilot.press("ctrl+n")
        await steady(pilot)

    assert snap_compare(wizard(snap_home), terminal_size=SIZE, run_before=run_before)


def test_help_overlay(snap_compare, snap_home):
    assert snap_compare(wizard(snap_home), terminal_size=SIZE, press=["f1"])


def test_train_screen_of_a_finished_run(snap_compare, snap_home):
    app = create_app(snap_home, start="attach", run=snap_home / "runs" / RUN_ID)

    async def run_before(pilot):
        await until(pilot, lambda: getattr(pilot.app.screen, "status", "") == "completed")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_evaluation_screen(snap_compare, snap_home):
    app = create_app(snap_home, start="attach", run=snap_home / "runs" / RUN_ID)

    async def run_before(pilot):
        await until(pilot, lambda: getattr(pilot.app.screen, "status", "") == "completed")
        await pilot.press("e")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_history_screen(snap_compare, snap_home):
    app = create_app(snap_home, start="history")

    async def run_before(pilot):
        await until(pilot, lambda: pilot.app.screen.query_one("#runs").row_count == 2)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_compare_screen(snap_compare, snap_home):
    """Two runs marked on the history screen and compared: which is A and which is B, and both columns
    within 80 columns."""
    app = create_app(snap_home, start="history")

    async def run_before(pilot):
        await until(pilot, lambda: pilot.app.screen.query_one("#runs").row_count == 2)
        await pilot.press("space", "down", "space", "c")
        await until(pilot, lambda: type(pilot.app.screen).__name__ == "CompareScreen")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_run_screen(snap_compare, snap_home):
    app = create_app(snap_home, start="history")

    async def run_before(pilot):
        await until(pilot, lambda: pilot.app.screen.query_one("#runs").row_count == 2)
        await pilot.press("enter")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_run_screen_with_label_metrics(snap_compare, labels_home):
    app = create_app(labels_home, start="history")

    async def run_before(pilot):
        await until(pilot, lambda: pilot.app.screen.query_one("#runs").row_count == 1)
        await pilot.press("enter")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_evaluation_screen_with_label_metrics(snap_compare, labels_home):
    app = create_app(labels_home, start="attach", run=labels_home / "runs" / LABELS_RUN)

    async def run_before(pilot):
        await until(pilot, lambda: getattr(pilot.app.screen, "status", "") == "completed")
        await pilot.press("e")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_sweep_screen(snap_compare, snap_home):
    """The three presets of a sweep ranked, their loss curves side by side, the best marked, and the
    overfitting advice for the run whose held-out loss rose (records written by hand: tests/test_sweep)."""
    from tests.test_sweep import write_sweep

    home = BASE / "sweep-home"
    write_sweep(home, BASE / "tickets.jsonl")
    app = create_app(home, start="history")

    async def run_before(pilot):
        await until(pilot, lambda: pilot.app.screen.query_one("#runs").row_count == 3)
        await pilot.press("s")
        await until(pilot, lambda: type(pilot.app.screen).__name__ == "SweepScreen")
        await until(pilot, lambda: pilot.app.screen.query_one("#sweep-table").row_count == 3)
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
