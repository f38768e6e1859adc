"""Every module's doctests, run through their installed names (the suite's own --doctest-modules
collects only tests/, so the examples in core/ and tui/ would otherwise never run)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from importlib.util import find_spec
from pathlib import Path

import pytest


def with_examples() -> list[str]:
    out = []
    for package in ("tunewiz.core", "tunewiz.tui"):
        spec = find_spec(package)
        for m in pkgutil.walk_packages(spec.submodule_search_locations, prefix=f"{package}."):
            origin = find_spec(m.name).origin
            if origin and ">>> " in Path(origin).read_text(encoding="utf-8"):
                out.append(m.name)
    return out


@pytest.mark.parametrize("name", with_examples())
def test_doctests_pass(name):
    result = doctest.testmod(
        importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.attempted > 0 and result.failed == 0, result


def test_the_engine_and_the_app_have_examples():
    names = with_examples()
    assert {"tunewiz.core.planning.memory", "tunewiz.tui.figures", "tunewiz.tui.review_step"} <= set(names)
