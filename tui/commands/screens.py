"""The commands that open the Textual app (tunewiz.tui.app): the wizard, the run history and the blind
review; run_app, which opens it on any screen, also serves `attach` and `chat`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tunewiz.core.bookkeeping import runs
from tunewiz.tui.commands.request import UserError
from tunewiz.tui.commands.shared import sample_data
from tunewiz.tui.record_text import review_progress


def run_app(
    ns, start: str = "wizard", run: Path | None = None, chat_options=None, review_rows: int | None = None
) -> int:
    from tunewiz.tui.app import create_app

    data = getattr(ns, "data", None)
    if start == "wizard" and not data:
        try:
            data = str(sample_data())
        except UserError:
            data = None
    app = create_app(
        runs.home(ns.home), start=start, run=run, data=data, chat_options=chat_options, review_rows=review_rows
    )
    result = app.run()
    if app.return_code:
        return app.return_code
    if isinstance(result, str):
        print(result)
    return 0


def cmd_wizard(ns) -> int:
    return run_app(ns)


def cmd_history(ns) -> int:
    return run_app(ns, start="history")


def cmd_review(ns) -> int:
    """`tunewiz review RUN [--rows N]`: the blind A/B review screen (core.review), continued where it stopped."""
    from tunewiz.core.judging import review

    run_dir = runs.find_run(runs.home(ns.home), ns.run)
    opened = review.Review.open(run_dir, ns.rows)  # no predictions, a bad --rows: one message, before the screen
    if not sys.stdout.isatty():
        raise UserError(
            f"the review needs a terminal; {review_progress(opened.summary().as_record())} "
            f"(`tunewiz show {run_dir.name}` prints the summary)"
        )
    return run_app(ns, start="review", run=run_dir, review_rows=ns.rows)
