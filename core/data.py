"""Training data: load, detect the format, normalise to chat messages, split, render.

Supported rows (detected per row):

* chat: ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``
* Alpaca: ``{"instruction": "...", "input": "...", "output": "...", "system"?: "...", "history"?: [[q, a], ...]}``

:func:`render` produces the token ids *and* the loss mask the trainer uses: the
trained tokens are the assistant turns (with their end-of-turn token), found by
rendering the conversation prefix by prefix through the model's own chat
template, so it works for templates without ``{% generation %}`` markers. The
preview and the training call the same function, so they cannot disagree.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant")
MAX_LISTED = 20


class DataError(ValueError):
    """Problems with a data file: each names the file and line and says what to do."""

    def __init__(self, problems: list[str], total: int | None = None) -> None:
        self.problems = problems
        total = total if total is not None else len(problems)
        shown = "\n".join(f"  - {p}" for p in problems[:MAX_LISTED])
        more = f"\n  ... and {total - MAX_LISTED} more" if total > MAX_LISTED else ""
        super().__init__(f"{total} problem(s) in the data:\n{shown}{more}")


@dataclass
class Example:
    line: int  # 1-based line (JSONL) or element number (JSON array)
    format: str  # messages | alpaca
    messages: list[dict[str, str]]


@dataclass
class LoadedData:
    path: Path
    sha256: str
    examples: list[Example]
    formats: dict[str, int] = field(default_factory=dict)

    @property
    def format(self) -> str:
        return "+".join(sorted(self.formats)) or "empty"


# -- loading ----------------------------------------------------------------------


def _read_rows(path: Path, raw: bytes) -> tuple[list[tuple[int, Any]], list[str]]:
    """Parse JSONL or a JSON array into (line, object) pairs, collecting problems."""
    problems: list[str] = []
    try:
        text = raw.decode("utf-8-sig")  # a leading BOM is harmless, drop it
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError([f"{path}:{line}: bytes that are not UTF-8; re-save the file as UTF-8"]) from None
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" or stripped.startswith("["):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            if path.suffix.lower() == ".json" or not stripped.startswith("[{") or "\n{" not in text:
                raise DataError([f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); fix the syntax there"]) from None
        else:
            if isinstance(doc, list):
                return [(i + 1, row) for i, row in enumerate(doc)], problems
            if isinstance(doc, dict):
                return [(1, doc)], problems
    rows = []
    # Split on "\n" only: JSON strings may hold U+2028 / U+0085, which splitlines() would break on.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append((lineno, json.loads(line)))
        except json.JSONDecodeError as exc:
            problems.append(
                f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno}); "
                "each line must be one complete JSON object"
            )
    return rows, problems


def detect_format(row: Any) -> str | None:
    if not isinstance(row, dict):
        return None
    if "messages" in row:
        return "messages"
    if "instruction" in row and "output" in row:
        return "alpaca"
    return None


def to_messages(row: dict[str, Any], fmt: str) -> list[dict[str, str]]:
    """Normalise one row to chat messages (raises ValueError with a reason)."""
    if fmt == "messages":
        msgs = row["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise ValueError("'messages' must be a non-empty list of {role, content} objects")
        out = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise ValueError(f"message {i + 1} needs 'role' and 'content'")
            if m["role"] not in ROLES:
                raise ValueError(f"message {i + 1} has role {m['role']!r}; use one of {', '.join(ROLES)}")
            if not isinstance(m["content"], str) or not m["content"].strip():
                raise ValueError(f"message {i + 1} ({m['role']}) has empty or non-text content")
            out.append({"role": m["role"], "content": m["content"]})
        return out
    # alpaca
    for key in ("instruction", "output"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise ValueError(f"'{key}' must be non-empty text")
    out = []
    if isinstance(row.get("system"), str) and row["system"].strip():
        out.append({"role": "system", "content": row["system"]})
    for pair in row.get("history") or []:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise ValueError("'history' must be a list of [question, answer] pairs")
        out += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    user = row["instruction"]
    extra = row.get("input")
    if extra is not None and not isinstance(extra, str):
        raise ValueError(f"'input' must be text (or empty), not {type(extra).__name__}")
    if extra and extra.strip():
        user = f"{user}\n\n{extra}"
    out += [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]
    return out


def _check_turns(messages: list[dict[str, str]]) -> str | None:
    roles = [m["role"] for m in messages]
    if "system" in roles[1:]:
        return "a system message may only come first"
    if roles[-1] != "assistant":
        return "the last message must be from the assistant (it is what the model learns to write)"
    return None


def load(path: str | Path) -> LoadedData:
    """Load and normalise a data file; raises DataError listing every bad row."""
    path = Path(path).expanduser()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError([f"{path}: no such file; check the path (relative paths start from {Path.cwd()})"]) from None
    except IsADirectoryError:
        raise DataError([f"{path}: is a directory; give a .jsonl or .json file"]) from None
    except OSError as exc:
        raise DataError([f"{path}: cannot read it ({exc.strerror})"]) from None
    rows, problems = _read_rows(path, raw)
    examples, formats = [], Counter()
    for line, row in rows:
        fmt = detect_format(row)
        if fmt is None:
            keys = ", ".join(sorted(row)) if isinstance(row, dict) else type(row).__name__
            problems.append(
                f"{path}:{line}: unrecognised row ({keys}); use chat format "
                '{"messages": [...]} or Alpaca {"instruction", "input", "output"}'
            )
            continue
        try:
            messages = to_messages(row, fmt)
        except (ValueError, TypeError, KeyError) as exc:
            problems.append(f"{path}:{line}: {exc}")
            continue
        bad = _check_turns(messages)
        if bad:
            problems.append(f"{path}:{line}: {bad}")
            continue
        formats[fmt] += 1
        examples.append(Example(line, fmt, messages))
    if problems:
        raise DataError(problems)
    if not examples:
        raise DataError([f"{path}: no examples found; the file is empty"])
    return LoadedData(path.resolve(), hashlib.sha256(raw).hexdigest(), examples, dict(formats))


def split(examples: list[Example], eval_fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Deterministic train/eval split: the same seed and rows always give the same split.

    >>> ex = [Example(i, "messages", []) for i in range(1, 21)]
    >>> tr, ev = split(ex, 0.1, 42)
    >>> len(tr), len(ev), split(ex, 0.1, 42)[1] == ev
    (18, 2, True)
    """
    if len(examples) < 2:
        raise DataError(["need at least 2 examples to hold some out for evaluation"])
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = min(len(examples) - 1, max(1, round(len(examples) * eval_fraction)))
    held = set(order[:n_eval])
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


def _template(tokenizer, messages, add_generation_prompt=False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant turn.

    A span runs from just after the assistant header (what
    ``add_generation_prompt`` adds) to the end of that turn as rendered,
    end-of-turn token included.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(
            "the tokenizer has no chat template (a base model?): use an -Instruct model, "
            "or give the tokenizer a template (tokenizer.chat_template = ...)"
        )
    text = _template(tokenizer, messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        upto = _template(tokenizer, messages[: i + 1])
        if i:
            before = _template(tokenizer, messages[:i], add_generation_prompt=True)
        else:  # nothing before it to render: the answer starts where its content does
            before = upto[: upto.rfind(m["content"])]
        if not (upto.startswith(before) and text.startswith(upto)):
            spans = []
            break
        spans.append((len(before), len(upto)))
    if not spans:
        # Templates that render earlier turns differently (e.g. strip reasoning)
        # still let us find the final answer.
        before = _template(tokenizer, messages[:-1], add_generation_prompt=True)
        if not text.startswith(before):
            raise TemplateError("the chat template renders a conversation differently from its prefixes")
        spans = [(len(before), len(text))]
    return text, spans


def render(tokenizer, messages: list[dict[str, str]], max_seq_len: int | None = None) -> Rendered:
    text, spans = assistant_spans(tokenizer, messages)
    # The template already wrote any BOS; adding special tokens again would double it.
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    mask = [any(s <= start < e for s, e in spans) and end > start for start, end in offsets]
    total = len(ids)
    cut = 0
    if max_seq_len and total > max_seq_len:
        cut = sum(mask[max_seq_len:])
        ids, mask, offsets = ids[:max_seq_len], mask[:max_seq_len], offsets[:max_seq_len]
    return Rendered(text, ids, mask, offsets, total, total > len(ids), cut)


def prompt_and_answer(messages: list[dict[str, str]]) -> tuple[list[dict[str, str]], str]:
    """The conversation up to the last answer, and that answer (what evaluation compares)."""
    return messages[:-1], messages[-1]["content"]


def tokenize_examples(tokenizer, examples: list[Example], max_seq_len: int) -> tuple[list[dict], dict[str, int]]:
    """Rows for the trainer ({input_ids, labels}) and counts for the record."""
    rows, stats = [], Counter()
    for ex in examples:
        r = render(tokenizer, ex.messages, max_seq_len)
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
