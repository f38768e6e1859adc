"""What several command groups share: a warning on stderr, a run's record summary, the bundled sample
data and the data's shape as the linter measures it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tunewiz.core.bookkeeping import runs
from tunewiz.core.config import RunConfig
from tunewiz.tui.commands.request import UserError
from tunewiz.tui.record_text import record_summary_lines


def warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr, flush=True)


def print_record_summary(rec: runs.Record) -> None:
    print("\n".join(record_summary_lines(rec)))


def sample_data(name: str = "support_tickets.jsonl") -> Path:
    """The bundled sample data, read from the installed package."""
    from tunewiz.core.data import samples

    try:
        return samples.path(name)
    except FileNotFoundError as exc:
        raise UserError(f"{exc}. Reinstall tunewiz (pip install tunewiz) to get it back.") from exc


def data_shape_of(cfg: RunConfig, home_dir: Path):
    """The data's shape as the linter tokenizes it with the model's tokenizer: the same figures the
    wizard's data step plans with."""
    from tunewiz.core.data import lint

    tok = lint.tokenizer_for(cfg.model.id, home_dir, cfg.model.trust_remote_code)
    return lint.lint_run(cfg, tok).data_shape()
