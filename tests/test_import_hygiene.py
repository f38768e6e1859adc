"""The CLI and the engine's light modules must not pull in torch & co at import time."""

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "peft", "trl", "datasets", "bitsandbytes", "accelerate")


def imported_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_cli_and_core_import_light():
    mods = imported_after(
        "import tui, tui.cli, core.config, core.runs, core.data, core.models, core.presets, "
        "tunewiz.core.events, core.launcher, core.hardware, core.evaluate, core.trainer"
    )
    assert not {m for m in mods if m.split(".")[0] in HEAVY}


def test_core_never_imports_textual():
    mods = imported_after(
        "import tunewiz.core.config, core.runs, core.data, core.trainer, core.launcher, core.evaluate"
    )
    assert "textual" not in mods
