"""The one base of every error a user can act on.

Each subclass's message says what was wrong, where (file, line, field) and what to do; the CLI and
the wizard catch :class:`TunewizError` and show that message, nothing else. Anything else that
escapes is a bug and keeps its traceback.
"""


class TunewizError(Exception):
    """An error worded for the user: what was wrong, where, and what to do."""
