"""The wizard's model and preset steps at 80x24: the catalog ranked for this machine with its memory,
and the preset cards' predicted peak memory and time (Textual pilot, no model loaded)."""

from __future__ import annotations

import asyncio

import pytest
from textual.widgets import OptionList, Static
from tunewiz.core.planning.hardware import GPU, Hardware
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

            app.screen.query_one("#custom-model").value = "smollm2-135m"  # a catalog name, as `recommend` prints
            app.screen.query_one("#custom-model").focus()
            await pilot.press("enter")
            assert app.cfg.model.id == "bundled:smollm2-135m-instruct"

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


TWO_GPUS = Hardware(
    gpus=[GPU(0, "A100", 80.0, 20.0, "8.0", True), GPU(1, "A100", 80.0, 79.0, "8.0", True)],
    cpu_physical_cores=16,
    ram_available_gb=128,
)


@pytest.mark.parametrize(("busy", "gpu", "free"), [((), "cuda:1", "79.0"), (("cuda:1",), "cuda:0", "20.0")])
def test_on_two_gpus_the_model_list_bars_are_of_the_gpu_the_run_gets(home, busy, gpu, free):
    """GPU 0 is mostly taken: the plans pick GPU 1 and the bars are shares of its free memory, not of
    GPU 0's; while another run trains on GPU 1, the plans (and the bars) are for GPU 0."""
    from tunewiz.core.planning.planner import catalog_id
    from tunewiz.tui.figures import memory_bar

    async def run() -> None:
        app = model_app(home, TWO_GPUS)
        app.busy = frozenset(busy)
        async with app.run_test(size=SIZE) as pilot:
            await open_model_step(pilot)
            assert f"of {free} GiB GPU" in text_of(app, "#model-head")
            rows = {(mid, method): row.plain for mid, method, row in app.screen.rows}
            for r in app.screen.recs:
                assert r.plan.placement == [gpu]
                assert memory_bar(r.peak_mb, float(free) * 1024) in rows[catalog_id(r.spec), r.method]

    asyncio.run(run())


def test_the_review_and_card_figures_plan_for_the_gpu_the_run_gets():
    from tunewiz.core.config import RunConfig
    from tunewiz.core.planning import planner
    from tunewiz.tui.review_step import plan_line

    cfg = RunConfig()
    cfg.model.id = "bundled:smollm2-135m-instruct"
    assert plan_line(cfg, TWO_GPUS, None).startswith("plan: cuda:1, bfloat16")
    assert plan_line(cfg, TWO_GPUS, None, busy={"cuda:1"}).startswith("plan: cuda:0, bfloat16")
    one = Hardware(gpus=TWO_GPUS.gpus[:1], cpu_physical_cores=16, ram_available_gb=128)
    assert plan_line(cfg, one, None).startswith("plan: cuda, bfloat16")  # one GPU: nothing to choose
    for busy in ((), {"cuda:1"}):
        peak, _ = preset_figures(cfg, TWO_GPUS, None, busy)
        assert peak == planner.plan(cfg, TWO_GPUS, busy=busy).memory_line()


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
                assert "peak" in text and "GiB, fits" in text and "training ~" in text
            minutes = {n: t.split("training ~")[1] for n, t in cards.items()}
            assert minutes["conservative"] != minutes["aggressive"]  # 2 epochs vs 5
            app.screen.query_one("#f-max_steps").value = "2"
            await pilot.pause()
            assert "training ~" in text_of(app, "#card-balanced")
            eta = text_of(app, "#card-balanced").split("training ~")[1].strip()
            assert eta.endswith("s") and "m" not in eta, eta  # 2 steps: seconds, not minutes
            assert all(isinstance(w, Static) for w in app.screen.query(".card"))

    asyncio.run(run())


def test_memory_bar_and_rows_fit_80_columns():
    from tunewiz.core.config import RunConfig
    from tunewiz.core.planning import planner

    assert memory_bar(0.1, 100) == "█" + "░" * 9 and memory_bar(500, 100) == "█" * 10
    rows = model_rows(planner.recommend(RunConfig(), CPU_BOX), 22 * 1024, {})
    assert all(len(r.plain) <= 72 for _, _, r in rows)
    assert rows[0][0] == "bundled:smollm2-135m-instruct"


def test_preset_figures_say_when_the_model_is_unknown():
    from tunewiz.core.config import RunConfig

    cfg = RunConfig()
    cfg.model.id = "someone/private-model"
    assert preset_figures(cfg, CPU_BOX, None) == ("peak ? (unknown model)", "training ?")
    assert preset_figures(cfg, None, None) == ("peak ?", "training ?")


# -- the preset step's advanced fields, kept over a preset change; Ctrl+T asks first --------------------------


async def open_preset_step(pilot) -> None:
    app = pilot.app
    await wait_until(pilot, lambda: screen_name(app) == "HardwareStep")
    await app.push_screen(PresetStep())
    await wait_until(pilot, lambda: getattr(app.screen, "approx", None) is not None)  # the cards' times
    await pilot.pause()


def focused_id(app) -> str:
    return getattr(app.focused, "id", "") or ""


def in_view(app, widget) -> bool:
    """The widget is painted whole inside the advanced fields' visible area."""
    area = app.screen.query_one("#adv-fields").region
    return widget.region.height > 0 and area.contains_region(widget.region)


def test_a_preset_change_keeps_the_settings_you_edited_and_the_card_says_so(home):
    """Ctrl+A, max steps 2, off the fields, then right and left: still a 2-step run, on every card."""

    async def run() -> None:
        app = model_app(home)
        async with app.run_test(size=SIZE) as pilot:
            await open_preset_step(pilot)
            full = text_of(app, "#card-balanced").split("training ~")[1].strip()
            await pilot.press("ctrl+a")
            assert focused_id(app) == "f-learning_rate"
            await pilot.press("tab", "tab", "2")  # a field's text is selected when Tab reaches it
            await pilot.pause()
            assert app.screen.query_one("#f-max_steps").value == "2" and app.cfg.training.max_steps == 2
            await pilot.press(*["tab"] * 8)  # past the last field: off the fields, onto the buttons
            assert focused_id(app) in ("back", "next")
            await pilot.press("right")
            await pilot.pause()
            assert app.cfg.preset == "aggressive" and app.cfg.training.lora_r == 64  # the preset's own
            assert app.cfg.training.learning_rate == 5e-4 and app.cfg.training.max_steps == 2  # and yours
            assert app.screen.query_one("#f-max_steps").value == "2"
            await pilot.press("left")
            await pilot.pause()
            t = app.cfg.training
            assert app.cfg.preset == "balanced" and t.max_steps == 2 and (t.lora_r, t.learning_rate) == (16, 2e-4)
            card = text_of(app, "#card-balanced")
            assert "kept: max steps" in card and "2 steps, batch 8" in card
            eta = card.split("training ~")[1].strip()
            assert eta.endswith("s") and "m" not in eta and eta != full, (eta, full)  # seconds, not a full run
            for n in ("conservative", "aggressive"):  # each card is what picking it would train
                assert "2 steps" in text_of(app, f"#card-{n}") and "kept" not in text_of(app, f"#card-{n}")

    asyncio.run(run())


def test_an_edited_preset_setting_is_kept_and_alpha_follows_your_rank(home):
    async def run() -> None:
        app = model_app(home)
        async with app.run_test(size=SIZE) as pilot:
            await open_preset_step(pilot)
            await pilot.press("ctrl+a", "tab", "tab", "tab", "4")  # LoRA rank 4
            await pilot.pause()
            assert app.cfg.training.lora_r == 4 and app.cfg.training.lora_alpha == 8  # 2 x rank, as presets set it
            assert app.screen.query_one("#f-lora_alpha").value == "8"
            await pilot.press("ctrl+a", "right")  # closed: the focus is back off the fields
            await pilot.pause()
            t = app.cfg.training
            assert app.cfg.preset == "aggressive" and (t.lora_r, t.lora_alpha, t.learning_rate) == (4, 8, 5e-4)
            assert "kept: rank" in text_of(app, "#card-aggressive")
            await pilot.press("ctrl+a", "tab", "tab", "tab", *"64")  # back to the preset's own rank
            await pilot.pause()
            assert "lora_r" not in app.screen.edits  # the preset decides it again
            await pilot.press("ctrl+a", "left")
            await pilot.pause()
            t = app.cfg.training
            assert app.cfg.preset == "balanced" and (t.lora_r, t.lora_alpha) == (16, 32)
            assert "kept" not in text_of(app, "#card-balanced")

    asyncio.run(run())


def test_try_all_asks_before_queueing_three_runs(home, monkeypatch):
    from tunewiz.tui.widgets import ConfirmScreen

    async def run() -> None:
        app = model_app(home)
        queued = []
        monkeypatch.setattr(app, "queue_sweep", lambda cfg: queued.append(cfg))
        async with app.run_test(size=SIZE) as pilot:
            await open_preset_step(pilot)
            await pilot.press("ctrl+a", "tab", "tab", "2", "ctrl+a")  # max steps 2: short runs
            await pilot.pause()
            for answer in ("n", "escape"):
                await pilot.press("ctrl+t")
                await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
                question = str(app.screen.query_one(Static).render())
                assert "Queue 3 training runs (conservative, balanced, aggressive)" in question
                assert "one after another" in question and "of training in all" in question
                assert "All three keep your max steps" in question
                await pilot.press(answer)
                await wait_until(pilot, lambda: screen_name(app) == "PresetStep")
                assert queued == [] and "nothing queued" in str(app.screen.query_one("#nav-msg").render())
            await pilot.press("ctrl+t")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_until(pilot, lambda: len(queued) == 1)
            assert queued[0].training.max_steps == 2

    asyncio.run(run())


def test_a_fixed_field_clears_the_refusal_and_nothing_covers_the_bar(home, monkeypatch):
    async def run() -> None:
        app = model_app(home)
        toasts = []
        monkeypatch.setattr(app, "notify", lambda *a, **k: toasts.append(a))
        async with app.run_test(size=SIZE) as pilot:
            await open_preset_step(pilot)
            await pilot.press("ctrl+a", "tab", "x", "ctrl+n")  # epochs: x
            await pilot.pause()
            assert screen_name(app) == "PresetStep"
            assert "epochs: expected a number" in text_of(app, "#adv-error")  # in full above the fields,
            assert "not valid (see above)" in str(app.screen.query_one("#nav-msg").render())  # pointed at
            assert toasts == []  # said by the buttons only: no toast over them
            await pilot.press("ctrl+a")  # closed: the bar says it in full
            assert "epochs: expected a number" in str(app.screen.query_one("#nav-msg").render())
            await pilot.press("ctrl+a", "tab", "2")  # open again, to epochs: fixed
            await pilot.pause()
            assert app.cfg.training.num_epochs == 2
            assert str(app.screen.query_one("#nav-msg").render()).strip() == ""
            assert "expected" not in text_of(app, "#adv-error")

    asyncio.run(run())


def test_advanced_fields_read_well_and_ctrl_a_closes_them_from_a_field(home):
    async def run() -> None:
        app = model_app(home)
        async with app.run_test(size=SIZE) as pilot:
            await open_preset_step(pilot)
            await pilot.press("ctrl+a")
            screen = app.screen
            assert focused_id(app) == "f-learning_rate"
            await wait_until(pilot, lambda: in_view(app, app.focused))
            for label in screen.query(".field-label"):
                assert len(str(label.render())) < label.content_region.width  # a gap before the value
            assert "ctrl+a" in screen.active_bindings  # offered while a field has the focus
            await pilot.press(*["tab"] * 9)  # the last field, the tracker
            assert focused_id(app) == "f-report_to"
            await wait_until(pilot, lambda: in_view(app, app.focused))
            assert "none keeps everything on this machine" in text_of(app, "#adv-error")
            await pilot.press("x")  # not a tracker: a two-line error above the fields
            await pilot.pause()
            assert "report_to = 'x': use one of none" in text_of(app, "#adv-error")
            await wait_until(pilot, lambda: screen.query_one("#adv-error").region.height == 2)
            await wait_until(pilot, lambda: in_view(app, app.focused))  # the field still seen below it
            await pilot.press("backspace", *"none")
            await pilot.pause()
            assert app.cfg.training.report_to == "none"
            await wait_until(pilot, lambda: in_view(app, app.focused))
            screen.query_one("#f-learning_rate").value = "fast"
            await pilot.pause()
            error = screen.query_one("#adv-error")
            assert "learning rate: expected a number" in text_of(app, "#adv-error")
            assert error.region.height > 0 and error.region.bottom <= screen.query_one("#adv-fields").region.y
            screen.query_one("#f-learning_rate").value = "0.0002"
            await pilot.press("ctrl+a")  # closes from inside a field
            await pilot.pause()
            assert not screen.query_one("#advanced").display and focused_id(app) == "next"
            await pilot.press("ctrl+a")  # open again: the first field, in view
            await pilot.pause()
            assert focused_id(app) == "f-learning_rate"
            await wait_until(pilot, lambda: in_view(app, app.focused))

    asyncio.run(run())
