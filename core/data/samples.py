"""The sample datasets that ship with tunewiz (in the wheel as ``tunewiz.sample_data``)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

DEFAULT = "support_tickets.jsonl"


def path(name: str = DEFAULT) -> Path:
    """The file of a bundled sample dataset, installed or in a checkout.

    >>> path().name
    'support_tickets.jsonl'
    """
    p = Path(str(files("tunewiz.sample_data") / name))
    if not p.is_file():
        raise FileNotFoundError(f"sample data {name!r} is not part of this tunewiz installation ({p})")
    return p
