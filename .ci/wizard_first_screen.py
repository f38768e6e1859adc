"""Open the installed wizard headless, as `tunewiz wizard` does, and check its first screen.

Run by .ci/wheel_check with the Python of a venv that has the tunewiz wheel installed (not editable),
from a directory outside the checkout. Exits non-zero, with what was on screen, when the check fails.
"""

from __future__ import annotations

import asyncio
import sys
import time

import tunewiz.tui.app
from tunewiz.core.bookkeeping import runs
from tunewiz.core.data import samples
from tunewiz.tui.app import create_app

TIMEOUT_S = 120.0


def text(app, selector: str) -> str:
    return str(app.screen.query_one(selector).render())


async def main() -> int:
    # The app `tunewiz wizard` builds (create_app, as the CLI's run_app calls it): the home from
    # $TUNEWIZ_HOME, the installed sample data selected.
    app = create_app(runs.home(None), start="wizard", data=str(samples.path()))
    async with app.run_test(size=(80, 24)) as pilot:
        deadline = time.monotonic() + TIMEOUT_S
        while app.hardware is None:
            if time.monotonic() > deadline:
                print(f"wizard: hardware not detected within {TIMEOUT_S:.0f}s on {app.screen!r}", file=sys.stderr)
                return 1
            await pilot.pause(0.1)
        await pilot.pause()
        screen = type(app.screen).__name__
        title, hw = text(app, "#step-title"), text(app, "#hw")
        if "Step 1 of" not in title or "Hardware" not in title or "RAM:" not in hw:
            print(f"wizard: unexpected first screen {screen}:\n{title}\n{hw}", file=sys.stderr)
            return 1
    print(f"  screen {screen}: {title.split('  ')[0]!r}; {hw.splitlines()[0]!r}  (from {tunewiz.tui.app.__file__})")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
