"""One peak-memory figure for one model, data and preset: the model step, the preset card, the review
step and `tunewiz fit --data` all show the planner's figure (Textual pilot at 80x24, the real
tokenizer; nothing is trained)."""

from __future__ import annotations

import asyncio
import re

from tunewiz.core.planning import hardware
from tunewiz.tui import cli
from tunewiz.tui.app import create_app
from tunewiz.tui.commands import planning as planning_commands

from tests.conftest import SAMPLE
from tests.test_app import SIZE, link_models, screen_name, text_of, wait_until

PEAK = re.compile(r"(\d+(?:\.\d+)? (?:GiB|MiB)), (fits|too big|does not fit)")


def peak_in(text: str) -> str:
    m = PEAK.search(text.replace("does not fit", "too big"))
    assert m, text
    return m.group(1)


def test_model_step_preset_card_review_and_fit_show_the_same_peak(home, session_home, bundled_dir, monkeypatch, capsys):
    link_models(session_home, home)
    data = str(SAMPLE / "support_tickets.jsonl")
    hw = hardware.detect(home)
    hw.ram_available_gb = hw.ram_total_gb = 16.0  # the same machine for the wizard and for `fit`
    monkeypatch.setattr(planning_commands, "_fit_hardware", lambda ns: hw)
    seen: dict[str, str] = {}

    async def run() -> None:
        app = create_app(home, data=data)
        app.hardware = hw
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("enter")
            await wait_until(pilot, lambda: screen_name(app) == "ModelStep")
            await pilot.press("ctrl+n")
            await wait_until(pilot, lambda: screen_name(app) == "DataStep")
            await wait_until(pilot, lambda: app.data_shape is not None)
            await pilot.press("escape")  # back to the model step, now that the data is known
            await wait_until(pilot, lambda: screen_name(app) == "ModelStep")
            await wait_until(pilot, lambda: "the longest)" in text_of(app, "#model-choice"))
            seen["model step"] = peak_in(text_of(app, "#model-choice"))
            await pilot.press("ctrl+n")
            await wait_until(pilot, lambda: screen_name(app) == "DataStep")
            await wait_until(pilot, lambda: app.data_shape is not None)
            await pilot.press("ctrl+n")
            await wait_until(pilot, lambda: screen_name(app) == "PresetStep")
            await pilot.pause()
            seen["preset card"] = peak_in(text_of(app, "#card-balanced"))
            await pilot.press("ctrl+n")
            await wait_until(pilot, lambda: screen_name(app) == "ReviewStep")
            await wait_until(pilot, lambda: "plan:" in text_of(app, "#review-plan"))
            seen["review"] = peak_in(text_of(app, "#review-plan"))

    asyncio.run(run())
    capsys.readouterr()
    cli.main(["fit", "--model", "bundled:smollm2-135m-instruct", "--data", data, "--preset", "balanced"])
    seen["tunewiz fit"] = peak_in(capsys.readouterr().out.splitlines()[-1])
    assert len(set(seen.values())) == 1, seen
