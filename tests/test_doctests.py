"""The doctests of the tui's plain modules, run through their installed names (the suite's own
--doctest-modules collects only tests/)."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["tunewiz.tui.figures", "tunewiz.tui.record_text", "tunewiz.tui.worker_errors"])
def test_doctests_pass(name):
    result = doctest.testmod(
        importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.attempted > 0 and result.failed == 0, result
