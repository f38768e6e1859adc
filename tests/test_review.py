"""The blind A/B review: core.review's state (the seeded order and A/B coin, the verdicts in
eval/review.jsonl, the summary in run.toml [results.human]) and the review screen at 80x24."""

from __future__ import annotations

import asyncio
import html
import json
import re
from pathlib import Path

import pytest
from tunewiz.core.bookkeeping import runs
from tunewiz.core.config import RunConfig
from tunewiz.core.judging import review
from tunewiz.core.judging.metrics import wilson
from tunewiz.core.toml import read_toml
from tunewiz.tui import cli
from tunewiz.tui.app import create_app
from tunewiz.tui.record_text import human_lines, review_progress

from tests.test_app import screen_name, wait_until

SIZE = (80, 24)


def predictions(n: int, identical: tuple[int, ...] = ()) -> list[dict]:
    """`n` held-out rows (lines 3, 6, 9, ...); those at the places in `identical` have two equal answers."""
    rows = []
    for i in range(n):
        base = f"I am sorry to hear about ticket {i}. Please contact the carrier about the parcel."
        rows.append(
            {
                "line": 3 * (i + 1),
                "prompt": f"Ticket {i}: my parcel never arrived and tracking says in transit",
                "expected": f'{{"category": "shipping", "ticket": {i}}}',
                "base": base,
                "finetuned": base if i in identical else f'{{"category": "shipping", "ticket": {i}}}',
                "base_score": {},
                "finetuned_score": {},
            }
        )
    return rows


def make_run(home: Path, rows: list[dict] | None, name: str = "tickets") -> Path:
    cfg = RunConfig(name=name)
    cfg.data.path = "/nowhere/tickets.jsonl"
    run_dir = runs.create_run(cfg, home)
    runs.update_record(run_dir, lambda rec: rec.results.update({"train_loss": 0.42}))
    runs.set_status(run_dir, "completed")
    (run_dir / runs.ADAPTER).mkdir()  # a completed run has its adapter (else `show` says it is missing)
    (run_dir / runs.ADAPTER / "adapter_config.json").write_text("{}")
    if rows is not None:
        (run_dir / "eval").mkdir(exist_ok=True)
        (run_dir / "eval" / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def verdict_for(item: review.Item, model: str) -> str:
    """The key that prefers `model` ("base", "finetuned", or "tie" / "skip") for this row's assignment."""
    if model in ("tie", "skip"):
        return model
    return "a" if item.a == model else "b"


KEYS = {"a": "a", "b": "b", "tie": "t", "skip": "s"}
"""The screen's key for each verdict."""


def review_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / review.REVIEW).read_text().splitlines()]


# -- core.review ------------------------------------------------------------------------------------


def test_the_blind_assignment_is_the_same_on_every_reopen_and_a_longer_review_keeps_it(home):
    run_dir = make_run(home, predictions(40))
    first = review.Review.open(run_dir, rows=10)
    again = review.Review.open(run_dir, rows=10)
    longer = review.Review.open(run_dir, rows=25)
    seen = [(it.key, it.a) for it in first.items]
    assert seen == [(it.key, it.a) for it in again.items] == [(it.key, it.a) for it in longer.items[:10]]
    assert [it.key for it in first.items] != sorted(it.key for it in first.items)  # shuffled, not file order
    assert {it.a for it in longer.items} == {"base", "finetuned"}  # a coin, not one side always
    for it in longer.items:  # A shows what the assignment says
        row = next(p for p in predictions(40) if p["line"] == it.key)
        assert (it.a_text, it.b_text) == (row[it.a], row[it.b])
    other = review.Review.open(make_run(home, predictions(40), name="other"), rows=10)
    assert [(it.key, it.a) for it in other.items] != seen  # seeded by the run, not one fixed order


def test_a_and_b_verdicts_are_recorded_as_the_models_they_stand_for(home):
    run_dir = make_run(home, predictions(8))
    rv = review.Review.open(run_dir)
    judged = [rv.judge(v) for v in ("a", "b", "tie", "skip")]
    lines = review_lines(run_dir)
    assert [ln["verdict"] for ln in lines] == ["a", "b", "tie", "skip"]
    for item, ln in zip(judged, lines, strict=True):
        assert ln["line"] == item.key and ln["a"] == item.a and ln["b"] == item.b and ln["rows"] == 30
    assert lines[0]["preferred"] == judged[0].a and lines[1]["preferred"] == judged[1].b
    assert [ln["preferred"] for ln in lines[2:]] == ["tie", "skip"]
    s = rv.summary()
    assert (s.finetuned + s.base, s.ties, s.skipped, s.reviewed, s.rows) == (2, 1, 1, 4, 8)
    assert s.finetuned == [judged[0].a, judged[1].b].count("finetuned")
    with pytest.raises(ValueError, match="unknown verdict"):
        rv.judge("c")


def test_reopening_continues_at_the_next_row_and_undo_takes_the_last_verdict_back(home):
    run_dir = make_run(home, predictions(6))
    rv = review.Review.open(run_dir)
    order = [it.key for it in rv.items]
    rv.judge("a")
    rv.judge("b")
    again = review.Review.open(run_dir)
    assert again.current.key == order[2] and set(again.verdicts) == set(order[:2])
    assert again.undo().key == order[1]
    assert again.current.key == order[1]
    assert review.Review.open(run_dir).current.key == order[1]  # the undo is in the file too
    assert review_lines(run_dir)[-1] == {**review_lines(run_dir)[-1], "line": order[1], "verdict": "undo"}


def test_a_torn_last_line_is_ignored_and_the_next_verdict_starts_a_fresh_line(home):
    run_dir = make_run(home, predictions(6))
    rv = review.Review.open(run_dir)
    rv.judge("a")
    rv.judge("tie")
    with open(run_dir / review.REVIEW, "a") as fh:
        fh.write('{"t": 1.0, "line": 3, "verdict": "a", "pre')  # a crash mid-write
    rv = review.Review.open(run_dir)
    assert len(rv.verdicts) == 2
    rv.judge("b")
    assert len(review.Review.open(run_dir).verdicts) == 3
    text = (run_dir / review.REVIEW).read_text()
    assert text.endswith("\n") and json.loads(text.splitlines()[-1])["verdict"] == "b"


def test_identical_answers_count_as_ties_and_are_not_shown(home):
    run_dir = make_run(home, predictions(6, identical=(1, 4)))
    rv = review.Review.open(run_dir)
    assert rv.rows == 4 and rv.identical == 2 and rv.held_out == 6
    assert all(it.a_text != it.b_text for it in rv.items)
    h = rv.summary().as_record()
    assert (h["identical"], h["ties"], h["rows"]) == (2, 0, 4)
    assert "2 held-out rows whose two answers were identical (ties, not shown)" in " ".join(human_lines(h))


def test_the_summary_and_its_interval_on_a_known_case(home):
    run_dir = make_run(home, predictions(14, identical=(13,)))
    rv = review.Review.open(run_dir, rows=13)
    for model in ["finetuned"] * 8 + ["base"] * 2 + ["tie"] * 2 + ["skip"]:
        rv.judge(verdict_for(rv.current, model))
    s = rv.summary()
    assert (s.finetuned, s.base, s.ties, s.skipped, s.judged, s.identical) == (8, 2, 2, 1, 10, 1)
    assert s.share == 0.8 and s.interval == wilson(0.8, 10) == (0.4902, 0.9433)
    assert s.complete and rv.current is None
    with pytest.raises(review.ReviewError):
        rv.judge("a")
    lines = human_lines(s.as_record())
    assert lines[0] == "Fine-tuned preferred in 8 of 10 judged: 80% (95% interval 49-94%)."
    assert "within what chance gives" in lines[-1].lower()  # 49% < 50%: not yet beyond chance
    assert review_progress(s.as_record()) == "13 of 13 reviewed; fine-tuned preferred 8, base 2, ties 2, skipped 1"


def test_the_summary_is_written_to_run_toml_results_human(home):
    run_dir = make_run(home, predictions(5))
    rv = review.Review.open(run_dir, rows=4)
    for model in ("finetuned", "finetuned", "base"):
        rv.judge(verdict_for(rv.current, model))
    review.save_summary(run_dir)  # the rows it was opened with come from review.jsonl
    doc = read_toml(run_dir / runs.RECORD)
    h = doc["results"]["human"]
    assert doc["results"]["train_loss"] == 0.42  # the rest of [results] is kept
    assert {k: h[k] for k in ("rows", "reviewed", "judged", "finetuned", "base", "ties", "skipped")} == {
        "rows": 4,
        "reviewed": 3,
        "judged": 3,
        "finetuned": 2,
        "base": 1,
        "ties": 0,
        "skipped": 0,
    }
    assert h["share"] == 0.6667 and h["interval"] == list(wilson(2 / 3, 3)) and h["complete"] is False
    assert h["identical"] == 0 and h["held_out"] == 5 and h["file"] == "eval/review.jsonl"


def test_a_verdict_on_answers_generated_again_since_is_set_aside(home):
    rows = predictions(4)
    run_dir = make_run(home, rows)
    rv = review.Review.open(run_dir)
    judged = rv.judge("a")
    for r in rows:
        if r["line"] == judged.key:
            r["finetuned"] = "a new answer from `tunewiz eval` again"
    (run_dir / "eval" / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rv = review.Review.open(run_dir)
    assert not rv.verdicts and rv.set_aside == 1 and rv.current.key == judged.key


def test_nothing_to_review_is_one_clear_error(home, capsys):
    bare = make_run(home, None, name="no-eval")
    with pytest.raises(review.ReviewError, match="tunewiz eval"):
        review.Review.open(bare)
    assert cli.main(["review", bare.name]) == 2
    assert "has no held-out answers to review" in capsys.readouterr().err
    assert cli.main(["review", make_run(home, predictions(3)).name, "--rows", "0"]) == 2
    assert "--rows 0" in capsys.readouterr().err


def test_show_prints_the_human_review(home, capsys):
    run_dir = make_run(home, predictions(6))
    rv = review.Review.open(run_dir)
    for model in ("finetuned", "finetuned", "tie"):
        rv.judge(verdict_for(rv.current, model))
    review.save_summary(run_dir)
    assert cli.main(["show", run_dir.name]) == 0
    out = capsys.readouterr().out
    assert "human   blind A/B review: fine-tuned preferred in 2 of 2 judged" in out
    assert all(len(line) <= 78 for line in out.splitlines())


# -- the screen at 80x24 ---------------------------------------------------------------------------


def screen_lines(app) -> list[str]:
    """The terminal's lines, read back from the SVG screenshot (each text run placed at its column)."""
    svg = app.export_screenshot()
    cells: dict[int, dict[int, str]] = {}
    pattern = r'<text[^>]* x="([\d.]+)"[^>]*clip-path="url\(#terminal-(?:\d+-)?line-(\d+)\)">([^<]*)</text>'
    for x, line, text in re.findall(pattern, svg):
        cells.setdefault(int(line), {})[round(float(x) / 12.2)] = html.unescape(text).replace("\xa0", " ").rstrip("\n")
    out = []
    for n in range(SIZE[1]):
        row = ""
        for col, text in sorted(cells.get(n, {}).items()):
            row = row.ljust(col) + text
        out.append(row)
    return out


def words_whole(sentence: str, lines: list[str]) -> list[str]:
    """The words of `sentence` that do not appear whole on the screen (a line cut one in two)."""
    on_screen = {w.strip("│ ") for line in lines for w in line.split()}
    return [w for w in sentence.split() if w not in on_screen]


def test_the_review_screen_at_80x24_continues_where_it_stopped(home):
    run_dir = make_run(home, predictions(6, identical=(2,)))
    plan = review.Review.open(run_dir).items  # what the screen will show, in order
    wanted = ["finetuned", "base", "tie", "skip", "finetuned"]

    def human() -> dict:
        return read_toml(run_dir / runs.RECORD).get("results", {}).get("human", {})

    async def first_visit() -> str:
        app = create_app(home, start="review", run=run_dir)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: screen_name(app) == "ReviewScreen" and app.screen.review is not None)
            for item, model in zip(plan[:3], wanted[:3], strict=True):
                lines = screen_lines(app)
                assert f"row {plan.index(item) + 1} of 5, line {item.key}" in "\n".join(lines)
                assert not words_whole(item.prompt, lines)
                await pilot.press(KEYS[verdict_for(item, model)])
            await wait_until(pilot, lambda: human().get("reviewed") == 3)
            lines = screen_lines(app)
            assert lines[1].strip() == review_progress(human())
            await pilot.press("q")
        return app.return_value

    said = asyncio.run(first_visit())
    assert said.startswith("3 of 5 reviewed;") and f"tunewiz review {run_dir.name}" in said

    async def second_visit() -> list[str]:
        app = create_app(home, start="review", run=run_dir)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: screen_name(app) == "ReviewScreen" and app.screen.review is not None)
            rv = app.screen.review
            assert rv.current == plan[3] and [rv.verdicts[it.key]["preferred"] for it in plan[:3]] == wanted[:3]
            assert "3 of 5 reviewed" in screen_lines(app)[1]
            assert "Expected (e hides it)" not in "\n".join(screen_lines(app))
            await pilot.press("e")
            await pilot.pause()
            assert not words_whole(plan[3].expected, screen_lines(app))
            for item, model in zip(plan[3:], wanted[3:], strict=True):
                await pilot.press(KEYS[verdict_for(item, model)])
            await wait_until(pilot, lambda: human().get("complete") is True)
            await pilot.pause()
            return screen_lines(app)

    lines = asyncio.run(second_visit())
    h = human()
    assert (h["reviewed"], h["finetuned"], h["base"], h["ties"], h["skipped"], h["identical"]) == (5, 2, 1, 1, 1, 1)
    assert h["interval"] == list(wilson(2 / 3, 3))
    text = "\n".join(lines)
    assert "Fine-tuned preferred in 2 of 3 judged: 67% (95% interval 21-94%)." in text
    for sentence in [review_progress(h), *human_lines(h)]:  # wrapped between words, never inside one
        assert not words_whole(sentence, lines), (sentence, text)
    assert all(len(line) <= SIZE[0] for line in lines)


def test_the_review_opens_from_the_evaluation_and_history_screens(home):
    from tunewiz.tui.eval_screen import EvalScreen

    run_dir = make_run(home, predictions(4))
    make_run(home, None, name="no-eval")  # listed first? either way: v is offered only on a run with answers

    async def run() -> None:
        app = create_app(home, start="history")
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one("#runs")
            await wait_until(pilot, lambda: table.row_count == 2)
            row = next(i for i in range(2) if table.get_row_at(i)[2] == "tickets")
            table.move_cursor(row=row)
            # the row's hint and footer follow the cursor a moment later (on a loaded machine, a while)
            await wait_until(pilot, lambda: "v: read its held-out answers blind" in "\n".join(screen_lines(app)))
            await wait_until(pilot, lambda: " v Review " in screen_lines(app)[-1])
            await pilot.press("v")
            await wait_until(pilot, lambda: screen_name(app) == "ReviewScreen")
            await pilot.press("a")
            await wait_until(pilot, lambda: review.Review.open(run_dir).summary().reviewed == 1)
            await pilot.press("escape")  # back where it came from, the review saved
            await wait_until(pilot, lambda: screen_name(app) == "HistoryScreen")
            await wait_until(pilot, lambda: "A/B review: fine-tuned preferred in" in "\n".join(screen_lines(app)))
            app.push_screen(EvalScreen(run_dir))
            await wait_until(pilot, lambda: screen_name(app) == "EvalScreen" and "Back" in screen_lines(app)[-1])
            footer = screen_lines(app)[-1]
            assert " v Review A/B " in footer and "^q Quit" in footer  # the footer fits 80 columns
            await pilot.press("v")
            await wait_until(pilot, lambda: screen_name(app) == "ReviewScreen")
            assert "1 of 4 reviewed" in screen_lines(app)[1]

    asyncio.run(run())
