"""Importing the app or any engine module pulls in no torch & co; the engine never pulls in textual.

One fresh interpreter per module (as Harlequin's test_import_hygiene.py does): a heavy import that
one module hides behind another's would otherwise go unseen.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from importlib.util import find_spec

import pytest

HEAVY = ("torch", "transformers", "peft", "trl", "datasets", "bitsandbytes", "accelerate")


def modules(package: str) -> list[str]:
    spec = find_spec(package)
    assert spec is not None and spec.submodule_search_locations
    return [m.name for m in pkgutil.walk_packages(spec.submodule_search_locations, prefix=f"{package}.")]


def imported_by(module: str) -> set[str]:
    code = f"import {module}, sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {m.split(".")[0] for m in json.loads(out.strip().splitlines()[-1])}


@pytest.mark.parametrize("module", modules("tunewiz.core") + modules("tunewiz.tui"))
def test_importing_pulls_in_no_heavy_library(module):
    loaded = imported_by(module)
    assert not loaded & set(HEAVY), f"{module} imports {sorted(loaded & set(HEAVY))} at import time"
    if module.startswith("tunewiz.core"):
        assert "textual" not in loaded, f"{module} (engine) imports textual"


def test_the_modules_are_found():
    assert {"tunewiz.core.planning.planner", "tunewiz.core.training.trainer", "tunewiz.core.models.loading"} <= set(
        modules("tunewiz.core")
    )
    assert "tunewiz.tui.app" in modules("tunewiz.tui")
