"""Figures as people read them (durations); shared by every room and the UI."""

from __future__ import annotations


def fmt_duration(seconds: float | None) -> str:
    """
    >>> fmt_duration(75), fmt_duration(3700), fmt_duration(None)
    ('1m15s', '1h01m', '?')
    """
    if seconds is None:
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
