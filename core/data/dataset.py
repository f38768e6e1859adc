"""Training data: read any common file, detect each row's format, normalise to chat messages, split, render.

Files: JSONL, a JSON array (or one object), CSV / TSV (a header row names the
columns), Parquet, and a folder saved by ``datasets`` (``save_to_disk``).

Row formats, detected per row (a file may mix them; the mix is reported):

* ``messages``: ``{"messages": [{"role": "system"|"user"|"assistant"|"tool", "content": "..."}, ...]}``
* ``alpaca``: ``{"instruction", "input"?, "output", "system"?, "history"?: [[q, a], ...]}``
* ``sharegpt``: ``{"conversations": [{"from": "human"|"gpt"|"system"|"observation"|"function_call",
  "value": "..."}], "system"?}``
* ``prompt_completion``: ``{"prompt": str | messages, "completion": str | messages}``
* ``text``: ``{"text": "..."}``: plain language modelling, every token is trained.

Reading never stops at the first bad row: every problem becomes a
:class:`Finding` with a rule id, a severity, the file and line, and what to
do. :func:`load` raises :class:`DataError` listing every error (the trainer's
entry point); :func:`read` returns the findings instead (the linter's).

:func:`render` produces the token ids *and* the loss mask the trainer uses: the
trained tokens are the assistant turns (with their end-of-turn token), found by
rendering the conversation prefix by prefix through the model's own chat
template, so it works for templates without ``{% generation %}`` markers. The
preview, the linter and the training call the same function, so they cannot
disagree.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import gc
import hashlib
import io
import itertools
import json
import os
import random
import stat
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from tunewiz.core.data import columns
from tunewiz.core.data.deadline import call_within
from tunewiz.core.errors import TunewizError

ROLES = ("system", "user", "assistant", "tool")
FORMATS = ("messages", "alpaca", "sharegpt", "prompt_completion", "text")
MAX_LISTED = 20
# ShareGPT speakers (as LLaMA-Factory and FastChat name them) -> chat roles.
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "system": "system",
    "observation": "tool",
    "tool": "tool",
    "function_call": "assistant",
}
# Role names people write by mistake in the chat format, and what they mean.
ROLE_HINTS = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant", "ai": "assistant"}
# Keys each format reads; anything else in a row is ignored (and said so once).
KNOWN_KEYS = {
    "messages": {"messages"},
    "alpaca": {"instruction", "input", "output", "system", "history"},
    "sharegpt": {"conversations", "system"},
    "prompt_completion": {"prompt", "completion"},
    "text": {"text"},
}
# CSV / TSV column names that mean an Alpaca field (Dolly: instruction, context, response).
CSV_ALIASES = {"response": "output", "context": "input", "question": "prompt", "answer": "completion"}
DATASET_DIR_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
SEVERITIES = ("error", "warning", "info")
# An example longer than this is refused: no max_seq_len holds it (131,072 tokens are ~550,000 characters
# of English), and tokenizing one row of 30 MB took 3 minutes and 13 GB of memory.
MAX_ROW_CHARS = 1_000_000
# Per-row findings listed one by one for each rule; the rest of a rule are counted into one finding
# (a file of 4 million bad rows took a minute and 2 GB to list them all).
LISTED_PER_RULE = 1000


class DataError(TunewizError, ValueError):
    """Problems with a data file: each names the file and line and says what to do."""

    def __init__(self, problems: list[str], total: int | None = None) -> None:
        self.problems = problems
        total = total if total is not None else len(problems)
        shown = "\n".join(f"  - {p}" for p in problems[:MAX_LISTED])
        more = f"\n  ... and {total - MAX_LISTED} more" if total > MAX_LISTED else ""
        super().__init__(f"{total} problem(s) in the data:\n{shown}{more}")


@dataclass(frozen=True)
class Finding:
    """One problem or remark about the data: rule id, severity, where, and what to do."""

    rule: str
    severity: str  # error | warning | info
    file: str
    line: int | None  # 1-based line (JSONL, CSV), element (JSON array) or row (Parquet, dataset folder)
    message: str
    count: int = 1  # rows this finding stands for (remarks made once for many rows)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "file": self.file,
            "line": self.line,
            "message": self.message,
            "count": self.count,
        }


@dataclass(slots=True)
class Example:
    line: int  # 1-based line (JSONL, CSV), element number (JSON array) or row (Parquet, dataset folder)
    format: str  # one of FORMATS
    messages: list[dict[str, str]]  # empty for plain text rows
    text: str = ""  # the text of a `text` row

    @property
    def is_chat(self) -> bool:
        return bool(self.messages)


@dataclass
class LoadedData:
    path: Path
    sha256: str
    examples: list[Example]
    formats: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    rows: int = 0  # rows read, good and bad

    @property
    def format(self) -> str:
        return "+".join(sorted(self.formats)) or "empty"

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]


# -- reading files --------------------------------------------------------------------

Row = tuple[int, Any]


def _finding(rule: str, severity: str, path: Path, line: int | None, message: str, count: int = 1) -> Finding:
    return Finding(rule, severity, str(path), line, message, count)


class RowFindings:
    """The per-row findings of one file: the first LISTED_PER_RULE of each rule one by one, the rest of
    that rule counted into one finding at the end (lines, count), so millions of bad rows cost no more
    than reading them."""

    def __init__(self, path: Path, limit: int = LISTED_PER_RULE) -> None:
        self.path = path
        self.limit = limit
        self.listed: Counter[str] = Counter()
        self.found: list[Finding] = []
        self.more: dict[str, list] = {}  # rule -> [severity, count, first line, last line]

    def add(self, rule: str, severity: str, line: int | None, message: str) -> None:
        if self.listed[rule] < self.limit:
            self.listed[rule] += 1
            self.found.append(Finding(rule, severity, str(self.path), line, message))
            return
        more = self.more.setdefault(rule, [severity, 0, line, line])
        more[1] += 1
        more[3] = line

    def full(self, rule: str) -> bool:
        """True once `rule` has its findings listed: a caller may skip building the message."""
        return self.listed[rule] >= self.limit

    def findings(self) -> list[Finding]:
        out = list(self.found)
        for rule, (severity, n, first, last) in self.more.items():
            out.append(
                Finding(
                    rule,
                    severity,
                    str(self.path),
                    first,
                    f"{n:,} more row(s) with the same problem ({rule}), lines {first} to {last}: only the first "
                    f"{self.limit:,} of each problem are listed one by one; fix them the same way",
                    count=n,
                )
            )
        return out


def _json(text: str | bytes) -> Any:
    """Parse JSON with orjson (~3x the standard library; 100,000-row files lint in seconds).

    The standard library takes over only where orjson is stricter than JSON
    itself (integers past 64 bits); a too-deep document is a ValueError like
    any other bad JSON.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if "64-bit" not in exc.msg:
            raise
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _bad_line(path: Path, lineno: int, chunk: bytes, exc: ValueError) -> Finding:
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError:
        return _finding("not-utf8", "error", path, lineno, "bytes that are not UTF-8; re-save the file as UTF-8")
    where = f" at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
    what = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
    return _finding(
        "invalid-json",
        "error",
        path,
        lineno,
        f"not valid JSON ({what}{where}); each line must be one complete JSON object",
    )


class Numbered(Sequence):
    """The elements of a JSON array as (element number, element) rows, each pair made when it is read:
    a 30 MB array of 4 million numbers would otherwise hold 4 million pairs besides the numbers.

    >>> rows = Numbered(["a", "b"])
    >>> list(rows), len(rows), rows[-1]
    ([(1, 'a'), (2, 'b')], 2, (2, 'b'))
    """

    __slots__ = ("items",)

    def __init__(self, items: list) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [(j + 1, self.items[j]) for j in range(*i.indices(len(self.items)))]
        j = range(len(self.items))[i]
        return (j + 1, self.items[j])

    def __iter__(self) -> Iterator[Row]:
        return zip(itertools.count(1), self.items)


def _read_json(path: Path, raw: bytes) -> tuple[Sequence[Row], list[Finding]]:
    """JSONL, or a JSON array / object, into (line, object) pairs and findings."""
    found: list[Finding] = []
    if raw.startswith(b"\xef\xbb\xbf"):
        found.append(
            _finding(
                "bom",
                "info",
                path,
                1,
                "the file starts with a byte-order mark; tunewiz skips it, but some tools read it as part of the "
                "first row: save as UTF-8 without BOM",
            )
        )
        raw = raw[3:]
    # Where the content starts, without copying a big file to strip it.
    first = raw[:4096]
    lead = len(first) - len(first.lstrip())
    if lead == len(first) and len(raw) > len(first):
        lead = len(raw) - len(raw.lstrip())
    head = raw[lead : lead + 1]
    if path.suffix.lower() == ".json" or head == b"[":
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            return [], [*found, _finding("not-utf8", "error", path, line, "bytes that are not UTF-8; re-save as UTF-8")]
        try:
            doc = _json(text)
        except json.JSONDecodeError as exc:
            as_lines = (
                head == b"[" and path.suffix.lower() != ".json" and b"\n{" in raw and raw[lead : lead + 2] == b"[{"
            )
            if not as_lines:
                msg = f"not valid JSON ({exc.msg}); fix the syntax there"
                return [], [*found, _finding("invalid-json", "error", path, exc.lineno, msg)]
        except ValueError as exc:
            return [], [*found, _finding("invalid-json", "error", path, 1, f"not valid JSON ({exc})")]
        else:
            if isinstance(doc, list):
                return Numbered(doc), found
            return [(1, doc)], found
    # Split on "\n" only: JSON strings may hold U+2028 / U+0085, which splitlines() would break on.
    rows: list[Row] = []
    bad = RowFindings(path)
    for lineno, chunk in enumerate(raw.split(b"\n"), start=1):
        if not chunk.strip():
            continue
        try:
            rows.append((lineno, _json(chunk)))
        except ValueError as exc:  # json.JSONDecodeError and orjson's are ValueErrors
            f = _bad_line(path, lineno, chunk, exc)
            bad.add(f.rule, f.severity, lineno, f.message)
    return rows, found + bad.findings()


def _read_csv(path: Path, raw: bytes) -> tuple[list[Row], list[Finding]]:
    found: list[Finding] = []
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return [], [_finding("not-utf8", "error", path, line, "bytes that are not UTF-8; re-save as UTF-8")]
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    # The csv module refuses cells over 131,072 characters as "not valid CSV"; a long cell is valid.
    csv.field_size_limit(max(csv.field_size_limit(), MAX_ROW_CHARS + 1))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return [], found
    except csv.Error as exc:
        return [], [_finding("invalid-csv", "error", path, 1, f"not valid CSV ({exc})")]
    columns = [h.strip() for h in header]  # as written: a mapping names them so (aliases: _csv_aliased)
    rows: list[Row] = []
    bad = RowFindings(path)
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            bad.add("invalid-csv", "error", start, f"not valid CSV ({exc}); check the quotes")
            start = reader.line_num + 1
            continue
        if any(c.strip() for c in cells):
            if len(cells) != len(columns):
                bad.add(
                    "invalid-csv",
                    "error",
                    start,
                    f"{len(cells)} cells for {len(columns)} columns ({', '.join(header)}); "
                    "quote cells that contain the delimiter",
                )
            else:
                row = {c: v for c, v in zip(columns, cells, strict=True) if c}
                rows.append((start, row))
        start = reader.line_num + 1
    return rows, found + bad.findings()


def _csv_aliased(rows: list[Row]) -> list[Row]:
    """CSV / TSV rows with their column names lower-cased and read as the format's keys (Dolly's
    instruction, context, response is Alpaca), as a file read without a column mapping sees them."""
    out = []
    for line, row in rows:
        out.append((line, {CSV_ALIASES.get(k.lower(), k.lower()): v for k, v in row.items() if k}))
    return out


def _read_parquet(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    return [(i + 1, row) for i, row in enumerate(pq.read_table(path).to_pylist())]


def _read_dataset_dir(path: Path) -> list[Row]:
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    if isinstance(ds, DatasetDict):
        if "train" not in ds:
            raise DataError([f"{path}: a dataset with splits {', '.join(ds)} but no 'train'; save the split to use"])
        ds = ds["train"]
    return [(i + 1, row) for i, row in enumerate(ds.to_list())]


def _dir_sha256(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def read_rows(path: Path) -> tuple[Sequence[Row], list[Finding], str]:
    """The raw rows of a file or dataset folder, reading problems, and the content hash.

    Raises DataError only when nothing can be read at all (missing file, unreadable, unknown folder,
    a symbolic link loop, a pipe or device that is not a file).
    """
    try:
        kind = path.stat().st_mode  # follows links: a loop or a dangling link fails here, not half-way
        if not (stat.S_ISDIR(kind) or stat.S_ISREG(kind)):
            what = "a named pipe (FIFO)" if stat.S_ISFIFO(kind) else "not a regular file (a device or socket)"
            raise DataError(
                [f"{path}: is {what}, so it cannot be read as data (reading a pipe would wait forever); "
                 "save the data to a file and give that"]
            )  # fmt: skip
        if stat.S_ISDIR(kind):
            if not any((path / m).is_file() for m in DATASET_DIR_MARKERS):
                raise DataError(
                    [
                        f"{path}: is a directory; give a data file (.jsonl, .json, .csv, .tsv, .parquet) "
                        "or a folder saved with datasets' save_to_disk"
                    ]
                )
            return _read_dataset_dir(path), [], _dir_sha256(path)
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError([unreadable(path, exc)]) from None
    sha = hashlib.sha256(raw).hexdigest()
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        rows, found = _read_csv(path, raw)
    elif suffix == ".parquet":
        try:
            rows, found = _read_parquet(path), []
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds; all mean "not a parquet file"
            raise DataError([f"{path}: not a readable Parquet file ({exc}); re-export it"]) from None
    else:
        rows, found = _read_json(path, raw)
    return rows, found, sha


# -- one row -> chat messages -----------------------------------------------------------


def unreadable(path: Path, exc: OSError) -> str:
    """One sentence for an OSError met reading `path`: what is wrong, where, and what to do."""
    if isinstance(exc, FileNotFoundError):
        if path.is_symlink():
            return f"{path}: is a symbolic link to {os.readlink(path)}, which does not exist; fix or remove the link"
        return f"{path}: no such file; check the path (relative paths start from {Path.cwd()})"
    if isinstance(exc, PermissionError):
        return f"{path}: no permission to read it; check the file's permissions (ls -l {path})"
    if exc.errno == errno.ELOOP:
        return (
            f"{path}: is a symbolic link that leads back to itself (a loop: {path} -> {os.readlink(path)}); "
            "point it at the data file, or give the file's real path"
            if path.is_symlink()
            else f"{path}: a symbolic link on the way to it is a loop; give the file's real path"
        )
    if isinstance(exc, IsADirectoryError):
        return f"{path}: is a directory; give a data file (.jsonl, .json, .csv, .tsv, .parquet)"
    return f"{path}: cannot read it ({exc.strerror or exc}); check the file and the disk it is on"


def absolute(path: str | Path) -> Path:
    """`path` made absolute with its symbolic links resolved, without raising on a link loop
    (Path.resolve raises RuntimeError there on Python < 3.13; reading the file says what is wrong).

    >>> str(absolute("/tmp/../tmp/x.jsonl"))
    '/tmp/x.jsonl'
    """
    return Path(os.path.realpath(Path(path).expanduser()))


class RowError(ValueError):
    """A row that cannot become an example: rule id and a sentence saying what to do."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


def detect_format(row: Any) -> str | None:
    """The row's format, or None.

    >>> detect_format({"conversations": []}), detect_format({"prompt": "p", "completion": "c"})
    ('sharegpt', 'prompt_completion')
    """
    if not isinstance(row, dict):
        return None
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    if "text" in row and isinstance(row["text"], str) and not set(row) & {"instruction", "output", "prompt"}:
        return "text"
    return None


_NOT_OBJECT: dict[type, RowError] = {}


def _unrecognised(row: Any) -> RowError:
    if not isinstance(row, dict):  # one error per type: a file of millions of numbers is read in seconds
        err = _NOT_OBJECT.get(type(row))
        if err is None:
            err = _NOT_OBJECT[type(row)] = RowError(
                "unknown-format", f"unrecognised row ({type(row).__name__}); each row must be a JSON object"
            )
        return err
    keys = ", ".join(sorted(str(k) for k in row)) or "no keys"
    hint = ""
    if "instruction" in row:
        hint = "an Alpaca row needs 'output' too; "
    elif "output" in row:
        hint = "an Alpaca row needs 'instruction' too; "
    elif "prompt" in row:
        hint = "a prompt row needs 'completion' too; "
    elif "completion" in row:
        hint = "a completion row needs 'prompt' too; "
    return RowError(
        "unknown-format",
        f'unrecognised row ({keys}); {hint}use chat {{"messages": [...]}}, Alpaca '
        '{"instruction", "input", "output"}, ShareGPT {"conversations": [...]}, '
        '{"prompt", "completion"} or {"text"}',
    )


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        kind = "null" if value is None else type(value).__name__
        raise RowError("bad-field", f"{what} must be text, not {kind}")
    if not value.strip():
        raise RowError("empty-content", f"{what} is empty; write it or drop the row")
    return value


_ROLE_SET = frozenset(ROLES)


def _chat_list(msgs: Any, what: str, speaker: str = "role", words: str = "content") -> list[dict[str, str]]:
    if speaker == "role" and type(msgs) is list and msgs:
        # The common case, checked in one pass; anything unusual takes the careful path below.
        try:
            for m in msgs:
                role, content = m["role"], m["content"]
                if type(role) is not str or role not in _ROLE_SET or type(content) is not str or not content.strip():
                    break
            else:
                return [m if len(m) == 2 else {"role": m["role"], "content": m["content"]} for m in msgs]
        except (KeyError, TypeError):
            pass
    if not isinstance(msgs, list) or not msgs:
        raise RowError("bad-field", f"'{what}' must be a non-empty list of {{{speaker}, {words}}} objects")
    out = []
    for i, m in enumerate(msgs, start=1):
        if not isinstance(m, dict):
            raise RowError("bad-field", f"message {i} of '{what}' must be an object with '{speaker}' and '{words}'")
        # ShareGPT files sometimes use role/content, chat files sometimes from/value: accept either.
        s, w = (speaker, words) if speaker in m else (("from", "value") if "from" in m else ("role", "content"))
        if s not in m or w not in m:
            raise RowError("bad-field", f"message {i} needs '{speaker}' and '{words}'")
        role = m[s]
        if speaker == "from" or s == "from":
            mapped = SHAREGPT_ROLES.get(role) if isinstance(role, str) else None
        else:
            mapped = role if role in ROLES else None
        if mapped is None:
            hint = ROLE_HINTS.get(str(role).lower()) if isinstance(role, str) else None
            fix = f"did you mean '{hint}'? " if hint and s == "role" else ""
            known = ", ".join(SHAREGPT_ROLES if s == "from" else ROLES)
            shown = repr(role) if isinstance(role, (str, int, float, bool)) or role is None else type(role).__name__
            raise RowError("unknown-role", f"message {i} has role {shown}; {fix}use one of {known}")
        out.append({"role": mapped, "content": _text(m[w], f"message {i} ({mapped})")})
    return out


def to_messages(row: dict[str, Any], fmt: str) -> list[dict[str, str]]:
    """Normalise one row to chat messages (raises RowError with a rule id and a reason)."""
    if fmt == "messages":
        return _chat_list(row["messages"], "messages")
    if fmt == "sharegpt":
        out = _chat_list(row["conversations"], "conversations", "from", "value")
        if isinstance(row.get("system"), str) and row["system"].strip() and out[0]["role"] != "system":
            out.insert(0, {"role": "system", "content": row["system"]})
        return out
    if fmt == "prompt_completion":
        out = []
        for key, role in (("prompt", "user"), ("completion", "assistant")):
            value = row[key]
            if isinstance(value, list):
                out += _chat_list(value, key)
            else:
                out.append({"role": role, "content": _text(value, f"'{key}'")})
        return out
    # alpaca
    instruction = _text(row["instruction"], "'instruction'")
    output = _text(row["output"], "'output'")
    out = []
    system = row.get("system")
    if isinstance(system, str) and system.strip():
        out.append({"role": "system", "content": system})
    history = row.get("history") or []
    if not isinstance(history, list):
        raise RowError("bad-field", "'history' must be a list of [question, answer] pairs")
    for pair in history:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise RowError("bad-field", "'history' must be a list of [question, answer] pairs")
        out += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    extra = row.get("input")
    if extra is not None and not isinstance(extra, (str, int, float)) or isinstance(extra, bool):
        raise RowError("bad-field", f"'input' must be text (or empty), not {type(extra).__name__}")
    user = instruction
    if extra is not None and str(extra).strip():
        user = f"{instruction}\n\n{extra}"
    out += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return out


def check_turns(messages: list[dict[str, str]]) -> RowError | None:
    """The structural error of a conversation, if any (system placement, who speaks last)."""
    roles = [m["role"] for m in messages]
    if "system" in roles[1:]:
        return RowError("system-not-first", "a system message may only come first; move it to the start")
    if "assistant" not in roles:
        return RowError("no-assistant", "no assistant turn: nothing to learn from this row; add the answer")
    if roles[-1] != "assistant":
        return RowError(
            "last-not-assistant",
            f"the last message is from the {roles[-1]}, but it must be from the assistant (it is what the model "
            "learns to write); drop the trailing turn or add the answer",
        )
    return None


def alternation_problem(messages: list[dict[str, str]]) -> str | None:
    """Two user or two assistant turns in a row (templates such as Gemma's and Mistral's reject them).

    >>> alternation_problem([{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
    ...                      {"role": "assistant", "content": "c"}])
    'messages 1 and 2 are both from the user'
    """
    prev = None
    for i, m in enumerate(messages, start=1):
        role = m["role"]
        if role in ("user", "assistant") and role == prev:
            return f"messages {i - 1} and {i} are both from the {role}"
        prev = role if role in ("user", "assistant") else (prev if role == "tool" else None)
    return None


_shape_remarks: dict[tuple[str, ...], tuple[tuple[str, str, str], ...]] = {}


def _judge_shape(messages: list[dict[str, str]]) -> tuple[tuple[str, str, str], ...]:
    bad = check_turns(messages)
    if bad:
        return ((bad.rule, "error", str(bad)),)
    alt = alternation_problem(messages)
    if alt:
        msg = f"{alt}; many chat templates (Gemma, Mistral, Llama 2) reject this: merge the two turns"
        return (("roles-not-alternating", "warning", msg),)
    return ()


def _too_large(chars: int) -> tuple[str, str, str]:
    return (
        "too-large",
        "error",
        f"{chars:,} characters in one example, more than any max_seq_len holds (examples over "
        f"{MAX_ROW_CHARS:,} characters are refused: tokenizing one takes minutes and gigabytes); split it into "
        "examples of at most max_seq_len tokens",
    )


def to_example(line: int, row: Any) -> tuple[Example | None, list[tuple[str, str, str]]]:
    """One raw row as an Example (or None) and its (rule, severity, message) remarks."""
    fmt = detect_format(row)
    if fmt is None:
        err = _unrecognised(row)
        return None, [(err.rule, "error", str(err))]
    try:
        if fmt == "text":
            text = _text(row["text"], "'text'")
            if len(text) > MAX_ROW_CHARS:
                return None, [_too_large(len(text))]
            return Example(line, fmt, [], text), []
        messages = to_messages(row, fmt)
    except RowError as exc:
        return None, [(exc.rule, "error", str(exc))]
    chars = sum([len(m["content"]) for m in messages])
    if chars > MAX_ROW_CHARS:
        return None, [_too_large(chars)]
    roles = tuple(m["role"] for m in messages)
    remarks = _shape_remarks.get(roles)
    if remarks is None:  # a dataset has few conversation shapes: judge each once
        remarks = _shape_remarks[roles] = _judge_shape(messages)
    if remarks and remarks[0][1] == "error":
        return None, remarks
    return Example(line, fmt, messages), list(remarks)


def _normalise(
    path: Path, rows: Sequence[Row]
) -> tuple[list[Example], list[Finding], dict[tuple[str, ...], list[int]]]:
    """Rows to examples, with their findings and the unused keys seen (key set -> lines)."""
    examples: list[Example] = []
    found = RowFindings(path)
    extra_keys: dict[tuple[str, ...], list[int]] = {}
    for line, row in rows:
        ex, notes = to_example(line, row)
        for rule, severity, message in notes:
            found.add(rule, severity, line, message)
        if ex is None:
            continue
        examples.append(ex)
        if len(row) > 1 or ex.format == "alpaca":
            unknown = tuple(sorted(str(k) for k in row.keys() - KNOWN_KEYS[ex.format]))
            if unknown:
                extra_keys.setdefault(unknown, []).append(line)
    return examples, found.findings(), extra_keys


@contextlib.contextmanager
def bulk() -> Iterator[None]:
    """No cyclic garbage collection while a file's rows become objects.

    Reading 100,000 rows allocates millions of dicts and lists and none of them
    is garbage; the collector's passes over them cost ~40% of the time.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _normalise_mapped(path: Path, rows: Sequence[Row], mapping: columns.Mapping) -> tuple[list[Example], list[Finding]]:
    """Table rows through a column mapping (core.data.columns): a mapping that cannot apply (a column the
    file lacks, a bad template) is one finding for the file; a bad cell is one for its row."""
    first = next((r for _, r in rows if isinstance(r, dict)), None)
    problems = columns.problems(mapping, [str(k) for k in first] if first else [])
    if problems or first is None:
        problems = problems or ["no row with columns to map"]
        return [], [_finding("column-mapping", "error", path, None, p) for p in problems]
    examples: list[Example] = []
    found = RowFindings(path)
    for line, row in rows:
        try:
            messages = columns.to_messages(mapping, row)
        except ValueError as exc:
            found.add("column-mapping", "error", line, str(exc))
            continue
        chars = sum(len(m["content"]) for m in messages)
        if chars > MAX_ROW_CHARS:
            rule, severity, message = _too_large(chars)
            found.add(rule, severity, line, message)
            continue
        examples.append(Example(line, "mapped", messages))
    unused = [str(k) for k in first if str(k) not in mapping.columns()]
    said = []
    if unused:  # what the other columns look like, so a wrong choice shows
        described = {c.name: c for c in columns.describe([r for _, r in itertools.islice(rows, columns.SAMPLE_ROWS)])}
        said = [f"{k!r} ({described[k].words()})" if k in described else repr(k) for k in unused[:4]]
    extra = [
        _finding(
            "unknown-keys", "info", path, None,
            f"column(s) not used by the mapping: {', '.join(said)}{', ...' if len(unused) > 4 else ''}",
        )
    ] if unused else []  # fmt: skip
    return examples, found.findings() + extra


def _unmapped(path: Path, rows: Sequence[Row], examples: list[Example]) -> list[Finding]:
    """A table that would train as something it is not: its rows are plain `text` beside other columns
    (a `text,category` CSV), or no row is in a known format. One error with the mapping proposed."""
    text_only = bool(examples) and all(ex.format == "text" for ex in examples)
    if examples and not text_only:
        return []
    sample = [r for _, r in itertools.islice(rows, columns.SAMPLE_ROWS)]
    if not all(isinstance(r, dict) for r in sample):
        return []
    proposal = columns.propose(sample)
    if text_only and (proposal is None or "text" not in {c.name.lower() for c in proposal.columns}):
        return []
    if proposal is None:
        return []
    line = next((line for line, _ in rows), None)
    unused = [c for c in proposal.columns if c.name.lower() != "text"] if text_only else []
    said = "; ".join(f"column {c.name!r} has {c.words()}" for c in unused[:3])
    lead = (
        f"a table whose 'text' column alone would be trained, as plain text ({said}): "
        if text_only
        else "a table with columns of its own (" + ", ".join(c.name for c in proposal.columns[:8]) + "): "
    )
    return [
        _finding(
            "unmapped-columns",
            "error",
            path,
            line,
            f"{lead}say which column is the prompt and which the answer. Proposed: {'; '.join(proposal.why)}. "
            f"Accept it with `{proposal.mapping.flags()}`"
            + (", or train the text alone with --as-text" if text_only else ""),
        )
    ]


def read(path: str | Path, mapping: columns.Mapping | None = None, as_text: bool = False) -> LoadedData:
    """Read and normalise a data file, keeping every problem as a Finding (nothing raised for bad rows).

    `mapping`: how table rows become conversations (core.data.columns); without one, a table that would
    train as something it is not gets an `unmapped-columns` error proposing one, unless `as_text` says
    its 'text' column is meant as plain text."""
    path = Path(path).expanduser()
    with bulk():
        rows, found, sha = read_rows(path)
        if mapping is not None and mapping.active:
            examples, more = _normalise_mapped(path, rows, mapping)
            extra_keys: dict[tuple[str, ...], list[int]] = {}
        else:
            raw = rows  # a proposal names the columns as the file writes them
            if path.suffix.lower() in (".csv", ".tsv"):
                rows = _csv_aliased(rows)  # type: ignore[arg-type]
            examples, more, extra_keys = _normalise(path, rows)
            if not as_text:
                more += _unmapped(path, raw, examples)
    found += more
    n_rows = len(rows)
    formats: Counter[str] = Counter(ex.format for ex in examples)
    first_line: dict[str, int] = {}
    for ex in examples:
        first_line.setdefault(ex.format, ex.line)
    for keys, lines in extra_keys.items():
        found.append(
            _finding(
                "unknown-keys",
                "info",
                path,
                lines[0],
                f"key(s) {', '.join(keys)} are not used for training ({len(lines)} row(s)); "
                "fine if they are ids or metadata, check the spelling otherwise",
                count=len(lines),
            )
        )
    if len(formats) > 1:
        main = formats.most_common(1)[0][0]
        others = ", ".join(f"{fmt} {n} (first at line {first_line[fmt]})" for fmt, n in formats.items() if fmt != main)
        found.append(
            _finding(
                "mixed-formats",
                "warning",
                path,
                min(first_line[f] for f in formats if f != main),
                f"rows in {len(formats)} formats: {main} {formats[main]}, {others}; each is read on its own, "
                "but a mix is often a mistake (one format per file keeps the model's output consistent)",
            )
        )
    if not examples and not any(f.severity == "error" for f in found):
        found.append(_finding("empty-file", "error", path, None, "no examples found; the file is empty"))
    found.sort(key=lambda f: (f.line or 0, SEVERITIES.index(f.severity)))
    return LoadedData(absolute(path), sha, examples, dict(formats), found, n_rows)


def load(path: str | Path, mapping: columns.Mapping | None = None, as_text: bool = False) -> LoadedData:
    """Load and normalise a data file; raises DataError listing every bad row (warnings do not stop it)."""
    loaded = read(path, mapping, as_text)
    errors = loaded.errors
    if errors:
        raise DataError([str(f) for f in errors])
    return loaded


def read_for(data_cfg, path: str | Path | None = None) -> LoadedData:
    """:func:`read` of a [data] config section's file (or `path`, its held-out file), with its mapping."""
    return read(path or data_cfg.path, columns.Mapping.of(data_cfg), data_cfg.as_text)


def load_for(data_cfg, path: str | Path | None = None) -> LoadedData:
    """:func:`load` of a [data] config section's file (or `path`, its held-out file), with its mapping."""
    return load(path or data_cfg.path, columns.Mapping.of(data_cfg), data_cfg.as_text)


def answer_labels(examples: Sequence[Example]) -> list[str] | None:
    """Each example's answer when the answers form a set of labels (core.data.columns.label_set: a mapped
    label column, or chat rows answered from a few labels), else None. What the held-out split is
    stratified by and what the comparison judges as labels."""
    if not examples or not all(ex.messages and ex.messages[-1]["role"] == "assistant" for ex in examples):
        return None
    answers = [ex.messages[-1]["content"].strip() for ex in examples]
    if any(a.startswith(("{", "[")) for a in answers):
        return None  # structured answers (JSON): judged field by field, not as labels
    return answers if columns.label_set(answers) is not None else None


def split(
    examples: Sequence[Any], eval_fraction: float, seed: int, labels: Sequence[str] | None = None
) -> tuple[list[Any], list[Any]]:
    """Deterministic train/eval split: the same seed and rows always give the same split.

    Stratified when the answers are labels (`labels`, or :func:`answer_labels` of the examples): each
    label is held out in proportion, and at least once when it has 3 rows or more, so the per-label
    figures of the comparison speak of every label that can be learned.

    >>> ex = [Example(i, "messages", []) for i in range(1, 21)]
    >>> tr, ev = split(ex, 0.1, 42)
    >>> len(tr), len(ev), split(ex, 0.1, 42)[1] == ev
    (18, 2, True)
    >>> tr, ev = split(list(range(13)), 0.1, 42, labels=["a"] * 10 + ["b"] * 3)
    >>> sorted(x < 10 for x in ev)  # 'b' is held out too, though 10% of 13 rows is one row
    [False, True]
    """
    if len(examples) < 2:
        raise DataError(["need at least 2 examples to hold some out for evaluation"])
    if labels is None and isinstance(examples[0], Example):
        labels = answer_labels(examples)
    rng = random.Random(seed)
    if labels is None:
        order = list(range(len(examples)))
        rng.shuffle(order)
        n_eval = min(len(examples) - 1, max(1, round(len(examples) * eval_fraction)))
        held = set(order[:n_eval])
    else:
        groups: dict[str, list[int]] = {}
        for i, label in enumerate(labels):
            groups.setdefault(label, []).append(i)
        held = set()
        for label in sorted(groups):
            rows = groups[label]
            rng.shuffle(rows)
            n = round(len(rows) * eval_fraction)
            n = min(len(rows) - 2, max(n, 1)) if len(rows) >= 3 else min(n, len(rows) - 1)
            held.update(rows[:n])
        if not held:  # every label too rare to hold out: one row anyway, as an unstratified split would
            held = {rng.randrange(len(examples))}
    train = [e for i, e in enumerate(examples) if i not in held]
    evals = [e for i, e in enumerate(examples) if i in held]
    return train, evals


# -- rendering with the loss mask ---------------------------------------------------


class TemplateError(ValueError):
    pass


@dataclass
class Rendered:
    text: str
    input_ids: list[int]
    mask: list[bool]  # True where the token is trained
    offsets: list[tuple[int, int]]
    total_tokens: int  # before truncation
    truncated: bool
    cut_trained_tokens: int  # trained tokens lost to truncation

    @property
    def labels(self) -> list[int]:
        return [t if m else -100 for t, m in zip(self.input_ids, self.mask, strict=False)]

    @property
    def trained_tokens(self) -> int:
        return sum(self.mask)

    def segments(self, limit: int | None = None) -> list[tuple[str, str]]:
        """The text in runs of (piece, kind): kind is "prompt", "trained" or "cut" (lost to truncation).

        What the preview shows; built from the same mask the trainer's labels come from.
        """
        src = self.text if limit is None else self.text[:limit]
        kinds = ["prompt"] * len(src)
        for (start, end), m in zip(self.offsets, self.mask, strict=False):
            if m:
                for i in range(start, min(end, len(src))):
                    kinds[i] = "trained"
        cut = self.offsets[-1][1] if self.truncated and self.offsets else len(self.text)
        for i in range(cut, len(src)):
            kinds[i] = "cut"
        out: list[tuple[str, str]] = []
        i = 0
        while i < len(src):
            j = i
            while j < len(src) and kinds[j] == kinds[i]:
                j += 1
            out.append((src[i:j], kinds[i]))
            i = j
        return out


TEMPLATE_SECONDS = 5.0
"""How long one render of a conversation through a chat template may take. Real templates take
milliseconds; a template past this has a runaway loop, and is stopped instead of hanging tunewiz."""


class TemplateTimeout(TemplateError):
    """A chat template that did not finish rendering within TEMPLATE_SECONDS (a runaway loop)."""


_RUNAWAY: set[str] = set()  # templates that overran once: refused at once after that, not waited on per row


def bounded_render(template, fn, *args, **kwargs) -> str:
    """fn(*args, **kwargs), a render of `template` (a tokenizer's chat_template), stopped with
    TemplateTimeout when it takes over TEMPLATE_SECONDS; a template that overran once is refused at once."""
    key = repr(template)
    problem = (
        f"the model's chat template did not finish rendering in {TEMPLATE_SECONDS:g} s (a runaway loop?), so "
        "tunewiz stopped it: fix the template's loops (chat_template in the model's tokenizer_config.json or "
        "chat_template.jinja) or pick another model"
    )
    if key in _RUNAWAY:
        raise TemplateTimeout(problem)
    try:
        return call_within(TEMPLATE_SECONDS, fn, *args, **kwargs)
    except TimeoutError:
        _RUNAWAY.add(key)
        raise TemplateTimeout(problem) from None


def _template(tokenizer, messages, add_generation_prompt=False) -> str:
    return bounded_render(
        tokenizer.chat_template,
        tokenizer.apply_chat_template,
        messages,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
    )


NO_TEMPLATE = (
    "the tokenizer has no chat template (a base model?): use the model's -Instruct version, or give the "
    'tokenizer a template (tokenizer.chat_template = ...), or use plain {"text"} rows'
)


def _trim(text: str, start: int, end: int) -> int:
    """A span's end without the whitespace the template writes after the end-of-turn token."""
    while end > start and text[end - 1] in " \n\r\t":
        end -= 1
    return end


def assistant_spans(tokenizer, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant turn.

    A span runs from just after the assistant header (what
    ``add_generation_prompt`` adds) to the end of that turn as rendered,
    end-of-turn token included (the whitespace after it is not trained: the
    model stops at the token).
    """
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(NO_TEMPLATE)
    try:
        text = _template(tokenizer, messages)
    except TemplateTimeout:
        raise
    except Exception as exc:  # noqa: BLE001 - jinja's raise_exception and template bugs
        raise TemplateError(f"the model's chat template rejects this conversation: {exc}") from None
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        try:
            upto = _template(tokenizer, messages[: i + 1])
            if i:
                before = _template(tokenizer, messages[:i], add_generation_prompt=True)
            else:  # nothing before it to render: the answer starts where its content does
                before = upto[: upto.rfind(m["content"])]
        except TemplateTimeout:
            raise
        except Exception:  # noqa: BLE001 - a template that rejects a prefix: fall back below
            spans = []
            break
        if not (upto.startswith(before) and text.startswith(upto)):
            spans = []
            break
        spans.append((len(before), _trim(text, len(before), len(upto))))
    if not spans:
        # Templates that render earlier turns differently (e.g. strip reasoning)
        # still let us find the final answer.
        try:
            before = _template(tokenizer, messages[:-1], add_generation_prompt=True)
        except TemplateTimeout:
            raise
        except Exception as exc:  # noqa: BLE001
            raise TemplateError(f"the model's chat template rejects this conversation: {exc}") from None
        if not text.startswith(before):
            raise TemplateError("the chat template renders a conversation differently from its prefixes")
        spans = [(len(before), _trim(text, len(before), len(text)))]
    return text, spans


def _mask_and_cut(ids, offsets, mask, max_seq_len, text) -> Rendered:
    total = len(ids)
    cut = 0
    if max_seq_len and total > max_seq_len:
        cut = sum(mask[max_seq_len:])
        ids, mask, offsets = ids[:max_seq_len], mask[:max_seq_len], offsets[:max_seq_len]
    return Rendered(text, ids, mask, offsets, total, total > len(ids), cut)


def in_spans(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[bool]:
    """For each token (start, end), whether it starts inside one of the character spans (and is not empty):
    one sweep over tokens and spans together (both in text order), not every span per token.

    >>> in_spans([(0, 2), (2, 5), (5, 5), (5, 9), (9, 12)], [(6, 12), (2, 4)])
    [False, True, False, False, True]
    """
    merged: list[list[int]] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        elif s < e:
            merged.append([s, e])
    out = []
    k, n = 0, len(merged)
    for start, end in offsets:
        while k < n and merged[k][1] <= start:
            k += 1
        out.append(k < n and merged[k][0] <= start and end > start)
    return out


def _masked(text: str, spans, ids, offsets, max_seq_len: int | None) -> Rendered:
    ids, offsets = list(ids), [tuple(o) for o in offsets]
    return _mask_and_cut(ids, offsets, in_spans(offsets, spans), max_seq_len, text)


def render(tokenizer, messages: list[dict[str, str]], max_seq_len: int | None = None) -> Rendered:
    """Token ids and loss mask of a conversation, as the trainer trains it."""
    text, spans = assistant_spans(tokenizer, messages)
    # The template already wrote any BOS; adding special tokens again would double it.
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return _masked(text, spans, enc["input_ids"], enc["offset_mapping"], max_seq_len)


RENDER_BATCH = 256  # rows per tokenizer call in render_many
BATCH_CHARS = 1_000_000  # and at most this many characters (a row alone may be longer)


def render_many(
    tokenizer, examples: list[Example], max_seq_len: int | None = None
) -> Iterator[Rendered | TemplateError]:
    """:func:`render_example` of each row, in order, the same results (a row the template rejects gives
    its TemplateError in its place), with the chat rows tokenized in batches: a fast tokenizer runs a
    batch on every core. A generator: only one batch of renders is held at a time."""
    start = 0
    while start < len(examples):
        end, chars = start, 0
        while end < len(examples) and end - start < RENDER_BATCH and (end == start or chars <= BATCH_CHARS):
            ex = examples[end]
            chars += len(ex.text) + sum(len(m["content"]) for m in ex.messages)
            end += 1
        out: list[Rendered | TemplateError | None] = [None] * (end - start)
        todo: list[tuple[int, str, list[tuple[int, int]]]] = []
        for i, ex in enumerate(examples[start:end]):
            if not ex.is_chat:
                out[i] = render_text(tokenizer, ex.text, max_seq_len)
                continue
            try:
                text, spans = assistant_spans(tokenizer, ex.messages)
            except TemplateError as exc:
                out[i] = exc
                continue
            todo.append((i, text, spans))
        if todo:
            enc = tokenizer([t for _, t, _ in todo], add_special_tokens=False, return_offsets_mapping=True)
            for (i, text, spans), ids, offsets in zip(todo, enc["input_ids"], enc["offset_mapping"], strict=True):
                out[i] = _masked(text, spans, ids, offsets, max_seq_len)
        del todo
        yield from out  # type: ignore[misc]
        start = end


def render_text(tokenizer, text: str, max_seq_len: int | None = None) -> Rendered:
    """A plain-text row: BOS (if the tokenizer adds one) + text + EOS, every token after BOS trained."""
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    eos = tokenizer.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)  # so the model learns where a text ends
        offsets.append((len(text), len(text)))
    bos = tokenizer.bos_token_id
    mask = [not (i == 0 and t == bos) for i, t in enumerate(ids)]
    return _mask_and_cut(ids, offsets, mask, max_seq_len, text)


def render_example(tokenizer, ex: Example, max_seq_len: int | None = None) -> Rendered:
    return render(tokenizer, ex.messages, max_seq_len) if ex.is_chat else render_text(tokenizer, ex.text, max_seq_len)


def prompt_and_answer(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], str]:
    """The conversation up to the last answer, and that answer (what evaluation compares)."""
    return messages[:-1], messages[-1]["content"]


def tokenize_examples(tokenizer, examples: list[Example], max_seq_len: int) -> tuple[list[dict], dict[str, int]]:
    """Rows for the trainer ({input_ids, labels}) and counts for the record."""
    rows, stats = [], Counter()
    for r in render_many(tokenizer, examples, max_seq_len):
        if isinstance(r, TemplateError):
            raise r
        stats["total_tokens"] += len(r.input_ids)
        stats["trained_tokens"] += r.trained_tokens
        if r.truncated:
            stats["truncated_rows"] += 1
        if r.trained_tokens == 0:
            stats["dropped_rows"] += 1  # nothing to learn once truncated
            continue
        rows.append({"input_ids": r.input_ids, "labels": r.labels})
    for key in ("total_tokens", "trained_tokens", "truncated_rows", "dropped_rows"):
        stats.setdefault(key, 0)
    return rows, dict(stats)
