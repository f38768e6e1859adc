"""A wall-clock limit on a pure-Python call in the calling thread: a chat template is code from the model's
author, and a runaway loop in it (``{% for i in range(100000) %}{% for j in range(100000) %}``) would
hang lint, preview or training, in any thread (the app renders in worker threads, so no signal.alarm).

One watchdog thread, started on first use, raises :class:`Overrun` in a call's own thread when its time
is up (CPython's PyThreadState_SetAsyncExc): the exception lands at the next bytecode, so it stops any
Python loop, a Jinja template's included (a template compiles to Python). A long C call (one huge string
operation) is stopped when it returns.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Overrun(BaseException):
    """Raised inside the call that ran past its limit. A BaseException, so the `except Exception` of the
    code being stopped (Jinja, transformers) does not swallow it; call_within turns it into TimeoutError."""


_cond = threading.Condition()
_deadlines: dict[int, float] = {}  # thread id -> when its call must have returned (time.monotonic)
_watchdog: threading.Thread | None = None


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    """Raise `exc` in that thread at its next bytecode; None clears one not yet raised."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


def _watch() -> None:
    with _cond:
        while True:
            now = time.monotonic()
            for tid, when in list(_deadlines.items()):
                if when <= now:
                    del _deadlines[tid]  # under the lock: the call's own `finally` then knows it was stopped
                    _raise_in(tid, Overrun)
            _cond.wait(timeout=max(0.01, min(_deadlines.values(), default=now + 3600) - now))


def call_within(seconds: float, fn: Callable[..., T], *args, **kwargs) -> T:
    """fn(*args, **kwargs), or TimeoutError when it has not returned after `seconds`. A call made while
    one is already timed in this thread runs under the outer call's limit.

    >>> call_within(5, sum, [1, 2, 3])
    6
    >>> def spin():
    ...     while True:
    ...         pass
    >>> call_within(0.05, spin)
    Traceback (most recent call last):
    ...
    TimeoutError: did not return within 0.05 s
    """
    global _watchdog
    tid = threading.get_ident()
    with _cond:
        nested = tid in _deadlines
        if not nested:
            _deadlines[tid] = time.monotonic() + seconds
            if _watchdog is None:
                _watchdog = threading.Thread(target=_watch, name="tunewiz-deadline", daemon=True)
                _watchdog.start()
            _cond.notify()
    if nested:
        return fn(*args, **kwargs)
    try:
        try:
            return fn(*args, **kwargs)
        finally:
            with _cond:
                if _deadlines.pop(tid, None) is None:  # the watchdog fired: drop it if not yet raised
                    _raise_in(tid, None)
    except Overrun:
        raise TimeoutError(f"did not return within {seconds:g} s") from None


__all__ = ["call_within"]
