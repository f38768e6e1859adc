"""The data linter: what silently ruins a fine-tune, found before training, with the line and the fix.

``lint(path)`` reads the file the way training does (:func:`tunewiz.core.data.dataset.read`),
then checks the examples as a set (duplicates, conflicting answers, leakage
into the held-out rows, size) and, given the model's tokenizer, as the model
will see them (chat template, end-of-turn token, BOS, length against
``max_seq_len``, rows left with nothing to train). Every finding has a rule id
(see :data:`RULES`), a severity, the file and line, and a sentence saying what
to do. The report's summary counts rows by format, findings by rule and
severity, and the token-length distribution.

Speed: the structural pass is plain Python over parsed rows. The token pass
renders every row through the chat template once and counts tokens segment by
segment between special tokens, tokenising each distinct segment once (system
prompts and short answers repeat); the full prefix-by-prefix mask
(:func:`tunewiz.core.data.dataset.render`) runs on a sample of rows, one per conversation
shape, and on every row longer than ``max_seq_len`` (to say how much of the
answer is cut). ``benchmarks/lint_speed.py`` measures it.
"""

from __future__ import annotations

import re
import statistics
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from tunewiz.core.config import DataConfig
from tunewiz.core.data import columns
from tunewiz.core.data.dataset import (
    SEVERITIES,
    DataError,
    Example,
    Finding,
    LoadedData,
    TemplateError,
    TemplateTimeout,
    answer_labels,
    bounded_render,
    bulk,
    read,
    render_many,
    split,
)

# rule id -> (severity, what it catches). The README's lint table is made from this.
RULES: dict[str, tuple[str, str]] = {
    "invalid-json": ("error", "a line or file that is not valid JSON"),
    "invalid-csv": ("error", "a CSV/TSV row with the wrong number of cells or broken quotes"),
    "not-utf8": ("error", "bytes that are not UTF-8"),
    "bom": ("info", "a byte-order mark at the start of the file"),
    "unknown-format": ("error", "a row in no known format (missing keys)"),
    "unknown-keys": ("info", "keys no format reads (ids, metadata, or a typo)"),
    "bad-field": ("error", "a field of the wrong type (null, number, object where text belongs)"),
    "unknown-role": ("error", "a role name no template knows"),
    "empty-content": ("error", "an empty or blank message"),
    "system-not-first": ("error", "a system message after the first message"),
    "no-assistant": ("error", "a conversation without an assistant turn"),
    "last-not-assistant": ("error", "a conversation that does not end with the assistant"),
    "roles-not-alternating": ("warning", "two user or two assistant turns in a row"),
    "mixed-formats": ("warning", "rows in more than one format in one file"),
    "empty-file": ("error", "no rows at all"),
    "duplicate": ("warning", "the same example twice"),
    "near-duplicate": ("warning", "the same example up to case, spacing and punctuation"),
    "conflicting-answers": ("warning", "the same prompt with different answers"),
    "leakage": ("warning", "a held-out example that is also in the training rows"),
    "too-few-examples": ("warning", "fewer than 200 examples"),
    "dataset-size": ("info", "where the dataset's size stands against the 500-2,000 sweet spot"),
    "no-chat-template": ("error", "a tokenizer without a chat template (a base model)"),
    "template-error": ("error", "a conversation the model's chat template rejects"),
    "system-unsupported": ("error", "a system message the model's template rejects or drops"),
    "pad-is-eos": ("info", "the pad token is the end-of-sequence token"),
    "eot-not-trained": ("error", "the end-of-turn token outside the trained tokens: the model may never stop"),
    "double-bos": ("error", "two BOS tokens at the start after templating"),
    "special-token-in-content": ("warning", "a message that contains a special token's text"),
    "too-long": ("warning", "an example longer than max_seq_len (truncated)"),
    "no-trained-tokens": ("warning", "a row with no trained token left after truncation (dropped)"),
    "nothing-to-train": ("error", "every row loses all its trained tokens to truncation at max_seq_len"),
    "too-few-to-hold-out": ("error", "one row and no eval file: nothing can be held out for evaluation"),
    "too-large": ("error", "an example of over a million characters (no max_seq_len holds it)"),
    "unknown-target-module": ("error", "a [training] target_modules name that matches no layer of the model"),
    "unmapped-columns": ("error", "a table whose columns are not mapped: it would train as plain text, or not at all"),
    "column-mapping": ("error", "a column mapping that names a missing column, or a row with an empty mapped cell"),
    "labels": ("info", "the answers are labels: how many rows each has"),
    "rare-label": ("warning", "a label with too few rows to learn or to evaluate"),
    "label-variants": ("warning", "labels that differ only in case or spacing ('Billing' / 'billing ')"),
    "label-imbalance": ("warning", "the commonest label has 10x the rows of the rarest or more"),
}

RARE_LABEL = 5  # rows a label needs to be learned and held out at least once
IMBALANCE = 10  # commonest / rarest label rows from which the model may learn to answer the commonest
SAMPLE_ROWS = 20  # rows fully rendered (mask included) besides one per conversation shape
ENCODE_BATCH = 2048  # texts per tokenizer call: the tokenizer's per-token records of 30 MB of text take gigabytes
DEFAULT_MAX_SEQ_LEN = DataConfig.max_seq_len  # what training uses when nothing says otherwise
TOO_FEW, SWEET_LOW, SWEET_HIGH, MANY = 200, 500, 2000, 5000


@dataclass
class Report:
    """Everything the linter found, and the numbers of the summary."""

    path: Path
    rows: int
    examples: list[Example]
    formats: dict[str, int]
    findings: list[Finding]
    max_seq_len: int | None = None
    tokens: dict[str, Any] = field(default_factory=dict)  # min, median, p95, max, truncated, ...
    train_rows: int = 0
    eval_rows: int = 0
    eval_path: Path | None = None
    sha256: str = ""

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def by_severity(self) -> dict[str, int]:
        c = Counter(f.severity for f in self.findings)
        return {s: c.get(s, 0) for s in SEVERITIES}

    def by_rule(self) -> dict[str, int]:
        return dict(Counter(f.rule for f in self.findings).most_common())

    def at_line(self, line: int) -> list[Finding]:
        return [f for f in self.findings if f.line == line]

    def summary_lines(self) -> list[str]:
        sev = self.by_severity()
        fmt = ", ".join(f"{k} {v}" for k, v in sorted(self.formats.items())) or "none"
        out = [
            f"{self.path}: {self.rows} rows, {len(self.examples)} usable ({fmt})",
            f"findings: {sev['error']} error(s), {sev['warning']} warning(s), {sev['info']} note(s)",
        ]
        if self.train_rows:
            out.append(f"split: {self.train_rows} train / {self.eval_rows} held out")
        t = self.tokens
        if t.get("max") is not None:
            out.append(
                f"tokens per example: min {t['min']}, median {t['median']}, p95 {t['p95']}, max {t['max']} "
                f"(max_seq_len {self.max_seq_len}); truncated {t['truncated']} "
                f"({t['truncated'] / max(t['counted'], 1):.1%})"
            )
        if self.findings:
            out.append("by rule: " + ", ".join(f"{r} {n}" for r, n in self.by_rule().items()))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "rows": self.rows,
            "examples": len(self.examples),
            "formats": self.formats,
            "train_rows": self.train_rows,
            "eval_rows": self.eval_rows,
            "max_seq_len": self.max_seq_len,
            "tokens": self.tokens,
            "by_severity": self.by_severity(),
            "by_rule": self.by_rule(),
            "findings": [f.to_dict() for f in self.findings],
        }

    def data_shape(self):
        """The data's shape for the planner, from the linter's tokenized lengths (the same figures the
        wizard's data step shows and `tunewiz fit --data` uses); None when nothing was tokenized.
        The trained share comes from the text (the linter renders only a sample with the mask)."""
        from tunewiz.core.planning.memory import DataShape, approx_data_shape

        t = self.tokens
        if not t.get("max"):
            return None
        limit = self.max_seq_len or t["max"]
        approx = approx_data_shape(self.examples, limit)
        return DataShape(
            longest=min(t["max"], limit),
            train_tokens=t["total"] * self.train_rows // max(t["counted"], 1),
            trained_fraction=approx.trained_fraction,
            source="tokenized by the linter",
            rows=self.train_rows,
        )

    def record(self) -> dict[str, Any]:
        """The lint summary kept in run.toml's [data] section: counts by severity and by rule."""
        return {"lint": {**self.by_severity(), "rules": self.by_rule()}}


# -- the set of examples ------------------------------------------------------------------


# ASCII punctuation, whitespace and the key separators are dropped (bytes.translate: one C pass).
_DROP = (string.punctuation + string.whitespace + "\x1e\x1f").encode()


def _loose(text: str) -> bytes:
    """Case, spacing and ASCII punctuation removed: what makes two examples near-duplicates.

    >>> _loose("Hello,  World!") == _loose("hello world")
    True
    """
    return text.encode("utf-8", "surrogatepass").lower().translate(None, _DROP)


class _Keys(NamedTuple):
    """An example's identity, computed once: its loose prompt and loose answer (see _loose)."""

    ex: Example
    loose: bytes  # prompt + answer
    prompt: bytes | None  # None for plain text rows
    answer: bytes


def _keys(examples: list[Example]) -> list[_Keys]:
    out = []
    dumps = orjson.dumps
    for ex in examples:
        if ex.is_chat:
            prompt = dumps(ex.messages[:-1]).lower().translate(None, _DROP)
            answer = _loose(ex.messages[-1]["content"])
            out.append(_Keys(ex, prompt + b"\x00" + answer, prompt, answer))
        else:
            out.append(_Keys(ex, _loose(ex.text), None, b""))
    return out


def _same(a: Example, b: Example) -> bool:
    return a.messages == b.messages and a.text == b.text


def _set_findings(path: Path, keys: list[_Keys]) -> list[Finding]:
    """Duplicates, near-duplicates and conflicting answers (one dict lookup per row; exact only on a match)."""
    found: list[Finding] = []
    seen: dict[bytes, Example] = {}
    prompts: dict[bytes, tuple[int, bytes]] = {}
    f = str(path)
    for k in keys:
        ex = k.ex
        first = seen.setdefault(k.loose, ex)
        if first is not ex:
            if _same(first, ex):
                rule, msg = "duplicate", f"duplicate of line {first.line}; a repeated example is learned harder "
                msg += "than the rest: drop one"
            else:
                rule = "near-duplicate"
                msg = f"near-duplicate of line {first.line} (differs only in case, spacing or punctuation); drop one"
            found.append(Finding(rule, "warning", f, ex.line, msg))
            continue
        if k.prompt is not None:
            line, answer = prompts.setdefault(k.prompt, (ex.line, k.answer))
            if answer != k.answer:
                found.append(
                    Finding(
                        "conflicting-answers",
                        "warning",
                        f,
                        ex.line,
                        f"same prompt as line {line} with a different answer; the model cannot learn both: "
                        "keep the right one",
                    )
                )
    return found


def _leakage(train: list[_Keys], held: list[_Keys], train_file: Path, held_file: Path) -> list[Finding]:
    seen: dict[bytes, int] = {}
    for k in train:
        seen.setdefault(k.loose, k.ex.line)
    found = []
    same_file = train_file == held_file
    for k in held:
        line = seen.get(k.loose)
        if line is not None:
            where = f"line {line}" if same_file else f"line {line} of {train_file}"
            fix = "remove the duplicate from the file" if same_file else "remove it from one of the two files"
            found.append(
                Finding(
                    "leakage",
                    "warning",
                    str(held_file),
                    k.ex.line,
                    f"held out for evaluation but also trained on ({where}): the held-out score will look better "
                    f"than the model is; {fix}",
                )
            )
    return found


def _size(path: Path, n: int) -> list[Finding]:
    f = str(path)
    if n < TOO_FEW:
        return [
            Finding(
                "too-few-examples",
                "warning",
                f,
                None,
                f"{n} examples: below ~200 a model struggles to learn a pattern reliably; 500-2,000 good examples "
                "is the sweet spot. Expect a weak effect, or write more examples",
            )
        ]
    if n < SWEET_LOW:
        msg = f"{n} examples: enough to start; 500-2,000 good examples is the sweet spot"
    elif n <= SWEET_HIGH:
        return []
    elif n <= MANY:
        msg = f"{n} examples: above the 500-2,000 sweet spot; fine if they are all good"
    else:
        msg = (
            f"{n} examples: past ~5,000 extra examples are often of lower quality and can hurt; "
            "try 500-2,000 of the best first, evaluate, then scale"
        )
    return [Finding("dataset-size", "info", f, None, msg)]


# -- the tokens ----------------------------------------------------------------------------


class TokenCounter:
    """Token lengths of rendered rows, fast: each distinct text between special tokens is tokenised once.

    A fast tokenizer splits its added (special) tokens out of the text before
    anything else, so a text's tokens are the tokens of its pieces between
    them. That is checked on the first rows against a full tokenisation; if it
    ever differs (a tokenizer whose added tokens eat surrounding spaces), every
    row is tokenised whole instead.
    """

    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer
        self.cache: dict[str, int] = {}
        self.special = None
        self.backend = getattr(tokenizer, "backend_tokenizer", None)
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        plain = all(not (a.lstrip or a.rstrip or a.single_word) for a in added.values())
        if added and plain and self.backend is not None:
            words = sorted((a.content for a in added.values()), key=len, reverse=True)
            self.special = re.compile("(" + "|".join(re.escape(w) for w in words) + ")")
        self.checked = 0

    def encode(self, texts: list[str]) -> list[int]:
        out: list[int] = []
        for i in range(0, len(texts), ENCODE_BATCH):  # in batches: only the counts are kept
            batch = texts[i : i + ENCODE_BATCH]
            if self.backend is not None:
                out += [len(e.ids) for e in self.backend.encode_batch_fast(batch, add_special_tokens=False)]
            else:
                out += [len(ids) for ids in self.tok(batch, add_special_tokens=False)["input_ids"]]
        return out

    def count(self, texts: list[str]) -> list[int]:
        if self.special is None:
            return self.encode(texts)
        pieces = [self.special.split(t) for t in texts]
        todo = {p for ps in pieces for p in ps[0::2] if p and p not in self.cache}
        if todo:
            todo_list = list(todo)
            self.cache.update(zip(todo_list, self.encode(todo_list), strict=True))
        lengths = [sum(self.cache[p] for p in ps[0::2] if p) + len(ps) // 2 for ps in pieces]
        if self.checked < 20:  # trust, but verify on the first rows
            n = min(len(texts), 20 - self.checked)
            if self.encode(texts[:n]) != lengths[:n]:
                self.special = None
                return self.encode(texts)
            self.checked += n
        return lengths


def _template_renderer(tokenizer):
    """A fast renderer of whole conversations: the compiled template, checked against apply_chat_template."""

    template = tokenizer.chat_template

    def slow(messages):  # each render is stopped if the template runs away (dataset.bounded_render)
        return bounded_render(template, tokenizer.apply_chat_template, messages, tokenize=False)

    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template

        compiled = _compile_jinja_template(template)
        extra = dict(tokenizer.special_tokens_map)
    except Exception:  # noqa: BLE001 - a private helper; the public path always works
        return slow

    def fast(messages):
        return bounded_render(
            template,
            compiled.render,
            messages=messages,
            add_generation_prompt=False,
            tools=None,
            documents=None,
            **extra,
        )

    return fast


def _special_strings(tokenizer) -> list[str]:
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return sorted({a.content for a in added.values() if a.special and len(a.content) > 1}, key=len, reverse=True)


def _eot_findings(tokenizer, ex: Example, r, f: str) -> list[Finding]:
    """Is the token that ends each assistant turn trained? Is there a double BOS?"""
    out = []
    bos = tokenizer.bos_token_id
    if bos is not None and len(r.input_ids) > 1 and r.input_ids[0] == bos == r.input_ids[1]:
        out.append(
            Finding(
                "double-bos",
                "error",
                f,
                ex.line,
                "the rendered example starts with two BOS tokens (the template writes one and the text or "
                "tokenizer adds another); remove the BOS text from the data",
            )
        )
    if not ex.is_chat:
        return out
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    answer = ex.messages[-1]["content"].rstrip()
    end = r.text.rfind(answer)
    if end < 0 or r.truncated:
        return out
    end += len(answer)
    after = [i for i, (s, _e) in enumerate(r.offsets) if s >= end]
    eot = next((i for i in after if r.input_ids[i] in special), None)
    if eot is None:
        out.append(
            Finding(
                "eot-not-trained",
                "warning",
                f,
                ex.line,
                "the chat template ends the assistant turn with no special token, so the model has no token to "
                "learn to stop on; use a template that ends turns (e.g. with the EOS token)",
            )
        )
    elif not r.mask[eot]:
        name = tokenizer.convert_ids_to_tokens(r.input_ids[eot])
        out.append(
            Finding(
                "eot-not-trained",
                "error",
                f,
                ex.line,
                f"the end-of-turn token {name} falls outside the trained tokens: the model may never learn to "
                "stop. The template renders the answer differently alone than in the conversation; fix the template",
            )
        )
    return out


def _token_findings(
    path: Path, tokenizer, examples: list[Example], max_seq_len: int | None
) -> tuple[list[Finding], dict[str, Any]]:
    """The findings that need the model's tokenizer (its template and pad token, special tokens in the
    text, every row's length, the full mask of a sample and of every long row) and the token statistics."""
    f = str(path)
    has_template = bool(getattr(tokenizer, "chat_template", None))
    found = _tokenizer_findings(f, tokenizer, any(e.is_chat for e in examples) and not has_template)
    usable = [e for e in examples if e.is_chat and has_template or not e.is_chat]
    if not usable:
        return found, {}
    found += _special_token_findings(f, tokenizer, usable)

    # Every row's token count (see _lengths), then a sample and every long row in full.
    counted, lengths, failed, firsts = _lengths(tokenizer, usable)
    found += [_template_finding(f, ex, exc) for ex, exc in failed]
    index = {id(ex): i for i, ex in enumerate(counted)}
    to_render = _rows_to_render(counted, lengths, firsts, max_seq_len)
    said: set[str] = set()  # rules said once per file: the first row shows what every row has
    truncated = 0
    dropped: dict[int, int] = {}  # line -> tokens of a row truncation leaves with nothing trained
    for ex, r in zip(to_render, render_many(tokenizer, to_render, max_seq_len), strict=True):
        if isinstance(r, TemplateError):
            found.append(_template_finding(f, ex, r))
            continue
        lengths[index[id(ex)]] = r.total_tokens
        row = _eot_findings(tokenizer, ex, r, f)
        if _template_drops_system(ex, r):
            row.append(_system_dropped(f, ex.line))
        for finding in row:
            if finding.rule in ONCE_PER_FILE and finding.rule in said:
                continue
            said.add(finding.rule)
            found.append(finding)
        if r.truncated:
            truncated += 1
            if r.trained_tokens == 0:
                dropped[ex.line] = r.total_tokens
            found.append(_truncation_finding(f, ex.line, r, max_seq_len))
    stats = _length_stats(lengths, truncated, len(dropped)) if lengths else {}
    stats["dropped_lines"] = dropped
    return found, stats


ONCE_PER_FILE = ("eot-not-trained", "system-unsupported")
"""Rules of the sampled rows said for the first row only: the template does the same to every row."""


def _tokenizer_findings(f: str, tokenizer, chat_without_template: bool) -> list[Finding]:
    """What the tokenizer itself means for the file: no chat template for its chat rows, a pad token that
    is the end-of-sequence token."""
    found = []
    if chat_without_template:
        found.append(
            Finding(
                "no-chat-template",
                "error",
                f,
                None,
                "the model's tokenizer has no chat template (a base model?), so chat rows cannot be rendered: "
                'pick the model\'s -Instruct version, set tokenizer.chat_template, or use plain {"text"} rows',
            )
        )
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        found.append(
            Finding(
                "pad-is-eos",
                "info",
                f,
                None,
                f"the pad token is {'unset' if tokenizer.pad_token_id is None else 'the end-of-sequence token'}: "
                "tools that mask padding in the labels would also stop training the end token. tunewiz builds "
                "the labels itself and trains it; elsewhere, set a distinct pad token",
            )
        )
    return found


def _special_token_findings(f: str, tokenizer, examples: list[Example]) -> list[Finding]:
    """Rows whose text holds one of the tokenizer's special tokens: it becomes a control token once
    tokenised."""
    specials = _special_strings(tokenizer)
    if not specials:
        return []
    pattern = re.compile("|".join(re.escape(s) for s in specials))
    everything = "\x00".join(m["content"] for ex in examples for m in ex.messages)
    everything += "\x00".join(ex.text for ex in examples if not ex.messages)
    found = []
    # One search over all the text first: the usual answer is "nowhere", then no row needs a look.
    for ex in examples if pattern.search(everything) else []:
        parts = [m["content"] for m in ex.messages] if ex.is_chat else [ex.text]
        hit = next((m for m in (pattern.search(p) for p in parts) if m), None)
        if hit:
            found.append(
                Finding(
                    "special-token-in-content",
                    "warning",
                    f,
                    ex.line,
                    f"the text contains {hit.group(0)!r}, which the tokenizer turns into a control token; "
                    "remove it (the chat template adds the special tokens itself)",
                )
            )
    return found


def _rows_to_render(
    counted: list[Example], lengths: list[int], firsts: list[Example], max_seq_len: int | None
) -> list[Example]:
    """The rows rendered whole, mask included: a sample (the first SAMPLE_ROWS and one per conversation
    shape) and every row near or over max_seq_len, each once."""
    sample = {id(e): e for e in [*counted[:SAMPLE_ROWS], *firsts]}
    margin = 8  # counts from the sum of parts are checked, but a row near the limit is rendered whole anyway
    long_rows = [ex for ex, n in zip(counted, lengths, strict=True) if max_seq_len and n > max_seq_len - margin]
    sample.update({id(e): e for e in long_rows})
    return list(sample.values())


def _template_drops_system(ex: Example, r) -> bool:
    """Whether the rendered row `r` lacks the system message `ex` begins with."""
    system = ex.messages[0]["content"].strip() if ex.is_chat and ex.messages[0]["role"] == "system" else ""
    return bool(system) and system not in r.text


def _system_dropped(f: str, line: int) -> Finding:
    return Finding(
        "system-unsupported",
        "error",
        f,
        line,
        "the model's chat template drops the system message (it never reaches the model); "
        "fold it into the first user message",
    )


def _truncation_finding(f: str, line: int, r, max_seq_len: int | None) -> Finding:
    """A row longer than max_seq_len: dropped from training when truncation cuts its whole answer, else
    how many of the answer's tokens it cuts."""
    if r.trained_tokens == 0:
        return Finding(
            "no-trained-tokens",
            "warning",
            f,
            line,
            f"{r.total_tokens} tokens, max_seq_len {max_seq_len}: truncation cuts the whole answer, "
            f"so the row is dropped from training; raise max_seq_len to at least {r.total_tokens} "
            "or shorten the prompt",
        )
    total_trained = r.trained_tokens + r.cut_trained_tokens
    cut = (
        f"cuts {r.cut_trained_tokens} of the answer's {total_trained} trained tokens"
        if r.cut_trained_tokens
        else "cuts no answer tokens"
    )
    return Finding(
        "too-long",
        "warning",
        f,
        line,
        f"{r.total_tokens} tokens, longer than max_seq_len {max_seq_len}: truncation {cut}; "
        f"raise max_seq_len to {r.total_tokens} or shorten the example",
    )


def _length_stats(lengths: list[int], truncated: int, dropped: int) -> dict[str, Any]:
    """The token statistics of the counted rows.

    >>> _length_stats([3, 1, 2], 0, 0)["median"]
    2
    """
    ordered = sorted(lengths)
    return {
        "counted": len(ordered),
        "min": ordered[0],
        "median": int(statistics.median(ordered)),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
        "total": sum(ordered),
        "truncated": truncated,
        "dropped": dropped,
    }


def _lengths(tokenizer, examples: list[Example]):
    """Token count of every example as rendered, the examples the chat template rejects, and the first
    example of each conversation shape: (examples counted, their lengths, [(example, error)], [example]).

    Rendering each row through a sandboxed Jinja template costs more than
    tokenising it, so a conversation's length is counted as the sum of its
    messages' tokens plus the template's tokens around them, which depend only
    on the conversation's shape (its roles): measured once per shape on a real
    render. Each distinct message is tokenised once. The sum is checked against
    whole renders of rows spread over the file; if any differs (a template that
    changes content, a tokenizer that merges across a message's edge), every row
    is rendered and counted whole instead.
    """
    counter = TokenCounter(tokenizer)
    render = _template_renderer(tokenizer)
    # Plain text rows get BOS / EOS around them.
    extra = int(tokenizer.bos_token_id is not None) + int(tokenizer.eos_token_id is not None)
    texts = [ex for ex in examples if not ex.is_chat]
    chat = [ex for ex in examples if ex.is_chat]
    out: list[tuple[Example, int]] = []
    failed: list[tuple[Example, Exception]] = []
    firsts: dict[tuple[str, ...], Example] = {}
    if texts:
        out += [(ex, n + extra) for ex, n in zip(texts, counter.count([ex.text for ex in texts]), strict=True)]
        firsts[("text",)] = texts[0]
    if not chat:
        return [e for e, _ in out], [n for _, n in out], failed, list(firsts.values())

    unique = list({m["content"] for ex in chat for m in ex.messages})
    # A message on its own needs no splitting at special tokens: the tokenizer matches them itself.
    size = dict(zip(unique, counter.encode(unique), strict=True))
    around: dict[tuple[str, ...], int | Exception] = {}
    summed: list[tuple[Example, int]] = []
    for ex in chat:
        shape = tuple(m["role"] for m in ex.messages)
        if shape not in around:
            firsts[shape] = ex
            try:
                around[shape] = counter.count([render(ex.messages)])[0] - sum(size[m["content"]] for m in ex.messages)
            except Exception as exc:  # noqa: BLE001 - jinja's raise_exception: the template rejects this shape
                around[shape] = exc
        extra_tokens = around[shape]
        if isinstance(extra_tokens, Exception):
            try:  # the shape was rejected once; this row may still render (content-dependent templates)
                summed.append((ex, counter.count([render(ex.messages)])[0]))
            except Exception as exc:  # noqa: BLE001
                failed.append((ex, exc))
            continue
        summed.append((ex, extra_tokens + sum([size[m["content"]] for m in ex.messages])))
    step = max(1, len(summed) // 50)
    check = summed[::step][:50]
    exact = counter.count([render(ex.messages) for ex, _ in check])
    if exact != [n for _, n in check]:
        rendered = [ex for ex, _ in summed]
        summed = list(zip(rendered, counter.count([render(ex.messages) for ex in rendered]), strict=True))
    out += summed
    return [e for e, _ in out], [n for _, n in out], failed, list(firsts.values())


def _template_finding(f: str, ex: Example, exc: Exception) -> Finding:
    if isinstance(exc, TemplateTimeout):  # the template's fault, not the row's: its message says the fix
        return Finding("template-error", "error", f, ex.line, str(exc))
    msg = str(exc)
    if "rejects this conversation: " in msg:
        msg = msg.split("rejects this conversation: ", 1)[1]
    if "system" in msg.lower() and ex.messages and ex.messages[0]["role"] == "system":
        return Finding(
            "system-unsupported",
            "error",
            f,
            ex.line,
            f"the model's chat template rejects the system message ({msg}); fold it into the first user message",
        )
    return Finding(
        "template-error",
        "error",
        f,
        ex.line,
        f"the model's chat template rejects this conversation ({msg}); reshape the row to what the template accepts",
    )


# -- the whole -------------------------------------------------------------------------------


def lint(
    path: str | Path,
    tokenizer=None,
    max_seq_len: int | None = DEFAULT_MAX_SEQ_LEN,
    eval_path: str | Path | None = None,
    eval_fraction: float = 0.1,
    seed: int = 42,
    loaded: LoadedData | None = None,
    mapping: columns.Mapping | None = None,
    as_text: bool = False,
) -> Report:
    """Lint a data file (and an optional held-out file). Raises DataError only when a file cannot be read.
    `loaded`: the file as :func:`tunewiz.core.data.dataset.read` already returned it (not read again);
    `mapping`, `as_text`: how a table's columns make examples (core.data.columns)."""
    with bulk():  # see core.data.bulk: no garbage-collector passes over the rows while they are checked
        return _lint(path, tokenizer, max_seq_len, eval_path, eval_fraction, seed, loaded, mapping, as_text)


def _label_findings(path: Path, labels: list[str] | None) -> list[Finding]:
    """What labelled data needs said: the label distribution, rare labels, variants that differ only
    in case or spacing, heavy imbalance.

    >>> [f.rule for f in _label_findings(Path("d.csv"), ["Billing", "billing ", "a", "a", "a", "a", "a"] * 2)]
    ['labels', 'rare-label', 'label-variants']
    """
    if not labels:
        return []
    counts = Counter(labels)
    n = len(labels)
    shown = ", ".join(f"{k} {v / n:.0%}" for k, v in counts.most_common(6))
    more = f", ... {len(counts) - 6} more" if len(counts) > 6 else ""
    out = [Finding("labels", "info", str(path), None, f"the answers are {len(counts)} labels: {shown}{more}", n)]
    rare = sorted((k for k, v in counts.items() if v < RARE_LABEL), key=lambda k: (counts[k], k))
    if rare:
        listed = ", ".join(f"{k!r} ({counts[k]})" for k in rare[:6]) + (", ..." if len(rare) > 6 else "")
        out.append(
            Finding(
                "rare-label", "warning", str(path), None,
                f"{len(rare)} label(s) with fewer than {RARE_LABEL} rows: {listed}; too few to learn, and the "
                "held-out comparison can barely judge them: add rows (10+ per label is a good start)",
                sum(counts[k] for k in rare),
            )
        )  # fmt: skip
    variants: dict[str, list[str]] = {}
    for k in counts:
        variants.setdefault(" ".join(k.lower().split()), []).append(k)
    same = [sorted(v) for v in variants.values() if len(v) > 1]
    if same:
        listed = "; ".join(" / ".join(repr(x) for x in group) for group in same[:4])
        out.append(
            Finding(
                "label-variants", "warning", str(path), None,
                f"labels that differ only in case or spacing: {listed}; the model learns them as different "
                "answers: write each label one way",
                sum(counts[x] for group in same for x in group),
            )
        )  # fmt: skip
    (top, most), (low, least) = counts.most_common(1)[0], min(counts.items(), key=lambda kv: (kv[1], kv[0]))
    if least and most >= IMBALANCE * least and len(counts) > 1:
        out.append(
            Finding(
                "label-imbalance", "warning", str(path), None,
                f"{top!r} has {most} rows, {low!r} {least} ({most // least}x): the model may learn to answer "
                f"{top!r} when unsure; add rows of the rare labels, or drop some of {top!r}",
                n,
            )
        )  # fmt: skip
    return out


def _lint(
    path, tokenizer, max_seq_len, eval_path, eval_fraction, seed, loaded=None, mapping=None, as_text=False
) -> Report:
    loaded = loaded if loaded is not None else read(path, mapping, as_text)
    findings = list(loaded.findings)
    examples = loaded.examples
    keys = _keys(examples)
    findings += _set_findings(loaded.path, keys)
    held_loaded = None
    train_rows = eval_rows = 0
    trained = examples  # the rows training learns from
    if eval_path:
        held_loaded = read(eval_path, mapping, as_text)
        findings += held_loaded.findings
        findings += _leakage(keys, _keys(held_loaded.examples), loaded.path, held_loaded.path)
        train_rows, eval_rows = len(examples), len(held_loaded.examples)
    elif len(examples) >= 2:
        # The same split as training (same seed), so the leakage found is the leakage trained.
        train, held = split(keys, eval_fraction, seed, answer_labels(examples))  # type: ignore[arg-type]
        findings += _leakage(train, held, loaded.path, loaded.path)
        train_rows, eval_rows = len(train), len(held)
        trained = [k.ex for k in train]
    elif examples:  # what core.data.split refuses, said now instead of minutes into the run
        findings.append(
            Finding(
                "too-few-to-hold-out",
                "error",
                str(loaded.path),
                None,
                f"too few rows to hold out: {len(examples)} row(s) with eval_fraction {eval_fraction} leaves no "
                "held-out row; add rows, or give an eval file (--eval-data, [data] eval_path)",
            )
        )
    if examples:
        findings += _size(loaded.path, len(examples))
        findings += _label_findings(loaded.path, answer_labels(examples))
    stats: dict[str, Any] = {}
    if tokenizer is not None:
        token_found, stats = _token_findings(loaded.path, tokenizer, examples, max_seq_len)
        findings += token_found
        dropped = stats.pop("dropped_lines", {})
        findings += _nothing_to_train(loaded.path, trained, examples, dropped, max_seq_len)
        if held_loaded is not None:
            held_found, _ = _token_findings(held_loaded.path, tokenizer, held_loaded.examples, max_seq_len)
            findings += [x for x in held_found if x.line is not None]  # file-wide remarks are said once
    findings.sort(key=lambda x: (x.file != str(loaded.path), x.line or 0, SEVERITIES.index(x.severity), x.rule))
    return Report(
        path=loaded.path,
        rows=loaded.rows,
        examples=examples,
        formats=loaded.formats,
        findings=findings,
        max_seq_len=max_seq_len,
        tokens=stats,
        train_rows=train_rows,
        eval_rows=eval_rows,
        eval_path=held_loaded.path if held_loaded else None,
        sha256=loaded.sha256,
    )


def _nothing_to_train(
    path: Path, trained: list[Example], examples: list[Example], dropped: dict[int, int], max_seq_len: int | None
) -> list[Finding]:
    """An error when truncation leaves the training rows with no trained token at all (the trainer would
    stop with "no example has any trained token left" minutes in)."""
    if not dropped or not trained or any(ex.line not in dropped for ex in trained):
        return []
    everyone = all(ex.line in dropped for ex in examples)
    need = min(dropped[ex.line] for ex in trained)
    return [
        Finding(
            "nothing-to-train",
            "error",
            str(path),
            None,
            f"every {'' if everyone else 'training '}row loses all its trained tokens to truncation at "
            f"max_seq_len {max_seq_len}: raise max_seq_len to at least {need} (the shortest row needs {need}), "
            "or shorten the prompts",
        )
    ]


TARGETS_WHERE = "[training] target_modules"
# Layer types PEFT's LoRA adapts (torch, and transformers' GPT-2 style Conv1D).
LORA_LAYERS = {"Linear", "Embedding", "Conv1d", "Conv2d", "Conv3d", "Conv1D", "MultiheadAttention"}


def target_findings(targets: list[str], modules: dict[str, str], model: str) -> list[Finding]:
    """[training] target_modules checked against the model's modules (name -> class name), the way PEFT
    matches a list: a module whose name is the target or ends with "." + target.

    >>> mods = {"model.layers.0.self_attn.q_proj": "Linear", "model.norm": "LlamaRMSNorm"}
    >>> [f.message.split(";")[0] for f in target_findings(["q_prj", "norm"], mods, "m")]
    ["'q_prj' matches no layer of m", "'norm' matches only m's LlamaRMSNorm layers, which LoRA cannot adapt"]
    >>> target_findings(["all-linear"], mods, "m"), target_findings(["q_proj"], mods, "m")
    ([], [])
    """
    import difflib

    if list(targets) == ["all-linear"]:
        return []
    linear = sorted({n.rsplit(".", 1)[-1] for n, kind in modules.items() if kind in LORA_LAYERS and n})
    found = []
    for t in targets:
        if t == "all-linear":
            msg = "'all-linear' adapts every linear layer on its own: give it alone, or list layer names without it"
            found.append(Finding("unknown-target-module", "error", TARGETS_WHERE, None, msg))
            continue
        kinds = {kind for n, kind in modules.items() if n == t or n.endswith("." + t)}
        if kinds & LORA_LAYERS:
            continue
        close = difflib.get_close_matches(t, linear, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        if kinds:
            what = f"{t!r} matches only {model}'s {', '.join(sorted(kinds))} layers, which LoRA cannot adapt"
        else:
            what = f"{t!r} matches no layer of {model}"
        found.append(
            Finding(
                "unknown-target-module",
                "error",
                TARGETS_WHERE,
                None,
                f"{what}; {hint}its layers LoRA can adapt are {', '.join(linear) or 'none'}, or use all-linear",
            )
        )
    return found


def model_targets(cfg, model_dir: Path) -> list[Finding]:
    """The run's target modules checked against the model in `model_dir` (or a .gguf file), built on the
    meta device (config.json only, no weights read); nothing to check for the default all-linear."""
    targets = list(cfg.training.target_modules)
    if targets == ["all-linear"]:
        return []
    from tunewiz.core.models.loading import module_kinds

    try:
        modules = module_kinds(model_dir, cfg.model.trust_remote_code)
    except Exception:  # noqa: BLE001 - an architecture transformers cannot build: loading it says why
        return []
    return target_findings(targets, modules, cfg.model.id)


def lint_run(cfg, tokenizer, model_dir: Path | None = None, loaded: LoadedData | None = None) -> Report:
    """Lint a run config's data exactly as its training will read it: its max_seq_len, held-out file
    or split (fraction and seed); given the model's directory (or GGUF file), its [training]
    target_modules too."""
    d = cfg.data
    report = lint(
        d.path, tokenizer, max_seq_len=d.max_seq_len, eval_path=d.eval_path or None, eval_fraction=d.eval_fraction,
        seed=d.split_seed, loaded=loaded, mapping=columns.Mapping.of(d), as_text=d.as_text,
    )  # fmt: skip
    if model_dir is not None:
        report.findings += model_targets(cfg, model_dir)
    return report


def tokenizer_for(model_id: str, home: Path, trust_remote_code: bool = False):
    """The tokenizer (with its chat template) of a model id, as training loads it (its pad token left
    as the model ships it: whether one is missing is itself a finding). ModelError when it cannot be
    loaded, saying why."""
    from tunewiz.core.models import resolve as models

    resolved = models.resolve(model_id, home, weights=False)
    return load_tokenizer_of(resolved.path, model_id, trust_remote_code)


def tokenizer_here(model_id: str, home: Path, trust_remote_code: bool = False):
    """(tokenizer, where the model is described) of a model already on this machine, without downloading
    or converting anything: its directory, or for the bundled model not yet converted its GGUF file (the
    converted copy saves this same tokenizer); (None, None) for a hub model not in the cache."""
    from tunewiz.core.models import resolve as models

    model_id = model_id.strip()
    if not models.on_this_machine(model_id):
        return None, None
    if model_id.startswith("bundled:"):
        converted = models.converted_bundled(model_id, home)
        if converted is None:
            gguf = models.resolve(model_id, home, prepare=False).path
            return load_tokenizer_of(gguf.parent, model_id, trust_remote_code, gguf_file=gguf.name), gguf
        return load_tokenizer_of(converted, model_id, trust_remote_code), converted
    resolved = models.resolve(model_id, home, weights=False)
    return load_tokenizer_of(resolved.path, model_id, trust_remote_code), resolved.path


def load_tokenizer_of(path: Path, model_id: str, trust_remote_code: bool = False, **kwargs):
    from transformers import AutoTokenizer
    from tunewiz.core.models.resolve import ModelError

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code, **kwargs)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, KeyError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"cannot load the tokenizer of {model_id} from {path} ({first}); the folder needs the model's "
            "tokenizer files (tokenizer.json or tokenizer.model, tokenizer_config.json): copy them in"
        ) from None


__all__ = ["RULES", "DataError", "Report", "TokenCounter", "lint", "lint_run", "target_findings", "tokenizer_for"]
