"""Held-out metrics by kind of answer (core.metrics): what the evaluation screen, `tunewiz show`, the
history and the compare screen show, and what run.toml keeps under [results]."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tunewiz.core.bookkeeping import runs
from tunewiz.core.bookkeeping.record import Record
from tunewiz.core.config import RunConfig
from tunewiz.core.data.dataset import Example
from tunewiz.core.judging import evaluate, metrics
from tunewiz.core.toml import read_toml, write_toml_atomic
from tunewiz.tui import cli
from tunewiz.tui.record_text import comparison_table, figures

from tests.conftest import SAMPLE

# --- labels ---------------------------------------------------------------------------------------

TRUTH = ["neg", "neg", "neg", "neu", "neu", "pos", "pos", "pos"]
ANSWERS = ["neg", "neg", "neu", "neu", "I think neutral", "pos", "neg", "pos"]


def test_three_labels_with_an_answer_that_is_no_label():
    m = metrics.label_metrics(TRUTH, ANSWERS, ["neg", "neu", "pos"])
    # rows expected (neg, neu, pos), columns answered (neg, neu, pos, other)
    assert m["confusion"] == [[2, 1, 0, 0], [0, 1, 0, 1], [1, 0, 2, 0]]
    by_hand = {
        "neg": (2 / 3, 2 / 3, 2 / 3, 3),  # 2 right of 3 answered neg (one pos answered neg), 2 of 3 found
        "neu": (1 / 2, 1 / 2, 1 / 2, 2),  # the answer that is no label is a miss of neu, no label's false alarm
        "pos": (1.0, 2 / 3, 0.8, 3),
    }
    for name, (p, r, f1, n) in by_hand.items():
        got = m["labels"][name]
        assert (got["precision"], got["recall"], got["f1"], got["support"]) == (
            pytest.approx(p, abs=1e-4),
            pytest.approx(r, abs=1e-4),
            pytest.approx(f1, abs=1e-4),
            n,
        )
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0.8) / 3, abs=1e-4)
    assert m["label_order"] == ["neg", "neu", "pos"]


def test_measure_of_a_label_task():
    m = metrics.measure(TRUTH, ANSWERS, [True] * 7 + [False])
    assert m["kind"] == "labels" and m["headline"] == "exact_match"
    assert m["interval"] == list(metrics.wilson(5 / 8, 8))
    assert m["stop_rate"] == 0.875
    assert m["confusion"][1] == [0, 1, 0, 1]


def test_a_label_never_answered_has_zero_precision_not_an_error():
    m = metrics.label_metrics(["a", "a", "b", "b"], ["a", "a", "a", "a"], ["a", "b"])
    assert m["labels"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert m["labels"]["a"]["precision"] == 0.5 and m["macro_f1"] == pytest.approx(0.3333, abs=1e-4)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(["a", "b", "c", "d", "junk", ""])),
        min_size=1,
        max_size=40,
    )
)
def test_label_arithmetic_agrees_with_scikit_learn(pairs):
    """scikit-learn (a dev dependency) checks the counting: written by other hands than core.metrics."""
    from sklearn import metrics as sk  # a dev dependency (pyproject.toml): no skip, the check must run

    truth, answers = [t for t, _ in pairs], [a for _, a in pairs]
    labels = sorted(set(truth))
    m = metrics.label_metrics(truth, answers, labels)
    p, r, f1, support = sk.precision_recall_fscore_support(truth, answers, labels=labels, zero_division=0)
    for i, name in enumerate(labels):
        got = m["labels"][name]
        assert got["precision"] == pytest.approx(p[i], abs=1e-4)
        assert got["recall"] == pytest.approx(r[i], abs=1e-4)
        assert got["f1"] == pytest.approx(f1[i], abs=1e-4)
        assert got["support"] == support[i]
    macro = sk.f1_score(truth, answers, labels=labels, average="macro", zero_division=0)
    assert m["macro_f1"] == pytest.approx(macro, abs=1e-4)
    # scikit-learn's matrix over the labels and one more column that gathers every other answer
    other = "\0other"
    cm = sk.confusion_matrix(truth, [a if a in labels else other for a in answers], labels=[*labels, other])
    assert m["confusion"] == cm[: len(labels)].tolist()


# --- JSON objects ---------------------------------------------------------------------------------

EXPECTED_JSON = [
    '{"category": "billing", "priority": "high", "product": "Pro plan"}',
    '{"category": "billing", "priority": "low", "product": "Team plan"}',
    '{"category": "shipping", "priority": "low", "product": "Cable"}',
    '{"category": "shipping", "priority": "high", "product": "Dock"}',
]
OUTPUTS_JSON = [
    '{"category": "billing", "priority": "high", "product": "Pro plan"}',  # all right
    '{"category": "billing", "product": "Team plan"}',  # priority missing
    '{"category": "billing", "priority": "low", "product": "cable"}',  # wrong category, wrong product
    "Sorry, I cannot help with that.",  # no JSON: every field wrong
]


def test_json_fields_a_missing_field_and_a_wrong_value():
    m = metrics.measure(EXPECTED_JSON, OUTPUTS_JSON)
    assert m["kind"] == "json" and m["headline"] == "field_match"
    f = m["fields"]
    assert list(f) == ["category", "priority", "product"]
    assert (f["category"]["accuracy"], f["priority"]["accuracy"], f["product"]["accuracy"]) == (0.5, 0.5, 0.5)
    assert all(f[k]["support"] == 4 for k in f)
    # category: billing answered 3 times, right twice; shipping never answered
    assert f["category"]["confusion"] == [[2, 0, 0], [1, 0, 1]]
    assert f["category"]["labels"]["billing"] == {"precision": 0.6667, "recall": 1.0, "f1": 0.8, "support": 2}
    assert f["category"]["labels"]["shipping"]["f1"] == 0.0
    assert f["category"]["macro_f1"] == 0.4
    # priority: the missing field and the answer that is no JSON count in the other column
    assert f["priority"]["confusion"] == [[1, 0, 1], [0, 1, 1]]
    assert f["priority"]["macro_f1"] == pytest.approx(0.6667, abs=1e-4)
    # product names are not labels: accuracy only
    assert "labels" not in f["product"] and "confusion" not in f["product"]


def test_field_accuracy_agrees_with_field_match():
    """The per-field counts and summarize's field_match are one definition, counted in two places."""
    fields = metrics.measure(EXPECTED_JSON, OUTPUTS_JSON)["fields"].values()
    right = sum(f["accuracy"] * f["support"] for f in fields)
    total = sum(f["support"] for f in fields)
    summary = metrics.summarize([metrics.score(e, o) for e, o in zip(EXPECTED_JSON, OUTPUTS_JSON, strict=True)])
    assert summary["field_match"] == pytest.approx(right / total, abs=1e-4)


def test_json_label_values_compare_as_json():
    expected = ['{"urgent": true, "level": 1}', '{"urgent": false, "level": 2}'] * 2
    outputs = ['{"urgent": 1, "level": 1.0}', '{"urgent": false, "level": 2}'] * 2
    f = metrics.measure(expected, outputs)["fields"]
    assert f["urgent"]["label_order"] == ["false", "true"]
    assert f["urgent"]["confusion"] == [[2, 0, 0], [0, 0, 2]]  # 1 is not true
    assert f["level"]["confusion"] == [[2, 0, 0], [0, 2, 0]]  # 1.0 is 1


# --- free text ------------------------------------------------------------------------------------


def test_free_text_exact_stop_rate_length_and_overlap():
    expected = ["The cat sat on the mat.", "Hello world", "abc"]
    outputs = ["The cat sat on the mat.", "hello", "abc abc abc"]
    m = metrics.measure(expected, outputs, [True, True, False])
    assert m["kind"] == "text" and m["headline"] == "exact_match"
    assert m["interval"] == list(metrics.wilson(1 / 3, 3))
    assert m["stop_rate"] == pytest.approx(0.6667, abs=1e-4)
    assert m["length_ratio"] == pytest.approx((1 + 5 / 11 + 11 / 3) / 3, abs=1e-4)
    # word F1: 1; "hello" of "hello world": P 1, R 1/2; "abc abc abc" for "abc": P 1/3, R 1
    assert m["word_f1"] == pytest.approx((1 + 2 / 3 + 0.5) / 3, abs=1e-4)


def test_no_stop_information_no_stop_rate():
    assert "stop_rate" not in metrics.measure(["a b c"], ["a b"])
    assert metrics.measure([], []) == {}


# --- the interval ---------------------------------------------------------------------------------


def test_wilson_interval_known_cases():
    assert metrics.wilson(0.5, 100) == (0.4038, 0.5962)
    assert metrics.wilson(0.0, 10) == (0.0, 0.2775)  # not empty at 0%
    assert metrics.wilson(1.0, 10) == (0.7225, 1.0)
    low, high = metrics.wilson(0.81, 36)
    assert low < 0.81 < high and high <= 1.0


@pytest.mark.parametrize(("k", "n"), [(0, 5), (3, 7), (29, 36), (81, 100), (200, 200)])
def test_wilson_interval_agrees_with_scipy(k, n):
    from scipy import stats  # comes with scikit-learn, a dev dependency

    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = metrics.wilson(k / n, n)
    assert (low, high) == (pytest.approx(ci.low, abs=1e-3), pytest.approx(ci.high, abs=1e-3))


# --- the kind of answer ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "kind"),
    [
        (['{"a": 1}', '```json\n{"a": 2}\n```'], "json"),
        (["positive", "negative", "positive", "negative"], "labels"),
        ([" yes", "no\n", "no", "yes"], "labels"),  # compared stripped, like the exact match
        (["a", "b", "a", "b", "a", "c"], "labels"),  # c once: two answers per label on average is enough
        (["Paris", "Rome", "Oslo", "Paris"], "text"),  # mostly unique: names, not labels
        (["positive"] * 4, "text"),  # one value is no classification
        (['{"a": 1}', "not json", "not json", '{"a": 1}'], "labels"),  # mixed: the repeats decide
        (['{"a": 1}', "free text here"], "text"),
        ([f"label{i % 21}" for i in range(84)], "text"),  # 21 distinct values: more than MAX_LABELS
        (["a long answer that repeats itself and goes on past forty characters"] * 2 + ["b", "b"], "text"),
        ([], "text"),
    ],
)
def test_kind_of_answers(expected, kind):
    assert metrics.kind_of(expected) == kind


# --- the record -----------------------------------------------------------------------------------


class FakeModel:
    """What compare() asks of a PEFT model; the answers come from the patched generate()."""

    def __init__(self):
        self.adapter = True

    def eval(self):
        return self

    @contextlib.contextmanager
    def disable_adapter(self):
        self.adapter = False
        try:
            yield
        finally:
            self.adapter = True


def chat(line: int, answer: str) -> Example:
    msgs = [{"role": "user", "content": f"review {line}"}, {"role": "assistant", "content": answer}]
    return Example(line=line, format="messages", messages=msgs)


def fake_compare(tmp_path, monkeypatch, expected, base, tuned, stopped=None):
    model = FakeModel()

    def generate(m, tok, prompts, max_new_tokens, should_stop=None):
        out = tuned if m.adapter else base
        return list(out), list(stopped or [True] * len(out))

    monkeypatch.setattr(evaluate, "generate", generate)
    monkeypatch.setattr(evaluate, "mean_loss", lambda m, *a, **k: 0.25 if m.adapter else 1.5)
    cfg = RunConfig()
    cfg.evaluation.max_new_tokens = 16
    examples = [chat(i + 1, e) for i, e in enumerate(expected)]
    return evaluate.compare(model, None, examples, cfg, tmp_path)


SENTIMENT = ["positive", "negative", "not sure"] * 8  # "not sure": a label whose TOML key needs quotes
SENT_BASE = ["I think it is positive."] * 12 + ["negative"] * 12
SENT_TUNED = SENTIMENT[:20] + ["negative", "positive", "Positive", "not sure"]  # 2 wrong: 22 of 24 right


def test_compare_summary_round_trips_through_run_toml(tmp_path, monkeypatch):
    summary = fake_compare(tmp_path, monkeypatch, SENTIMENT, SENT_BASE, SENT_TUNED, [True] * 23 + [False])
    ft = summary["finetuned"]
    for key in ("exact_match", "eval_loss", "examples", "seconds"):  # the keys other code reads stay
        assert key in ft and key in summary["base"]
    assert ft["kind"] == "labels" and ft["label_order"] == ["negative", "not sure", "positive"]
    assert ft["exact_match"] == round(22 / 24, 4) and ft["stop_rate"] == round(23 / 24, 4)
    write_toml_atomic(tmp_path / "run.toml", {"results": summary})
    text = (tmp_path / "run.toml").read_text()
    assert '[results.finetuned.labels."not sure"]' in text
    assert read_toml(tmp_path / "run.toml")["results"] == summary
    rows = evaluate.load_predictions(tmp_path)
    assert len(rows) == 24 and rows[-1]["finetuned_stopped"] is False and rows[0]["base_stopped"] is True


def test_json_summary_round_trips_through_run_toml(tmp_path, monkeypatch):
    summary = fake_compare(tmp_path, monkeypatch, EXPECTED_JSON, ["no idea"] * 4, OUTPUTS_JSON)
    write_toml_atomic(tmp_path / "run.toml", {"results": summary})
    back = read_toml(tmp_path / "run.toml")["results"]
    assert back == summary
    assert back["finetuned"]["fields"]["category"]["labels"]["billing"]["f1"] == 0.8
    assert back["base"]["fields"]["category"]["accuracy"] == 0.0


# --- what the user reads --------------------------------------------------------------------------


def record_run(home, tmp_path, monkeypatch, expected, base, tuned, name) -> str:
    cfg = RunConfig(name=name)
    cfg.data.path = f"/srv/data/{name}.jsonl"  # a path of ordinary length: the summary's lines fit with it
    run_dir = runs.create_run(cfg, home)
    summary = fake_compare(run_dir, monkeypatch, expected, base, tuned)
    runs.update_record(
        run_dir, lambda rec: rec.results.update({"train_loss": 0.3, "eval_loss": 0.25, "wall_time_s": 60.0, **summary})
    )
    runs.set_status(run_dir, "completed")
    assert (run_dir / evaluate.PREDICTIONS).is_file()
    return run_dir.name


def show(home, run_id, capsys) -> list[str]:
    assert cli.main(["--home", str(home), "show", run_id]) == 0
    return capsys.readouterr().out.splitlines()


def test_show_prints_label_metrics_within_80_columns(home, tmp_path, monkeypatch, capsys):
    run_id = record_run(home, tmp_path, monkeypatch, SENTIMENT, SENT_BASE, SENT_TUNED, "sentiment")
    out = show(home, run_id, capsys)
    assert max(len(line) for line in out) <= 80, "\n".join(line for line in out if len(line) > 80)
    text = "\n".join(out)
    assert "held-out answers: 24, 3 labels" in text
    acc = next(line for line in out if line.startswith("accuracy (95% interval)"))
    assert "92% (" in acc and acc.split()[-1] == "24"
    assert any(line.startswith("macro-F1") for line in out)
    assert any(line.startswith("not sure") and line.split()[-1] == "8" for line in out)
    assert "fine-tuned answers: rows expected, columns answered" in text
    head = out.index("fine-tuned answers: rows expected, columns answered")
    assert out[head + 1].split() == ["negative", "not", "sure", "positive", "other"]
    assert out[head + 2].split() == ["negative", "7", "0", "0", "1"]  # "Positive" is no label: other
    assert out[head + 3].split() == ["not", "sure", "1", "7", "0", "0"]


def test_show_prints_per_field_metrics_of_the_tickets_within_80_columns(home, tmp_path, monkeypatch, capsys):
    rows = [json.loads(line) for line in (SAMPLE / "support_tickets.jsonl").read_text().splitlines()]
    expected = [r["messages"][-1]["content"] for r in rows[:30]]
    tuned = [e.replace('"high"', '"low"') for e in expected]
    run_id = record_run(home, tmp_path, monkeypatch, expected, ["I'm sorry."] * 30, tuned, "tickets")
    out = show(home, run_id, capsys)
    assert max(len(line) for line in out) <= 80
    text = "\n".join(out)
    assert "held-out answers: 30, JSON objects" in text
    headline = next(line for line in out if line.startswith("fields correct (95% interval)"))
    share = 1 - sum('"high"' in e for e in expected) / 90  # 30 answers of 3 fields; every high became low
    low, high = metrics.wilson(share, 30)  # the interval counts answers, not fields
    assert headline.split()[4:] == ["0%", "(0-11%)", f"{share:.0%}", f"({low:.0%}-{high:.0%})".replace("%-", "-"), "30"]
    for field in ("category", "priority", "sentiment"):
        assert any(line.split()[:1] == [field] for line in out), field
        assert f"fine-tuned {field}: rows expected, columns answered" in text
    assert next(line for line in out if line.startswith("category")).split()[-2:] == ["100%", "30"]


def test_the_table_of_a_record_from_before_the_metrics_by_kind():
    old = {"base": {"eval_loss": 1.4, "exact_match": 0.0, "json_valid": 0.0, "field_match": 0.0, "examples": 3}}
    old["finetuned"] = {"eval_loss": 0.15, "exact_match": 0.14, "json_valid": 1.0, "field_match": 0.58, "examples": 3}
    text = comparison_table(old)
    assert "fields correct" in text and "58%" in text and "interval" not in text
    assert figures(old["finetuned"]) == {}


def test_history_metric_is_macro_f1_for_labels_and_field_accuracy_for_json(tmp_path):
    labels = Record.from_dict({"results": {"finetuned": {"kind": "labels", "macro_f1": 0.7912, "exact_match": 0.81}}})
    fields = Record.from_dict({"results": {"finetuned": {"kind": "json", "field_match": 0.574, "exact_match": 0.1}}})
    assert runs.summarize(tmp_path, labels).metric == "F1 0.79"
    assert runs.summarize(tmp_path, fields).metric == "fields 57%"


def test_compare_screen_puts_per_label_figures_of_two_runs_side_by_side(home, tmp_path, monkeypatch):
    import asyncio

    from textual.widgets import DataTable
    from tunewiz.tui.app import create_app
    from tunewiz.tui.compare_screen import CompareScreen

    a = record_run(home, tmp_path, monkeypatch, SENTIMENT, SENT_BASE, SENT_TUNED, "sentiment-a")
    b = record_run(home, tmp_path, monkeypatch, SENTIMENT, SENT_BASE, SENTIMENT, "sentiment-b")
    root = runs.runs_root(home)

    async def run() -> dict[str, tuple]:
        app = create_app(home, start="history")
        async with app.run_test(size=(80, 24)) as pilot:
            app.push_screen(CompareScreen(root / a, root / b))
            await pilot.pause(0.5)
            table = app.screen.query_one("#compare", DataTable)
            return {str(table.get_row_at(i)[0]): tuple(table.get_row_at(i)) for i in range(table.row_count)}

    rows = asyncio.run(run())
    assert rows["finetuned: accuracy (95% interval)"][1:] == ("92% (74-98%)", "100% (86-100%)")
    # negative: 7 of 8 found; 8 answered negative, one of them "not sure"
    assert rows["finetuned: negative: P R F1"][1:] == ("0.88 0.88 0.88", "1.00 1.00 1.00")
    assert rows["finetuned: macro-F1"][2] == "1.00"
    assert not any("confusion" in k or ".labels." in k for k in rows)  # raw nested keys stay in run.toml


def test_show_says_which_eval_loss_is_which():
    """The trainer's eval loss (training precision, every held-out row) and the comparison's (the precision
    the answers ran in, the rows compared) may differ in the third decimal: each says what it is."""
    from tunewiz.tui.record_text import record_summary_lines

    doc = Record.from_dict(
        {
            "run": {"id": "r1", "status": "completed"},
            "model": {"id": "bundled:smollm2-135m-instruct", "method": "lora", "effective_dtype": "bfloat16"},
            "data": {"path": "d.jsonl", "train_rows": 324, "eval_rows": 36},
            "results": {
                "train_loss": 0.2422,
                "eval_loss": 0.0775,
                "precision": "float32",
                "base": {"examples": 36, "eval_loss": 1.5276, "kind": "json"},
                "finetuned": {"examples": 36, "eval_loss": 0.0763, "kind": "json"},
            },
        }
    )
    text = "\n".join(record_summary_lines(doc))
    assert "eval loss 0.0775 (in training, bfloat16, all 36 held-out rows)" in " ".join(text.split())
    assert "eval loss, float32 (lower better)" in text and "0.0763" in text
