"""The one owner of a run's record, run.toml: its typed sections, its statuses and its schema version.

Every other module reads a record through :class:`Record` (``rec.run.status``, ``rec.results.train_loss``,
``rec.plan.placement``) and changes one through ``runs.update_record(run_dir, lambda rec: ...)``; none
indexes a section by its name. A record is untrusted input (copied from another machine, edited by hand,
written by an older tunewiz), so reading it never fails on a value of the wrong type: the typed field reads
as unset and the value is kept, as it was, in the section's ``extra`` and written back unchanged. Keys this
tunewiz does not know are kept the same way, so a newer tunewiz's record survives an older one's write.

Schema versions (``schema = N`` at the top of the file; a record without one is version 0):

* 0: everything tunewiz wrote before the version was recorded. Migrated in memory on read, and on disk at
  the next write: a failed run's ``failure_kind`` from the words of its reason (the last place those words
  are read), ``created_unix`` from ``created`` or the run's id.
* 1: this module.

The request sections ([model], [data], [preset], [training], [evaluation], [notify]) are also read from
``--config`` files: :class:`tunewiz.core.config.RunConfig` owns their settings (``Record.request()``);
the facts a run adds to [model] and [data] (the resolved path, the data's hash and row counts) are typed here.

May import: core.config, core.errors. Nothing of training, judging or the UI.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, TypeVar

SCHEMA = 1
"""The schema version this tunewiz writes."""


class Status(enum.StrEnum):
    """A run's [run] status, with the sets each belongs to and its colour."""

    QUEUED = "queued"
    """Created, its trainer starting (crashed if none appears within a grace period)."""
    RUNNING = "running"
    WAITING = "waiting"
    """In the run queue (core.training.queue), waiting its turn: neither active nor final, never crashed."""
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"
    CRASHED = "crashed"
    CANCELLED = "cancelled"
    """Taken out of the run queue before it started: nothing was trained."""
    DAMAGED = "damaged"
    """Never written into a record: what a listing calls a run whose run.toml is missing or unreadable."""

    @property
    def active(self) -> bool:
        """A trainer is (or should be) working on it."""
        return self in (Status.QUEUED, Status.RUNNING)

    @property
    def final(self) -> bool:
        """It ended: nothing will change it but `tunewiz resume` (of a resumable one) or `repair`."""
        return self in (Status.COMPLETED, Status.STOPPED, Status.FAILED, Status.CRASHED, Status.CANCELLED)

    @property
    def resumable(self) -> bool:
        """`tunewiz resume` continues it from its newest complete checkpoint."""
        return self in (Status.STOPPED, Status.CRASHED, Status.FAILED)

    @property
    def colour(self) -> str:
        """Its colour wherever a status is shown (history, train screen, sweep, `tunewiz runs`)."""
        return _COLOURS.get(self, "")


_COLOURS = {
    Status.COMPLETED: "green",
    Status.FAILED: "red",
    Status.CRASHED: "red",
    Status.DAMAGED: "red",
    Status.RUNNING: "cyan",
    Status.QUEUED: "cyan",
    Status.WAITING: "cyan",
    Status.STOPPED: "yellow",
}
ACTIVE = tuple(s for s in Status if s.active)
FINAL = tuple(s for s in Status if s.final)
RESUMABLE = tuple(s for s in Status if s.resumable)
WRITTEN = tuple(s for s in Status if s is not Status.DAMAGED)
"""Every status tunewiz writes into a record; any other value is a damaged record."""


class FailureKind(enum.StrEnum):
    """[run] failure_kind of a failed run: what the screens offer a one-key way out of."""

    NONE = ""
    OUT_OF_MEMORY = "out_of_memory"
    DISK_FULL = "disk_full"

    @classmethod
    def of_reason(cls, reason: str) -> FailureKind:
        """The kind of failure the trainer's own words for it name (core.training.trainer.classify_failure
        writes them; records from before failure_kind are migrated with the same rule).

        >>> FailureKind.of_reason("Out of memory. Try ..."), FailureKind.of_reason("Disk full: ...")
        (<FailureKind.OUT_OF_MEMORY: 'out_of_memory'>, <FailureKind.DISK_FULL: 'disk_full'>)
        """
        if reason.startswith("Out of memory") or "Out of memory. Try" in reason:
            return cls.OUT_OF_MEMORY
        return cls.DISK_FULL if reason.startswith("Disk full") else cls.NONE


# -- typed sections ----------------------------------------------------------------

S = TypeVar("S", bound="Section")


NON_FINITE = ("nan", "inf", "-inf")
"""How core.toml writes a float that is not finite: read back into a float field as that float."""


def _fits(value: Any, hint: Any) -> bool:
    """Whether a TOML value is of the type a field declares (`X | None`, list[str], dict, ...)."""
    if value is None:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint) if h is not type(None))
    if hint is Any:
        return True
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, hint)


@dataclasses.dataclass
class Section:
    """A table of the record. Its known keys are typed fields (None: not in the record); every other key,
    and a known key whose value is of the wrong type, is kept in `extra` and written back as it was."""

    extra: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    _hints: ClassVar[dict[type, dict[str, Any]]] = {}

    @classmethod
    def _types(cls) -> dict[str, Any]:
        if cls not in Section._hints:
            hints = typing.get_type_hints(cls)
            Section._hints[cls] = {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.name != "extra"}
        return Section._hints[cls]

    @classmethod
    def read(cls: type[S], raw: Any) -> S:
        section = cls()
        if isinstance(raw, Mapping):
            section.update(raw)
        return section

    def update(self, values: Mapping[str, Any]) -> None:
        """Set keys from a mapping: a known key of the right type into its field, anything else into extra."""
        known = self._types()
        for key, value in values.items():
            key = str(key)
            if key in known and value in NON_FINITE and _fits(1.0, known[key]) and not _fits(value, known[key]):
                value = float(value)  # written as text (core.toml: TOML readers disagree on nan)
            if key in known and _fits(value, known[key]):
                setattr(self, key, _plain(value))
                self.extra.pop(key, None)
            else:
                if key in known:
                    setattr(self, key, None)
                self.extra[key] = value

    def drop(self, *keys: str) -> None:
        """Remove keys from the section, known or not."""
        known = self._types()
        for key in keys:
            if key in known:
                setattr(self, key, None)
            self.extra.pop(key, None)

    def to_dict(self) -> dict[str, Any]:
        """The table as TOML gets it: the set fields in their order, then the kept keys."""
        out = {k: getattr(self, k) for k in self._types() if getattr(self, k) is not None}
        out.update((k, v) for k, v in self.extra.items() if k not in out)
        return out


def _plain(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


@dataclasses.dataclass
class Run(Section):
    """[run]: who the run is and where it stands."""

    id: str | None = None
    name: str | None = None
    status: str | None = None
    created: str | None = None
    created_unix: float | None = None
    queued_unix: float | None = None
    host: str | None = None
    launcher_pid: int | None = None
    pid: int | None = None
    started: str | None = None
    finished: str | None = None
    failure_reason: str | None = None
    failure_kind: str | None = None
    log_tail: str | None = None
    stopped_at_step: int | None = None
    last_step: int | None = None
    resumed: int | None = None
    resumed_at: list[str] | None = None
    previous_status: str | None = None
    notified: str | None = None
    queue_order: float | None = None
    queued_at: str | None = None
    queue_started: str | None = None
    cancelled_at: str | None = None
    sweep: str | None = None
    repaired: str | None = None
    repaired_from: list[str] | None = None
    repair_unknown: list[str] | None = None

    @property
    def state(self) -> Status | None:
        """The status as a :class:`Status`; None for a value tunewiz never writes."""
        try:
            return Status(self.status) if self.status is not None else None
        except ValueError:
            return None

    @property
    def kind_of_failure(self) -> FailureKind:
        """What a failed run's failure was (NONE for every other run, and for a kind this tunewiz does not know)."""
        if self.status != Status.FAILED:
            return FailureKind.NONE
        try:
            return FailureKind(self.failure_kind or "")
        except ValueError:
            return FailureKind.NONE


@dataclasses.dataclass
class ModelFacts(Section):
    """[model]: the requested model (its settings belong to RunConfig) and what the trainer resolved it to."""

    id: str | None = None
    method: str | None = None
    dtype: str | None = None
    source: str | None = None
    resolved_path: str | None = None
    revision: str | None = None
    effective_dtype: str | None = None
    parameters: int | None = None
    trainable_parameters: int | None = None


@dataclasses.dataclass
class DataFacts(Section):
    """[data]: the requested data (its settings belong to RunConfig) and what the trainer found in it."""

    path: str | None = None
    eval_path: str | None = None
    sha256: str | None = None
    eval_sha256: str | None = None
    format: str | None = None
    train_rows: int | None = None
    eval_rows: int | None = None
    total_tokens: int | None = None
    trained_tokens: int | None = None
    truncated_rows: int | None = None
    dropped_rows: int | None = None
    lint: dict[str, Any] | None = None


@dataclasses.dataclass
class Plan(Section):
    """[plan]: the planner's decisions for this run (core.planning.planner.Plan.to_record) and why."""

    device: str | None = None
    placement: list[str] | None = None
    processes: int | None = None
    parallelism: str | None = None
    dtype: str | None = None
    per_device_batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    effective_batch: int | None = None
    total_steps: int | None = None
    reasons: dict[str, Any] | None = None


@dataclasses.dataclass
class Estimate(Section):
    """[estimate]: the memory and time the planner expected (replaced by the trainer's, on tokenized data)."""

    peak_memory_mb: float | None = None
    tokens_per_s: float | None = None
    train_time_s: float | None = None
    source: str | None = None
    note: str | None = None


@dataclasses.dataclass
class Results(Section):
    """[results]: what training measured, and the comparison's figures for each model (core.judging.metrics
    owns the shape of `base` and `finetuned`)."""

    train_loss: float | None = None
    eval_loss: float | None = None
    steps: int | None = None
    epochs: float | None = None
    tokens_per_s: float | None = None
    peak_memory_mb: float | None = None
    train_time_s: float | None = None
    wall_time_s: float | None = None
    comparison: str | None = None
    base: dict[str, Any] | None = None
    finetuned: dict[str, Any] | None = None
    human: dict[str, Any] | None = None

    @property
    def finetuned_eval_loss(self) -> float | None:
        """The fine-tuned model's held-out loss: the comparison's, else the last one training measured."""
        loss = (self.finetuned or {}).get("eval_loss")
        return loss if _fits(loss, float) and loss is not None else self.eval_loss


@dataclasses.dataclass
class Artifacts(Section):
    """[artifacts]: where the run's products are (adapter, checkpoints, predictions, exports)."""

    adapter: str | None = None
    checkpoints: str | None = None
    predictions: str | None = None
    tensorboard: str | None = None
    merged: dict[str, Any] | None = None


TYPED: dict[str, type[Section]] = {
    "run": Run,
    "model": ModelFacts,
    "data": DataFacts,
    "plan": Plan,
    "estimate": Estimate,
    "results": Results,
    "artifacts": Artifacts,
}
"""The sections read into typed fields; the rest are kept as tables (see Record.tables)."""
ORDER = ("run", "model", "data", "preset", "training", "evaluation", "notify", "plan", "estimate")
"""Where a table a record did not have is written: the request first, then what the run found."""


@dataclasses.dataclass
class Record:
    """A run.toml, typed. `tables` holds every other top-level table as read ([preset], [training],
    [evaluation], [notify], [hardware], [versions], and anything a newer tunewiz wrote)."""

    run: Run = dataclasses.field(default_factory=Run)
    model: ModelFacts = dataclasses.field(default_factory=ModelFacts)
    data: DataFacts = dataclasses.field(default_factory=DataFacts)
    plan: Plan = dataclasses.field(default_factory=Plan)
    estimate: Estimate = dataclasses.field(default_factory=Estimate)
    results: Results = dataclasses.field(default_factory=Results)
    artifacts: Artifacts = dataclasses.field(default_factory=Artifacts)
    tables: dict[str, Any] = dataclasses.field(default_factory=dict)
    schema: int = SCHEMA
    read_schema: int = SCHEMA
    """The version the record had on disk (0: written before versions); `schema` is what it is now."""
    order: list[str] = dataclasses.field(default_factory=list, repr=False, compare=False)
    """The tables in the order they were read: written back in it."""

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Record:
        """A record from a TOML document, migrated to this schema in memory."""
        rec = cls()
        version = doc.get("schema", 0)
        rec.read_schema = max(version, 0) if isinstance(version, int) and not isinstance(version, bool) else 0
        rec.schema = max(rec.read_schema, SCHEMA)  # a newer tunewiz's record keeps its version (and its keys)
        rec.order = [str(k) for k in doc if k != "schema"]
        for key, value in doc.items():
            if key in TYPED and isinstance(value, Mapping):
                setattr(rec, key, TYPED[key].read(value))
            elif key != "schema":
                rec.tables[key] = value
        for step in MIGRATIONS[rec.read_schema :]:
            step(rec)
        return rec

    def to_dict(self) -> dict[str, Any]:
        """The TOML document: the schema version, then the tables in the order they were read, new ones
        where tunewiz writes them (the request first, then what the run found)."""
        tables: dict[str, Any] = {}
        for key in TYPED:
            table = getattr(self, key).to_dict()
            if table or (key in ("run", "model", "data") and key not in self.tables):
                tables[key] = table
        for key, value in self.tables.items():
            tables.setdefault(key, value)
        order = [*self.order, *(k for k in ORDER if k not in self.order)]
        ranked = sorted(tables, key=lambda k: order.index(k) if k in order else len(order))
        return {"schema": self.schema, **{k: tables[k] for k in ranked}}

    @property
    def status(self) -> Status | None:
        return self.run.state

    def _table(self, name: str) -> dict[str, Any]:
        value = self.tables.get(name)
        return value if isinstance(value, dict) else {}

    @property
    def preset(self) -> str:
        """The preset's name ('' when the record has none)."""
        name = self._table("preset").get("name", "")
        return name if isinstance(name, str) else ""

    @property
    def notify(self) -> dict[str, Any]:
        """[notify] as written ({} when none): its settings are RunConfig's (core.config.NotifyConfig)."""
        return self._table("notify")

    @property
    def training(self) -> dict[str, Any]:
        """[training] as written, for showing it ({} when none); `request()` gives it typed and checked."""
        return self._table("training")

    @property
    def evaluation(self) -> dict[str, Any]:
        """[evaluation] as written, for showing it ({} when none); `request()` gives it typed and checked."""
        return self._table("evaluation")

    @property
    def hardware(self) -> dict[str, Any]:
        """[hardware]: the machine the run trained on (core.planning.hardware.Hardware.to_dict), as written."""
        return self._table("hardware")

    @property
    def versions(self) -> dict[str, Any]:
        """[versions]: the libraries the run trained with, as written."""
        return self._table("versions")

    def set_table(self, name: str, values: Mapping[str, Any]) -> None:
        """Merge into one of the untyped tables ([hardware], [versions], ...), made when missing."""
        table = self.tables.get(name)
        if not isinstance(table, dict):
            table = self.tables[name] = {}
        table.update(values)

    def has(self, table: str, key: str | None = None) -> bool:
        """Whether the record holds the table (non-empty), or a key of it."""
        value = self.to_dict().get(table)
        if not isinstance(value, dict):
            return False
        return bool(value) if key is None else key in value

    def merge(self, sections: Mapping[str, Mapping[str, Any]] | Record) -> None:
        """Merge {table: {key: value}} (or another record's tables) into the record: typed tables field by
        field, others as tables; empty tables and the schema version are left out."""
        if isinstance(sections, Record):
            sections = sections.to_dict()
        for name, values in sections.items():
            if not isinstance(values, Mapping) or not values:
                continue
            if name in TYPED:
                getattr(self, name).update(values)
            else:
                self.set_table(name, values)

    def request(self, strict: bool = False, source: str = ""):
        """The run's settings as a RunConfig (raises config.ConfigError, naming `source`, when they do not hold)."""
        from tunewiz.core.config import RunConfig

        return RunConfig.from_dict(self.to_dict(), source=source, strict=strict)


def problem_of(doc: Mapping[str, Any], cut: str = "", name: str = "run.toml") -> tuple[Record | None, str]:
    """(the record, '') for a TOML document that is a tunewiz record, else (None, what is wrong with it):
    no [run] table, a status tunewiz never writes, or nothing after [run] (cut off). `cut` is added to the
    words when the file stopped mid-line."""
    run = doc.get("run")
    if not isinstance(run, Mapping):
        return None, f"{name} has no [run] table{cut or ' (not a tunewiz record, or cut off?)'}"
    status = run.get("status")
    if status not in WRITTEN:
        return None, f"{name} has [run] status = {status!r}, not one tunewiz writes (hand-edited or damaged?)"
    if not any(isinstance(doc.get(s), Mapping) for s in ("model", "data", "training")) and not run.get("repaired"):
        return None, f"{name} ends after its [run] table: [model], [data] and [training] are missing (cut off?)"
    return Record.from_dict(doc), ""


# -- migrations -----------------------------------------------------------------------


def id_time(run_id: str) -> float | None:
    """When a run was created, from its id (`YYYYmmdd-HHMMSS-name`, local time), or None.

    >>> datetime.fromtimestamp(id_time("20300102-030405-balanced")).isoformat()
    '2030-01-02T03:04:05'
    >>> id_time("not-a-run") is None
    True
    """
    m = re.match(r"(\d{8}-\d{6})(?:-|$)", run_id)
    if not m:
        return None
    try:
        return datetime.strptime(m.group(1), "%Y%m%d-%H%M%S").timestamp()
    except ValueError:
        return None


def _failure_kind_from_words(rec: Record) -> None:
    """0 -> 1: a failed run's kind of failure was recognised from the words of its reason."""
    run = rec.run
    if run.status != Status.FAILED or run.failure_kind is not None:
        return
    kind = FailureKind.of_reason(run.failure_reason or "")
    if kind is not FailureKind.NONE:
        run.failure_kind = kind.value


def _created_unix(rec: Record) -> None:
    """0 -> 1: runs made before created_unix existed are ordered by their `created` time, or their id's."""
    run = rec.run
    if run.created_unix is not None:
        return
    try:
        run.created_unix = datetime.fromisoformat(run.created or "").timestamp()
        return
    except ValueError:
        pass
    when = id_time(run.id or "")
    if when is not None:
        run.created_unix = when


def _to_1(rec: Record) -> None:
    _failure_kind_from_words(rec)
    _created_unix(rec)


MIGRATIONS = [_to_1]
"""MIGRATIONS[n] takes a record of version n to n + 1."""
assert len(MIGRATIONS) == SCHEMA
