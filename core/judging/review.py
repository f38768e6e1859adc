"""The blind A/B review of a finished run: a person reads the base and the fine-tuned answers to held-out
prompts, not told which is which, and says which is better (the guides: "for generation, read twenty to
fifty outputs yourself"; automated scores miss nuance).

What is reviewed: the rows of ``eval/predictions.jsonl`` (core.evaluate) whose two answers differ, in a
seeded random order, the first ``rows`` of them (DEFAULT_ROWS, or ``tunewiz review RUN --rows N``). The
seed is the run's id and each row's place comes from its own hash, so reopening shows the same rows in
the same order, and a longer review (``--rows 50`` after 30) keeps the rows already read. Per row, another
hash of the run id and the row is the coin that decides whether answer A is the base or the fine-tuned
model's: the reviewer is blind, and the assignment is the same every time the review opens.

Rows whose two answers are the same (after stripping whitespace) are not shown: there is nothing to
choose. They count as ties, apart from the reviewer's ties, as ``identical`` in the summary.

Verdicts (``a``: A better, ``b``: B better, ``tie``, ``skip``) are appended to ``eval/review.jsonl`` as
they are given, one JSON line each, with the row's line and the A/B assignment, so quitting and coming
back continues at the next row. An ``undo`` line takes back that row's verdict. A torn last line (a crash
mid-write) is ignored; the next verdict starts on a fresh line. A verdict whose row's answers have changed
since (``tunewiz eval RUN`` again) is set aside: its digest no longer matches.

The summary (fine-tuned preferred in X of the N rows with a preference, ties and skips apart, with a 95%
Wilson interval of the preference share) goes to run.toml ``[results.human]`` after each verdict.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewiz.core.bookkeeping import runs
from tunewiz.core.bookkeeping.events import end_torn_line, read_jsonl
from tunewiz.core.errors import TunewizError
from tunewiz.core.judging.evaluate import PREDICTIONS, load_predictions
from tunewiz.core.judging.metrics import wilson

REVIEW = "eval/review.jsonl"
DEFAULT_ROWS = 30
"""Rows reviewed unless told: the middle of the guides' twenty to fifty."""
GUIDE_ROWS = (20, 50)
VERDICTS = {"a": "A better", "b": "B better", "tie": "tie", "skip": "skip"}
"""The verdict codes written to review.jsonl, and their words."""
MODELS = ("base", "finetuned")


class ReviewError(TunewizError):
    """The run has nothing to review (no held-out predictions), or a review option is wrong."""


@dataclass(frozen=True)
class Item:
    """One held-out row as the reviewer sees it: answer A and answer B, and (hidden) whose each is."""

    key: int
    """The row's line in the data file (its 1-based place in predictions.jsonl where lines are not known)."""
    prompt: str
    expected: str
    a: str
    """Which model answered A: "base" or "finetuned"; B is the other."""
    a_text: str
    b_text: str
    digest: str
    """A hash of the prompt and both answers: a verdict recorded for other answers is set aside."""

    @property
    def b(self) -> str:
        return MODELS[1] if self.a == MODELS[0] else MODELS[0]

    def preferred(self, verdict: str) -> str:
        """The verdict about A and B as one about the models: "base", "finetuned", "tie" or "skip".

        >>> item = Item(3, "p", "e", "finetuned", "x", "y", "d")
        >>> item.preferred("a"), item.preferred("b"), item.preferred("tie")
        ('finetuned', 'base', 'tie')
        """
        if verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {verdict!r}: one of {', '.join(VERDICTS)}")
        return {"a": self.a, "b": self.b}.get(verdict, verdict)


@dataclass(frozen=True)
class Summary:
    """Where the review stands; `as_record()` is what run.toml's [results.human] holds."""

    rows: int
    finetuned: int = 0
    base: int = 0
    ties: int = 0
    skipped: int = 0
    identical: int = 0
    held_out: int = 0
    set_aside: int = 0

    @property
    def judged(self) -> int:
        """Rows where the reviewer preferred one answer: what the preference share is out of."""
        return self.finetuned + self.base

    @property
    def reviewed(self) -> int:
        return self.judged + self.ties + self.skipped

    @property
    def share(self) -> float | None:
        return round(self.finetuned / self.judged, 4) if self.judged else None

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% Wilson interval of the fine-tuned model's preference share."""
        return wilson(self.finetuned / self.judged if self.judged else 0.0, self.judged)

    @property
    def complete(self) -> bool:
        return self.reviewed >= self.rows

    def as_record(self) -> dict[str, Any]:
        """[results.human] in run.toml.

        >>> Summary(rows=30, finetuned=8, base=2, ties=2, identical=1, held_out=36).as_record()["interval"]
        [0.4902, 0.9433]
        """
        out: dict[str, Any] = {
            "rows": self.rows,
            "reviewed": self.reviewed,
            "judged": self.judged,
            "finetuned": self.finetuned,
            "base": self.base,
            "ties": self.ties,
            "skipped": self.skipped,
            "identical": self.identical,
            "held_out": self.held_out,
            "share": self.share,
            "interval": list(self.interval),
            "complete": self.complete,
            "file": REVIEW,
            "updated": runs.now_iso(),
        }
        if self.set_aside:
            out["set_aside"] = self.set_aside
        return out


def digest(row: dict[str, Any]) -> str:
    text = json.dumps([row.get("prompt", ""), row.get("base", ""), row.get("finetuned", "")], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _draw(seed: str, key: int, what: str) -> int:
    """A number fixed by the run, the row and what it is for: the same on every machine and every run of
    Python (unlike hash())."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}:{what}".encode()).digest()[:8], "big")


def row_keys(preds: list[dict[str, Any]]) -> list[int]:
    """Each row's key: its line in the data file, or its place in predictions.jsonl where the lines are
    missing or not unique.

    >>> row_keys([{"line": 7}, {"line": 3}]), row_keys([{"line": 7}, {"line": 7}])
    ([7, 3], [1, 2])
    """
    lines = [p.get("line") for p in preds]
    if all(isinstance(n, int) for n in lines) and len(set(lines)) == len(lines):
        return lines  # type: ignore[return-value]
    return list(range(1, len(preds) + 1))


def identical(row: dict[str, Any]) -> bool:
    return str(row.get("base", "")).strip() == str(row.get("finetuned", "")).strip()


def plan_items(seed: str, preds: list[dict[str, Any]], rows: int) -> tuple[list[Item], int]:
    """The rows to review, in their seeded order, each with its seeded A/B assignment, and how many rows
    were left out because their two answers are identical."""
    keyed = list(zip(row_keys(preds), preds, strict=True))
    differ = [(k, p) for k, p in keyed if not identical(p)]
    differ.sort(key=lambda kp: _draw(seed, kp[0], "order"))
    items = []
    for key, p in differ[:rows]:
        a = MODELS[1] if _draw(seed, key, "side") % 2 else MODELS[0]
        b = MODELS[0] if a == MODELS[1] else MODELS[1]
        items.append(Item(key, p.get("prompt", ""), p.get("expected", ""), a, p.get(a, ""), p.get(b, ""), digest(p)))
    return items, len(keyed) - len(differ)


def reviewable(run_dir: str | Path) -> bool:
    """The run has held-out answers to review (its predictions file)."""
    return (Path(run_dir) / PREDICTIONS).is_file()


def read_lines(run_dir: Path) -> list[dict[str, Any]]:
    """The review's complete lines; a torn last line (a crash mid-write) is not one."""
    return read_jsonl(Path(run_dir) / REVIEW)[0]


def check_rows(rows: int | None) -> None:
    if rows is not None and rows < 1:
        raise ReviewError(f"--rows {rows}: review at least one row (the guides ask {GUIDE_ROWS[0]}-{GUIDE_ROWS[1]})")


@dataclass
class Review:
    """One run's review: the items, the verdicts given so far (from review.jsonl) and the next row."""

    run_dir: Path
    items: list[Item]
    """The rows to review, in order: `asked` of them, fewer where fewer rows have answers that differ."""
    asked: int
    identical: int
    held_out: int
    verdicts: dict[int, dict[str, Any]] = field(default_factory=dict)
    """key -> the line that gave the row its verdict."""
    order: list[int] = field(default_factory=list)
    """Keys in the order their verdicts were given: what undo takes back."""
    set_aside: int = 0

    @classmethod
    def open(cls, run_dir: str | Path, rows: int | None = None) -> Review:
        """The review of `run_dir`, continued from review.jsonl. `rows`: how many rows to review; without
        it, what the review was last opened with, else DEFAULT_ROWS. Raises ReviewError when the run has
        no predictions."""
        run_dir = Path(run_dir)
        check_rows(rows)
        preds = load_predictions(run_dir)
        if not preds:
            raise ReviewError(
                f"{run_dir.name} has no held-out answers to review ({PREDICTIONS} is missing or empty): the "
                f"comparison runs after training unless --no-eval was given; `tunewiz eval {run_dir.name}` runs it"
            )
        lines = read_lines(run_dir)
        if rows is None:
            rows = next((ln["rows"] for ln in reversed(lines) if isinstance(ln.get("rows"), int)), DEFAULT_ROWS)
        items, same = plan_items(run_dir.name, preds, rows)
        review = cls(run_dir, items, rows, same, len(preds))
        for ln in lines:
            review._replay(ln)
        return review

    def _replay(self, line: dict[str, Any]) -> None:
        key, verdict = line.get("line"), line.get("verdict")
        if verdict == "undo":
            if key in self.verdicts:
                del self.verdicts[key]
                self.order.remove(key)
            return
        item = self.item(key)
        if item is None or verdict not in VERDICTS:
            return  # a row outside this review (fewer --rows), or a line this version does not know
        if line.get("digest") != item.digest or line.get("a") != item.a:
            self.set_aside += 1  # the answers were generated again since
            return
        if key in self.verdicts:
            self.order.remove(key)
        self.verdicts[key] = line
        self.order.append(key)

    @property
    def rows(self) -> int:
        return len(self.items)

    def item(self, key: Any) -> Item | None:
        return next((it for it in self.items if it.key == key), None)

    @property
    def current(self) -> Item | None:
        """The next row without a verdict, in the review's order; None when every row has one."""
        return next((it for it in self.items if it.key not in self.verdicts), None)

    def position(self, item: Item) -> int:
        """1-based place of `item` in the review."""
        return self.items.index(item) + 1

    def _append(self, line: dict[str, Any]) -> None:
        path = self.run_dir / REVIEW
        path.parent.mkdir(exist_ok=True)
        end_torn_line(path)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            fh.flush()

    def judge(self, verdict: str) -> Item:
        """Give the current row `verdict` ("a", "b", "tie" or "skip"), append it to review.jsonl; returns
        the row judged. Raises ReviewError when every row already has a verdict."""
        item = self.current
        if item is None:
            raise ReviewError("every row of this review has a verdict: u takes the last one back")
        line = {
            "t": round(time.time(), 3),
            "line": item.key,
            "rows": self.asked,
            "a": item.a,
            "b": item.b,
            "verdict": verdict,
            "preferred": item.preferred(verdict),
            "digest": item.digest,
        }
        self._append(line)
        self._replay(line)
        return item

    def undo(self) -> Item | None:
        """Take back the last verdict (an `undo` line); returns its row, which is the current one again."""
        if not self.order:
            return None
        key = self.order[-1]
        line = {"t": round(time.time(), 3), "line": key, "verdict": "undo"}
        self._append(line)
        self._replay(line)
        return self.item(key)

    def summary(self) -> Summary:
        counts = {"finetuned": 0, "base": 0, "tie": 0, "skip": 0}
        for line in self.verdicts.values():
            counts[line["preferred"]] += 1
        return Summary(
            rows=self.rows,
            finetuned=counts["finetuned"],
            base=counts["base"],
            ties=counts["tie"],
            skipped=counts["skip"],
            identical=self.identical,
            held_out=self.held_out,
            set_aside=self.set_aside,
        )


def save_summary(run_dir: str | Path, rows: int | None = None) -> dict[str, Any]:
    """Write the review's summary to run.toml [results.human], read from review.jsonl under the record's
    lock: of two saves racing, the one that writes last writes the newest verdicts. Returns the summary."""
    out: dict[str, Any] = {}

    def change(rec: runs.Record) -> None:
        out.update(Review.open(run_dir, rows).summary().as_record())
        rec.results.human = out

    runs.update_record(run_dir, change)
    return out
