"""Repairing a run whose record is damaged or missing: rebuild run.toml from what the directory holds.

A run directory keeps more than its record: events.jsonl (every status, step and result as it
happened), the adapter's adapter_config.json, the checkpoints' trainer_state.json, and the readable
lines of the damaged record or of an unfinished atomic write. :func:`rebuild_record` puts together
what those say (and lists what cannot be known); :func:`repair` keeps the damaged file and writes
the rebuilt record atomically. Listing damaged runs is :mod:`tunewiz.core.bookkeeping.runs`' job.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from tunewiz.core.bookkeeping import checkpoints, runs
from tunewiz.core.bookkeeping.record import FailureKind
from tunewiz.core.config import ConfigError
from tunewiz.core.toml import tomllib, write_toml_atomic

EVENT_STATUS = {
    "preparing": "queued",
    "resuming": "queued",
    "running": "running",
    "evaluating": "running",
    "completed": "completed",
    "stopped": "stopped",
    "failed": "failed",
}
"""The record's status while the trainer's last status event was this one."""

KNOWN_BY_RECORD_ONLY = [
    ("model", "method"),
    ("data", "path"),
    ("data", "sha256"),
    ("preset", "name"),
    ("training", "learning_rate"),
    ("training", "per_device_batch_size"),
    ("training", "gradient_accumulation_steps"),
    ("data", "max_seq_len"),
]
"""Settings only the record itself holds: unknown after a rebuild unless a readable copy had them."""
FACT_SECTIONS = ("hardware", "versions", "plan", "estimate")


def salvage_toml(text: str, max_tries: int = 400) -> tuple[dict[str, Any], list[int]]:
    """The readable part of a damaged TOML text, and the line numbers left out to read it.

    A line cut off at the end is always left out (a number cut short still parses, wrongly); then each
    line the parser stops at is blanked until the rest parses.

    >>> salvage_toml('[run]\\nid = "a"\\nstatus = "runn')
    ({'run': {'id': 'a'}}, [3])
    >>> salvage_toml('[run]\\nid = "a"\\n%%%\\n[model]\\nid = "m"\\n')
    ({'run': {'id': 'a'}, 'model': {'id': 'm'}}, [3])
    """
    lines = text.replace("\0", "").split("\n")
    dropped: list[int] = []
    if not text.endswith("\n") and lines[-1].strip():
        lines[-1], dropped = "", [len(lines)]
    for _ in range(max_tries):
        try:
            return tomllib.loads("\n".join(lines)), sorted(dropped)
        except tomllib.TOMLDecodeError as exc:
            m = runs.TOML_WHERE.search(str(exc))
            if m and m.group(1):
                i = int(m.group(1)) - 1
            else:  # at the end: an array or string left open; give up its last line
                i = max((j for j, line in enumerate(lines) if line.strip()), default=-1)
            if i < 0 or i >= len(lines) or not lines[i].strip():
                break
            lines[i] = ""
            dropped.append(i + 1)
    return {}, sorted(dropped)


def _merge(into: dict[str, Any], doc: dict[str, Any]) -> None:
    for section, values in doc.items():
        if isinstance(values, dict) and isinstance(into.get(section), dict):
            into[section].update(values)
        elif isinstance(values, dict):
            into[section] = dict(values)


def _salvaged(run_dir: Path, done: list[str], sources: list[str]) -> dict[str, Any]:
    """What the damaged record and any unfinished writes of it still say, the newest winning."""
    found = []
    for path in [run_dir / runs.RECORD, *runs.record_copies(run_dir)]:
        try:
            raw = path.read_bytes()
            mtime = path.stat().st_mtime
        except OSError:
            continue
        total = raw.count(b"\n") + (0 if raw.endswith(b"\n") else 1)
        doc, dropped = salvage_toml(raw.decode("utf-8", "replace"))
        doc = {k: v for k, v in doc.items() if isinstance(v, dict)}
        if not doc:
            continue
        name = path.name
        if dropped:
            shown = ", ".join(map(str, dropped[:8])) + (" ..." if len(dropped) > 8 else "")
            done.append(f"read {total - len(dropped)} of {total} lines of {name} (left out line {shown})")
        else:
            done.append(f"read {name}: it is whole")
        sources.append(name)
        found.append((mtime, doc))
    out: dict[str, Any] = {}
    for _, doc in sorted(found, key=lambda x: x[0]):
        _merge(out, doc)
    return out


def _put(rec: runs.Record, section: str, key: str, value: Any, origin: str, done: list[str]) -> None:
    """Set `section.key` from a derived source unless a readable copy of the record had it."""
    if value is None or rec.has(section, key):
        return
    rec.merge({section: {key: value}})
    done.append(f"{section}.{key} = {value!r:.80} from {origin}")


def rebuild_record(run_dir: Path) -> tuple[runs.Record, list[str]]:
    """The record `repair` would write for `run_dir`, and how each part was found; reads, writes nothing.

    Sources: the readable lines of the damaged run.toml and of unfinished writes of it
    (.run.toml.*.tmp), events.jsonl (status, steps, totals, results), the directory name (id and
    creation time), the adapter's adapter_config.json (base model, LoRA rank, alpha, dropout, target
    modules) and the newest checkpoint's trainer_state.json. What none of them holds is left out and
    listed under [run] repair_unknown.
    """
    run_dir = Path(run_dir)
    done: list[str] = []
    sources: list[str] = []
    rec = runs.Record.from_dict(_salvaged(run_dir, done, sources))
    rec.run.drop("status", "failure_reason", "finished", "log_tail", "stopped_at_step")  # decided again below
    _from_directory(run_dir, rec, done, sources)
    status, ended = _from_events(run_dir, rec, done, sources)
    _from_adapter(run_dir, rec, done, sources)
    ckpts = _from_checkpoints(run_dir, rec, done, sources)
    _artifacts(run_dir, rec, ckpts)
    _ending(run_dir, rec, status, ended, done)
    _unknowns(rec, done, sources)
    try:
        rec.request(strict=True)
    except ConfigError as exc:  # a readable line of the old record with a value no config takes
        done.append(f"as a config it needs a hand edit: {'; '.join(exc.problems)}")
    return rec, done


def _from_directory(run_dir: Path, rec: runs.Record, done: list[str], sources: list[str]) -> None:
    """The id, and the name and creation time the directory's name gives when the record lost them."""
    run = rec.run
    name_match = re.match(r"\d{8}-\d{6}-(.+)$", run_dir.name)
    created_unix = runs.id_time(run_dir.name)
    run.id = run_dir.name
    if run.name is None:
        run.name = name_match.group(1) if name_match else run_dir.name
        done.append(f"run.name = {run.name!r} from the directory name (the name as typed is not known)")
    if run.created is None and created_unix is not None:
        run.created, run.created_unix = runs.iso_time(created_unix), created_unix
        done.append(f"run.created = {run.created} from the directory name")
    sources.append("directory name")


def _from_events(run_dir: Path, rec: runs.Record, done: list[str], sources: list[str]) -> tuple[str, bool]:
    """What events.jsonl says: the status its last status event implies (''), whether it says how the
    run ended, the start and end times, the steps, and the results of a completed run."""
    run = rec.run
    d = runs.events_digest(run_dir)
    if not d:
        return "", False
    sources.append(runs.EVENTS)
    if d.get("first_t") is not None and run.started is None:
        run.started = runs.iso_time(d["first_t"])
    last = d.get("status_event", {})
    status = EVENT_STATUS.get(d.get("status", ""), "")
    if status:
        done.append(f"status {status}: the last status event in {runs.EVENTS} is {d['status']!r}")
    if status in runs.FINAL and isinstance(d.get("status_t"), (int, float)):
        run.finished = runs.iso_time(d["status_t"])
    if status == "failed" and last.get("reason"):
        run.failure_reason = str(last["reason"])
        run.failure_kind = FailureKind.of_reason(run.failure_reason).value
    if status == "stopped" and last.get("step") is not None:
        run.update({"stopped_at_step": last["step"]})
    if d.get("last_step") is not None:
        run.update({"last_step": d["last_step"]})
    _put(rec, "training", "total_steps", d.get("total_steps") or d.get("max_steps"), runs.EVENTS, done)
    _put(rec, "training", "num_epochs", d.get("epochs"), f"the train_begin event in {runs.EVENTS}", done)
    if d.get("results") and not rec.results.to_dict():  # noqa: record (the completed event's)
        rec.results.update(d["results"])  # noqa: record (the completed event's)
        done.append(f"[results] from the completed status event in {runs.EVENTS}")
    return status, bool(d.get("status"))


def _from_adapter(run_dir: Path, rec: runs.Record, done: list[str], sources: list[str]) -> None:
    """The base model, revision and LoRA settings the adapter's adapter_config.json names."""
    conf, where = runs.adapter_config(run_dir)
    if conf is None:
        return
    sources.append(where)
    if conf.get("base_model_name_or_path"):
        _put(rec, "model", "id", str(conf["base_model_name_or_path"]), f"{where} (the base the adapter names)", done)
    if conf.get("revision"):
        _put(rec, "model", "revision", str(conf["revision"]), where, done)
    for ours, theirs, kind in (
        ("lora_r", "r", int),
        ("lora_alpha", "lora_alpha", int),
        ("lora_dropout", "lora_dropout", float),
    ):
        value = conf.get(theirs)
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and (kind is float or float(value).is_integer())
        ):
            _put(rec, "training", ours, kind(value), where, done)
    modules = conf.get("target_modules")
    if isinstance(modules, str):
        modules = [modules]
    if isinstance(modules, list) and modules and all(isinstance(m, str) for m in modules):
        _put(rec, "training", "target_modules", sorted(modules), where, done)


def _from_checkpoints(run_dir: Path, rec: runs.Record, done: list[str], sources: list[str]) -> list[Path]:
    """The last step and total steps the newest readable trainer_state.json says; the checkpoints."""
    ckpts = checkpoints.all_checkpoints(run_dir / runs.CHECKPOINTS)
    newest, _ = checkpoints.newest_complete(run_dir / runs.CHECKPOINTS)
    for ckpt in [c for c in [newest, *ckpts] if c is not None]:
        state = runs.read_json(ckpt / "trainer_state.json")
        if state is None:
            continue
        where = f"{runs.CHECKPOINTS}/{ckpt.name}/trainer_state.json"
        sources.append(where)
        if rec.run.last_step is None and isinstance(state.get("global_step"), int):
            rec.run.last_step = state["global_step"]
            done.append(f"run.last_step = {state['global_step']} from {where}")
        if isinstance(state.get("max_steps"), int) and state["max_steps"] > 0:
            _put(rec, "training", "total_steps", state["max_steps"], where, done)
        break
    return ckpts


def _artifacts(run_dir: Path, rec: runs.Record, ckpts: list[Path]) -> None:
    arts = rec.artifacts
    if runs.has_adapter(run_dir) and arts.adapter is None:
        arts.adapter = str(run_dir / runs.ADAPTER)
    if ckpts and arts.checkpoints is None:
        arts.checkpoints = str(run_dir / runs.CHECKPOINTS)
    predictions = run_dir / runs.EVAL / "predictions.jsonl"
    if predictions.is_file() and arts.predictions is None:
        arts.predictions = str(predictions)


def _ending(run_dir: Path, rec: runs.Record, status: str, ended: bool, done: list[str]) -> None:
    """The status: the events' (a run still going whose trainer is gone: crashed), else running while a
    trainer holds its lock, else crashed."""
    alive = runs.trainer_alive(run_dir)
    if not status:
        status = "running" if alive else "crashed"
        done.append(
            f"status {status}: "
            + ("a trainer holds trainer.lock" if alive else f"nothing in {runs.EVENTS} says how the run ended")
        )
    if status == "crashed" or (status in runs.ACTIVE and not alive):
        if status != "crashed":
            done.append("status crashed: the run was still going and its trainer is gone")
        unknown_end = None if ended else "not known how the run ended: nothing left in the directory says"
        rec.run.update(runs.crash_fields(run_dir, rec.run.last_step or 0, unknown_end))
    else:
        rec.run.status = status
    lost = runs.missing_adapter(run_dir, rec)
    if lost:
        done.append(lost)


def _unknowns(rec: runs.Record, done: list[str], sources: list[str]) -> None:
    """[run] repaired, where from, and what no source held (repair_unknown)."""
    unknown = [f"{s}.{k}" for s, k in [("model", "id"), *KNOWN_BY_RECORD_ONLY] if not rec.has(s, k)]
    unknown += [s for s in FACT_SECTIONS if not rec.has(s)]
    if not rec.has("evaluation"):
        unknown.append("evaluation")
    if not rec.has("results") and rec.run.status in ("completed", "stopped"):  # the others have none to lose
        unknown.append("results")
    rec.run.update(
        {"repaired": runs.now_iso(), "repaired_from": list(dict.fromkeys(sources)), "repair_unknown": unknown}
    )
    if unknown:
        done.append("not known, left out: " + ", ".join(unknown))
    if unnamed(rec):
        done.append(
            "it cannot be re-run or resumed until run.toml names the model and the data: "
            "add [model] id and [data] path by hand"
        )


def rerunnable(rec: runs.Record) -> bool:
    """Whether a record says what to train on (a rebuilt one may not): its [model] id and [data] path."""
    return not unnamed(rec)


def unnamed(rec: runs.Record) -> list[str]:
    """What a record must name to be re-run or resumed and does not, as its TOML keys.

    >>> unnamed(runs.Record.from_dict({"model": {"id": "m"}, "data": {"path": "d.jsonl"}}))
    []
    >>> unnamed(runs.Record.from_dict({"model": {"id": ""}, "run": {}}))
    ['[model] id', '[data] path']
    """
    return [name for name, value in (("[model] id", rec.model.id), ("[data] path", rec.data.path)) if not value]


def repair(run_dir: str | Path) -> tuple[runs.Record, list[str]]:
    """Rebuild a run's missing or damaged run.toml from what its directory holds (rebuild_record).

    The damaged file is kept as run.toml.damaged-<time> (nothing of the user's is deleted); the new record
    is written atomically under the record lock and says `[run] repaired` and `repaired_from`. Returns the
    record and what was done, one line each; a record that reads fine is left alone: (it, []).
    Raises runs.RunError when `run_dir` is not a run or the new record cannot be written (nothing changes then).
    """
    run_dir = Path(run_dir)
    if not runs.looks_like_run(run_dir):
        raise runs.RunError(
            f"{run_dir} is not a run: it has no {runs.RECORD}, {runs.EVENTS}, {runs.LOG}, adapter or checkpoints"
        )
    try:
        with runs.locked(run_dir / runs.RECORD_LOCK):
            rec, problem = runs.usable_record(run_dir)
            if rec is not None:
                return rec, []
            rec, done = rebuild_record(run_dir)
            done.insert(0, f"what was wrong: {problem}")
            record, kept = run_dir / runs.RECORD, None
            if record.exists() or record.is_symlink():
                stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
                kept, n = run_dir / f"{runs.DAMAGED_COPY}{stamp}", 1
                while kept.exists():
                    n += 1
                    kept = run_dir / f"{runs.DAMAGED_COPY}{stamp}-{n}"
                os.replace(record, kept)  # a rename: it needs no free space
                done.insert(1, f"kept the damaged record as {kept.name}")
            try:
                write_toml_atomic(record, rec.to_dict())
            except BaseException:
                if kept is not None:
                    os.replace(kept, record)
                raise
    except OSError as exc:
        raise runs.RunError(
            f"could not write the rebuilt record of {run_dir.name}: {exc.strerror or exc}. Nothing was changed; "
            f"free some space (or fix the permissions of {run_dir}), then run `tunewiz repair {run_dir.name}` again"
        ) from None
    done.append(f"wrote {runs.RECORD}")
    return rec, done
