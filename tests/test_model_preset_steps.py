"""The wizard's model and preset steps at 80x24: the catalog ranked for this machine with its memory,
and the preset cards' predicted peak memory and time (Textual pilot, no model loaded)."""

from __future__ import annotations

import asyncio

import pytest
from textual.widgets import OptionList, Static
from tunewiz.core.hardware import GPU, Hardware
from tunewiz.tui.app import create_app
from tunewiz.tui.figures import memory_bar, model_rows, preset_figures
from tunewiz.tui.preset_step import PresetStep

from tests.conftest import SAMPLE
from tests.test_app import SIZE, screen_name, text_of, wait_until

CPU_BOX = Hardware(cpu_physical_cores=2, ram_total_gb=24, ram_available_gb=22)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a catalog model is never fetched by a test


def model_app(home, hw=CPU_BOX):
    app = create_app(home, data=str(SAMPLE / "support_tickets.jsonl"))
    app.hardware = hw
    return app


def rows_of(app) -> list[str]:
    return [str(o.prompt) for o in app.screen.query_one("#models", OptionList).options]


async def open_model_step(pilot) -> None:
    app = pilot.app
    await pilot.press("enter")
    await wait_until(pilot, lambda: screen_name(app) == "ModelStep")
    await wait_until(pilot, lambda: app.screen.local is not None and app.screen.shape is not None)
    await pilot.pause()


def test_model_list_puts_the_bundled_model_first_and_shows_memory_for_every_catalog_model(home):
    async def run() -> None:
        app = model_app(home)
        async with app.run_test(size=SIZE) as pilot:
            await open_model_step(pilot)
            rows = rows_of(app)
            assert len(rows) == 2 * 19  # every catalog model, LoRA and QLoRA
            assert rows[0].startswith("smollm2-135m") and "LoRA" in rows[0] and rows[0].endswith("bundled")
            assert "Apache-2.0" in rows[0] and " fits " in rows[0] and "█" in rows[0]
            assert all(len(r) <= 72 for r in rows), max(rows, key=len)  # inside the list at 80 columns
            qwen7 = next(r for r in rows if r.startswith("qwen2.5-7b") and " LoRA " in r)
            assert "7.6B" in qwen7 and "needs download" in qwen7
            assert " no " in qwen7 and qwen7.count("█") == 10  # 7.6B in fp32 on 22 GB of RAM: does not fit
            fitting = [r for r in rows[2:] if " fits " in r]
            assert fitting and rows.index(fitting[-1]) < rows.index(qwen7)  # what fits comes first
            head = text_of(app, "#model-head")
            assert "of 22.0 GiB RAM" in head and "licence" in head
            choice = text_of(app, "#model-choice")
            assert "bundled:smollm2-135m-instruct with LoRA" in choice and "GiB, fits" in choice
            assert "tok/s" in choice and "tokens per example" in choice

            await pilot.press("down")  # the bundled model with QLoRA: the radio set follows the row
            await pilot.pause()
            assert (app.cfg.model.id, app.cfg.model.method) == ("bundled:smollm2-135m-instruct", "qlora")

    asyncio.run(run())


def test_next_explains_a_catalog_model_that_is_not_on_this_machine(home):
    async def run() -> None:
        app = model_app(home)
        async with app.run_test(size=SIZE) as pilot:
            await open_model_step(pilot)
            box = app.screen.query_one("#models", OptionList)
            box.highlighted = next(i for i, r in enumerate(rows_of(app)) if r.startswith("qwen2.5-0.5b"))
            await pilot.pause()
            assert app.cfg.model.id == "Qwen/Qwen2.5-0.5B-Instruct"
            assert "Next downloads it" in text_of(app, "#model-choice")
            await pilot.press("ctrl+n")
            await wait_until(pilot, lambda: "could not get" in text_of(app, "#model-choice"))
            assert screen_name(app) == "ModelStep"
            assert "bundled:smollm2-135m-instruct" in text_of(app, "#model-choice")  # the way out
            assert "see above" in str(app.screen.query_one("#nav-msg").render())

            app.screen.query_one("#custom-model").value = "not a model id"
            await pilot.press("tab", "enter", "ctrl+n")
            await wait_until(pilot, lambda: "unknown model id" in text_of(app, "#model-choice"))
            assert screen_name(app) == "ModelStep"

    asyncio.run(run())


def test_picking_a_usable_model_after_one_that_is_not_clears_the_problem(home, monkeypatch):
    """A gemma that cannot be fetched here, then the bundled model: no 'cannot use' left on the bar."""

    async def run() -> None:
        app = model_app(home)
        toasts = []
        monkeypatch.setattr(app, "notify", lambda *a, **k: toasts.append(a))
        async with app.run_test(size=SIZE) as pilot:
            await open_model_step(pilot)
            box = app.screen.query_one("#models", OptionList)
            box.highlighted = next(i for i, r in enumerate(rows_of(app)) if r.startswith("gemma2-2b"))
            await pilot.press("ctrl+n")
            await wait_until(pilot, lambda: "could not get" in text_of(app, "#model-choice"))
            assert "cannot use this model" in str(app.screen.query_one("#nav-msg").render())
            await pilot.press("home")  # the bundled model, first in the list
            await pilot.pause()
            assert app.cfg.model.id == "bundled:smollm2-135m-instruct"
            assert "GiB, fits" in text_of(app, "#model-choice") and "could not get" not in text_of(app, "#model-choice")
            assert str(app.screen.query_one("#nav-msg").render()).strip() == ""
            assert toasts == []

    asyncio.run(run())


def test_model_list_on_a_gpu_ranks_the_largest_model_that_fits_first(home):
    gpu_box = Hardware(gpus=[GPU(0, "RTX 4090", 24.0, 23.5, "8.9", True)], cpu_physical_cores=8, ram_available_gb=64)

    async def run() -> None:
        app = model_app(home, gpu_box)
        async with app.run_test(size=SIZE) as pilot:
            await open_model_step(pilot)
            rows = rows_of(app)
            assert rows[0].startswith("smollm2-135m")  # still first: the one model that needs no download
            assert "of 23.5 GiB GPU" in text_of(app, "#model-head")
            first_other = next(r for r in rows if not r.startswith("smollm2-135m"))
            assert " fits " in first_other and first_other.split()[1].endswith("B")  # billions of parameters

    asyncio.run(run())


def test_preset_cards_show_predicted_memory_and_time_for_the_model_and_data(home):
    async def run() -> None:
        app = model_app(home)
        app.data_summary = {"rows": 360, "train": 324, "eval": 36, "tokens_max": 119, "train_tokens": 31_700}
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: screen_name(app) == "HardwareStep")
            await app.push_screen(PresetStep())
            await wait_until(pilot, lambda: getattr(app.screen, "approx", None) is not None)
            await pilot.pause()
            cards = {n: text_of(app, f"#card-{n}") for n in ("conservative", "balanced", "aggressive")}
            for text in cards.values():
                assert "peak" in text and "GiB, fits" in text and "time ~" in text
            minutes = {n: t.split("time ~")[1] for n, t in cards.items()}
            assert minutes["conservative"] != minutes["aggressive"]  # 2 epochs vs 5
            app.screen.query_one("#f-max_steps").value = "2"
            await pilot.pause()
            assert "time ~" in text_of(app, "#card-balanced")
            eta = text_of(app, "#card-balanced").split("time ~")[1].strip()
            assert eta.endswith("s") and "m" not in eta, eta  # 2 steps: seconds, not minutes
            assert all(isinstance(w, Static) for w in app.screen.query(".card"))

    asyncio.run(run())


def test_memory_bar_and_rows_fit_80_columns():
    from tunewiz.core import planner
    from tunewiz.core.config import RunConfig

    assert memory_bar(0.1, 100) == "█" + "░" * 9 and memory_bar(500, 100) == "█" * 10
    rows = model_rows(planner.recommend(RunConfig(), CPU_BOX), 22 * 1024, {})
    assert all(len(r.plain) <= 72 for _, _, r in rows)
    assert rows[0][0] == "bundled:smollm2-135m-instruct"


def test_preset_figures_say_when_the_model_is_unknown():
    from tunewiz.core.config import RunConfig

    cfg = RunConfig()
    cfg.model.id = "someone/private-model"
    assert preset_figures(cfg, CPU_BOX, None) == ("peak ? (unknown model)", "time ?")
    assert preset_figures(cfg, None, None) == ("peak ?", "time ?")
