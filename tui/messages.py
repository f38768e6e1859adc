"""Messages that workers post to screens and to the app (never touch a widget from a thread)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.message import Message

if TYPE_CHECKING:
    from tunewiz.core.bookkeeping.record import Record


@dataclass
class HardwareReady(Message):
    """What this machine has, and the devices other runs on it train on ('cuda:1'; the plans avoid them)."""

    hardware: Any
    busy: frozenset[str] = frozenset()

    @classmethod
    def detect(cls, home: Path) -> HardwareReady:
        """Detect the hardware and read the runs' records: file and NVML work, for a worker thread."""
        from tunewiz.core.planning import hardware
        from tunewiz.core.training import launcher

        hw = hardware.detect(home)
        try:
            busy = frozenset(launcher.busy_devices(home))
        except OSError:  # an unreadable runs directory: plan as if no run trains (the review step reads again)
            busy = frozenset()
        return cls(hw, busy)


@dataclass
class DataReady(Message):
    """The data file was read and rendered with the model's chat template."""

    summary: dict[str, Any]
    report: Any = None  # core.lint.Report
    tokenizer: Any = None  # the model's tokenizer, to render the example on show
    problems: list[str] = field(default_factory=list)  # the file could not be read at all
    columns: list[Any] = field(default_factory=list)  # a table's columns (core.data.columns.Column)
    proposal: Any = None  # the column mapping proposed for an unmapped table (core.data.columns.Mapping)


@dataclass
class RunEvents(Message):
    """New events of the followed run, batched (one message per poll, never one per event)."""

    events: list[dict[str, Any]]
    record: Record | None
    """The run's record as observed (None when it could not be read)."""


@dataclass
class ModelsOnDisk(Message):
    """Which catalog models this machine has (model id -> True when no download is needed)."""

    local: dict[str, bool]


@dataclass
class ModelFetched(Message):
    """The chosen model was resolved to a local directory (downloaded if needed), or why not."""

    model_id: str
    error: str = ""


@dataclass
class DataShaped(Message):
    """The chosen data's size and longest example, approximated from its text (core.memory.DataShape)."""

    shape: Any


@dataclass
class ExportDone(Message):
    """An export of the run finished: what it recorded under [artifacts], or why it failed."""

    name: str
    entry: dict[str, Any] = field(default_factory=dict)
    error: str = ""


@dataclass
class RunStarted(Message):
    """A run was submitted (or resumed) and its trainer started: the train screen follows it."""

    run_dir: Path


@dataclass
class RunQueued(Message):
    """Runs were checked and put in the run queue (core.queue.Queued each); `sweep`: the sweep's id when
    they are the three presets of one."""

    queued: list[Any]
    sweep: str = ""


@dataclass
class RunDeleted(Message):
    """A run's directory was removed (history's delete)."""

    run_id: str


@dataclass
class ChatReady(Message):
    """The chat's model is loaded: a core.chat.ChatSession."""

    session: Any


@dataclass
class ChatPiece(Message):
    """Text the model just wrote in the answer being streamed."""

    text: str


@dataclass
class ChatDone(Message):
    """The answer being streamed is complete: how it went (tokens, seconds, cut or stopped)."""

    stats: str
