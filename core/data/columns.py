"""Tables as training examples: which column makes the user's turn, which is the answer.

People's labelled examples come as tables (``text,category`` CSVs, Parquet from a warehouse, JSONL with
keys of their own). A :class:`Mapping` says how a row becomes a conversation:

* ``prompt``: a column name (``text``) or a template naming columns (``Review: {text}``);
* ``answer``: the column the model learns to write (``category``);
* ``instruction``: text put before every prompt (``Classify the intent of this message.``);
* ``system``: a system prompt for every row.

It lives in the run's ``[data]`` (prompt_column, answer_column, instruction, system_prompt), so lint,
preview, training, the held-out comparison, the review and a re-run all read the same examples.
:func:`propose` guesses a mapping from the column names and the shape of the values; :func:`unmapped`
says when a table would silently train as plain text.

Plain Python: no heavy imports.
"""

from __future__ import annotations

import math
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PROMPT_NAMES = ("text", "sentence", "review", "question", "input", "prompt", "utterance", "query", "message",
                "content", "ticket", "body", "description", "instruction")  # fmt: skip
"""Column names people give the input, most telling first."""
ANSWER_NAMES = ("label", "category", "class", "intent", "answer", "output", "target", "response", "sentiment",
                "completion", "priority", "topic", "tag")  # fmt: skip
"""Column names people give the answer, most telling first."""
MAX_LABELS = 300
"""At most this many distinct answers make a label set (a mapped column of intents, categories, ...)."""
SAMPLE_ROWS = 2000
"""Rows a proposal looks at: the header and the shape of the values show in the first thousands."""


class MappingError(ValueError):
    """A mapping that cannot apply to the file (a column it names is missing), in words."""


@dataclass(frozen=True)
class Mapping:
    prompt: str = ""
    answer: str = ""
    instruction: str = ""
    system: str = ""

    @classmethod
    def of(cls, data_cfg: Any) -> Mapping:
        """The mapping of a [data] config section (DataConfig)."""
        return cls(
            getattr(data_cfg, "prompt_column", ""),
            getattr(data_cfg, "answer_column", ""),
            getattr(data_cfg, "instruction", ""),
            getattr(data_cfg, "system_prompt", ""),
        )

    @property
    def active(self) -> bool:
        return bool(self.prompt or self.answer)

    def columns(self) -> list[str]:
        """The columns the mapping reads, in order.

        >>> Mapping("Review: {text} ({stars} stars)", "sentiment").columns()
        ['text', 'stars', 'sentiment']
        """
        return [*template_names(self.prompt), *([self.answer] if self.answer else [])]

    def flags(self) -> str:
        """The command-line flags that give this mapping.

        >>> Mapping("text", "category").flags()
        '--prompt-column text --answer-column category'
        """
        import shlex

        out = []
        for flag, value in (
            ("--prompt-column", self.prompt),
            ("--answer-column", self.answer),
            ("--instruction", self.instruction),
            ("--system-prompt", self.system),
        ):
            if value:
                out.append(f"{flag} {shlex.quote(value)}")
        return " ".join(out)


def template_names(prompt: str) -> list[str]:
    """The column names a prompt reads: a bare name is one column; a template names them in braces.

    >>> template_names("text"), template_names("Q: {question}\\nContext: {context}")
    (['text'], ['question', 'context'])
    """
    if not prompt:
        return []
    if "{" not in prompt:
        return [prompt]
    try:
        return [name for _, name, _, _ in string.Formatter().parse(prompt) if name]
    except ValueError as exc:
        raise MappingError(f"prompt template {prompt!r}: {exc}; write a column as {{name}}, a brace as {{{{") from None


def problems(mapping: Mapping, columns: Sequence[str]) -> list[str]:
    """What stops `mapping` applying to a table with `columns`, each saying what to do.

    >>> problems(Mapping("Review: {txt}", "label"), ["text", "label"])
    ["the prompt names column 'txt', which the file does not have (its columns: text, label); did you mean 'text'?"]
    """
    import difflib

    out = []
    if mapping.active and not mapping.prompt:
        out.append("an answer column needs a prompt column too: give --prompt-column (a column or a template)")
    if mapping.active and not mapping.answer:
        out.append("a prompt column needs an answer column too: give --answer-column")
    try:
        names = mapping.columns()
    except MappingError as exc:
        return [*out, str(exc)]
    for name in names:
        if name not in columns:
            close = difflib.get_close_matches(name, list(columns), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            where = "prompt" if name != mapping.answer else "answer"
            out.append(
                f"the {where} names column {name!r}, which the file does not have "
                f"(its columns: {', '.join(columns)}){hint}"
            )
    return out


def cell_text(value: Any) -> str | None:
    """A cell as text for a prompt or an answer; None for what is no text (NaN, null, a float, a list).

    >>> cell_text("billing"), cell_text(3), cell_text(float("nan")), cell_text(None), cell_text(2.5)
    ('billing', '3', None, None, None)
    """
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))  # Parquet and pandas write integer labels as 3.0
    return None


def to_messages(mapping: Mapping, row: dict[str, Any]) -> list[dict[str, str]]:
    """One table row as a conversation; a ValueError says what is wrong with this row.

    >>> to_messages(Mapping("text", "category", "Classify this message."), {"text": "hi", "category": "greet"})
    [{'role': 'user', 'content': 'Classify this message.\\n\\nhi'}, {'role': 'assistant', 'content': 'greet'}]
    """
    if not isinstance(row, dict):
        raise ValueError(f"a {type(row).__name__}, not a row with columns")
    values = {}
    for name in mapping.columns():
        if name not in row:
            raise ValueError(f"no column {name!r} in this row (it has {', '.join(map(str, row))})")
        text = cell_text(row[name])
        if text is None:
            what = "empty (null / NaN)" if row[name] is None or row[name] != row[name] else f"{row[name]!r}"
            raise ValueError(f"column {name!r} is {what}: every mapped cell needs text; fix or drop the row")
        values[name] = text
    answer = values[mapping.answer].strip()
    if not answer:
        raise ValueError(f"the answer column {mapping.answer!r} is empty: the model would learn to say nothing")
    prompt = mapping.prompt.format(**values) if "{" in mapping.prompt else values[mapping.prompt]
    if not prompt.strip():
        raise ValueError(f"the prompt ({mapping.prompt!r}) is empty in this row")
    if mapping.instruction:
        prompt = f"{mapping.instruction.strip()}\n\n{prompt}"
    messages = [{"role": "system", "content": mapping.system}] if mapping.system else []
    return [*messages, {"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


# -- a proposal ---------------------------------------------------------------------------------------


@dataclass
class Column:
    """What a column's values look like, in the first rows."""

    name: str
    filled: int = 0
    distinct: int = 0
    mean_chars: float = 0.0
    top: list[tuple[str, int]] = field(default_factory=list)
    numbers: bool = False
    """Every value is a whole number."""

    @property
    def looks_like_ids(self) -> bool:
        """A number in every row, each different: an id, metadata, never an answer."""
        return self.numbers and self.distinct == self.filled

    @property
    def looks_like_labels(self) -> bool:
        """Few distinct short values, each seen more than once on average."""
        return 2 <= self.distinct <= MAX_LABELS and self.distinct * 2 <= self.filled and self.mean_chars <= 60

    def words(self) -> str:
        """'20 distinct values (billing 12%, ...)' or 'text, ~85 characters'."""
        if self.looks_like_labels:
            shown = ", ".join(f"{v[:24]} {n / self.filled:.0%}" for v, n in self.top[:3])
            return f"{self.distinct} distinct values ({shown}, ...)"
        return f"text, ~{self.mean_chars:.0f} characters"


def describe(rows: Sequence[Any]) -> list[Column]:
    """The columns of the first SAMPLE_ROWS rows (dicts), in the order they first appear."""
    counts: dict[str, Counter[str]] = {}
    chars: dict[str, int] = {}
    filled: dict[str, int] = {}
    words: set[str] = set()  # columns with a value that is not a whole number
    for row in rows[:SAMPLE_ROWS]:
        if not isinstance(row, dict):
            continue
        for key, value in row.items():
            key = str(key)
            counts.setdefault(key, Counter())
            text = cell_text(value)
            if text is None or not text.strip():
                continue
            counts[key][text.strip()] += 1
            if not text.strip().lstrip("-").isdigit():
                words.add(key)
            chars[key] = chars.get(key, 0) + len(text)
            filled[key] = filled.get(key, 0) + 1
    return [
        Column(
            k, filled.get(k, 0), len(c), chars.get(k, 0) / max(1, filled.get(k, 0)), c.most_common(3), k not in words
        )
        for k, c in counts.items()
    ]


def _by_name(columns: list[Column], names: Sequence[str]) -> Column | None:
    for name in names:
        for c in columns:
            if c.name.strip().lower() == name:
                return c
    return None


@dataclass
class Proposal:
    mapping: Mapping
    why: list[str]
    columns: list[Column]

    def unused(self) -> list[Column]:
        used = set(self.mapping.columns())
        return [c for c in self.columns if c.name not in used]


def propose(rows: Sequence[Any]) -> Proposal | None:
    """A mapping for table rows, from the column names people use and the shape of the values (a column
    of few distinct short values is the answer; the longest text column is the prompt). None when the
    rows have fewer than two columns with text.

    >>> rows = [{"id": i, "text": f"message number {i} about money", "category": ["a", "b"][i % 2]} for i in range(8)]
    >>> p = propose(rows)
    >>> p.mapping
    Mapping(prompt='text', answer='category', instruction='', system='')
    >>> p.why[1]
    "answer: 'category' (2 distinct values (a 50%, b 50%, ...))"
    """
    columns = [c for c in describe(rows) if c.filled and not c.looks_like_ids]
    if len(columns) < 2:
        return None
    answer = _by_name(columns, ANSWER_NAMES)
    if answer is None or not (answer.looks_like_labels or answer.mean_chars > 0):
        labels = sorted((c for c in columns if c.looks_like_labels), key=lambda c: c.distinct)
        answer = labels[0] if labels else None
    rest = [c for c in columns if c is not answer]
    prompt = _by_name(rest, PROMPT_NAMES) or max(rest, key=lambda c: c.mean_chars, default=None)
    if answer is None:  # no label column: the shorter of the two text columns is the answer
        texts = sorted(rest, key=lambda c: c.mean_chars)
        if len(texts) < 2:
            return None
        answer = next(c for c in texts if c is not prompt)
    if prompt is None or prompt is answer:
        return None
    why = [
        f"prompt: {prompt.name!r} ({prompt.words()})",
        f"answer: {answer.name!r} ({answer.words()})",
    ]
    return Proposal(Mapping(prompt.name, answer.name), why, columns)


def label_set(answers: Sequence[str]) -> list[str] | None:
    """The labels of a mapped answer column when its answers form a label set (2 to MAX_LABELS distinct
    one-line answers, each seen twice on average), whatever the length of their names; else None.

    >>> label_set(["balance_not_updated_after_cheque_or_cash_deposit", "card_arrival"] * 3)
    ['balance_not_updated_after_cheque_or_cash_deposit', 'card_arrival']
    """
    names = {a.strip() for a in answers}
    if not 2 <= len(names) <= MAX_LABELS or len(answers) < 2 * len(names) or any("\n" in n for n in names):
        return None
    return sorted(names)
