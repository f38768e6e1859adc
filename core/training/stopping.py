"""What stops a training process from outside: a stop signal, or its run directory removed.

:class:`StopFlag` turns SIGTERM/SIGINT into a request the trainer honours at the end of the current
step (the second signal exits at once); SIGHUP is ignored, so a closed terminal never stops training.
:class:`RunWatch` notices that the run's directory was deleted (or replaced) under the trainer, which
then stops with :class:`RunRemoved` and writes nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

from tunewiz.core.bookkeeping import runs

log = logging.getLogger("tunewiz.trainer")


class StopFlag:
    """Set by SIGTERM/SIGINT; the second signal exits immediately."""

    def __init__(self) -> None:
        self.requested = False
        self.last_words: Callable[[], None] | None = None
        """Called before a second signal exits: once the adapter is saved, it records the run as what it
        is (completed, its comparison cut short), so `stop --now` never leaves a saved run `crashed`."""

    def install(self) -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            log.warning("second stop signal: exiting now without saving")
            if self.last_words is not None:
                try:
                    self.last_words()
                except Exception:  # noqa: BLE001 - exiting regardless; the record says what it could
                    log.exception("could not record the stop")
            os._exit(130)
        self.requested = True
        log.warning("stop requested: finishing the current step, then saving a checkpoint and the adapter")


class RunRemoved(Exception):
    """The run's directory was deleted (or replaced) under the trainer: stop, and write nothing."""


class RunWatch:
    """Whether the run directory the trainer started in is still there (the same directory, not a new one
    made under the same name): checked at every step and before every save, so deleting a run stops its
    trainer and nothing re-creates the directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.ino = os.stat(run_dir).st_ino

    def gone(self) -> bool:
        try:
            return os.stat(self.run_dir).st_ino != self.ino or not (self.run_dir / runs.TRAINER_LOCK).exists()
        except OSError:
            return True

    def check(self) -> None:
        if self.gone():
            self.take_back()
            raise RunRemoved(f"{self.run_dir} was removed while training: stopping, writing nothing")

    def take_back(self) -> None:
        """Remove a directory a write in flight made again at the removed run's path (a checkpoint being
        saved while the run was deleted): what is there now was written by this trainer after the removal."""
        try:
            again = os.stat(self.run_dir).st_ino != self.ino
        except OSError:
            return
        if again:
            shutil.rmtree(self.run_dir, ignore_errors=True)
