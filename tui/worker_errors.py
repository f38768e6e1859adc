"""The one handler of failed workers, and how a failure is worded for the user.

Every slow call runs in a `@work(..., exit_on_error=False)` worker, so an exception ends the worker,
not the app. Textual sends `Worker.StateChanged` only to the node that started the worker (it does
not bubble), so the handler is written once here and mixed into the App and every screen that
starts workers. It shows a notification that says what failed and what to do, then calls the
node's `worker_failed` hook, where a screen puts the message in place of the data that never came
(the hardware step's "Detecting...", the data step's "Checking...").
"""

from __future__ import annotations

from textual.worker import Worker, WorkerState
from tunewiz.core.errors import TunewizError

# What each worker group was doing, as the first words of "... failed".
TASKS = {
    "hardware": "Detecting the hardware",
    "models-on-disk": "Checking which models are on this machine",
    "data-shape": "Measuring the data",
    "data": "Checking the data",
    "fetch-model": "Getting the model",
    "submit": "Starting the run",
    "sweep": "Reading the sweep's runs",
    "poll": "Reading the run's progress",
    "export": "The export",
    "history": "Reading the runs",
    "delete": "Deleting the run",
    "review": "Saving the review to run.toml",
    "chat-load": "Loading the model",
    "chat": "Answering",
}


def error_text(exc: BaseException | None) -> str:
    """What the user reads about a failed worker: a TunewizError's own message (it already says what was
    wrong and what to do); anything else is a bug in tunewiz, named by its type.

    >>> error_text(TunewizError("cannot write to the runs directory /x: use --home"))
    'cannot write to the runs directory /x: use --home'
    >>> error_text(KeyError("gpus"))
    "KeyError: 'gpus' - this is a bug in tunewiz; please report it with what you did"
    """
    if isinstance(exc, TunewizError):
        return str(exc)
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"{what} - this is a bug in tunewiz; please report it with what you did"


def task_of(worker: Worker) -> str:
    """'Detecting the hardware', from the worker's group (its name where the group is not known)."""
    return TASKS.get(worker.group) or worker.name or "A background task"


class ReportsWorkerErrors:
    """Mixed into the App and the screens: one `on_worker_state_changed` for every worker they start."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        shown: dict[str, str] = self.__dict__.setdefault("_worker_errors_shown", {})
        if event.state == WorkerState.SUCCESS:
            shown.pop(worker.group, None)
        if event.state != WorkerState.ERROR:
            return
        text = error_text(worker.error)
        if shown.get(worker.group) != text:  # a worker on a timer (polling) fails the same way each time
            shown[worker.group] = text
            self.notify(  # type: ignore[attr-defined]
                text, title=f"{task_of(worker)} failed", severity="error", timeout=10, markup=False
            )
        self.log.error(f"worker {worker.name!r} ({worker.group}) failed", worker.error)  # type: ignore[attr-defined]
        self.worker_failed(worker.group, text)

    def worker_failed(self, group: str, text: str) -> None:
        """Show the failure where the worker's result would have gone; the notification is already up.

        `group`: the worker's group (see TASKS); `text`: the failure in the user's words (error_text).
        """
