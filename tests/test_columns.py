"""Tables as training examples (issue 25): the column mapping proposed, applied the same way everywhere,
recorded in run.toml and re-applied; a table never trains silently as plain text; labels stratified."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tunewiz.core.bookkeeping import runs
from tunewiz.core.config import RunConfig
from tunewiz.core.data import columns, lint
from tunewiz.core.data import dataset as data
from tunewiz.core.data.columns import Mapping
from tunewiz.tui import cli

from tests.conftest import SAMPLE, chat_row, write_jsonl

INTENTS = ["card_arrival", "balance_not_updated_after_cheque_or_cash_deposit", "exchange_rate", "pin_blocked"]


def table(n: int = 40) -> list[dict]:
    return [
        {"text": f"customer message number {i} about {INTENTS[i % 4]}", "category": INTENTS[i % 4]} for i in range(n)
    ]


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter=delimiter)
        w.writeheader()
        w.writerows(rows)
    return path


def renamed(rows: list[dict], prompt: str, answer: str) -> list[dict]:
    return [{prompt: r["text"], answer: r["category"], "id": i} for i, r in enumerate(rows)]


def shapes(tmp_path: Path) -> dict[str, tuple[Path, str, str]]:
    """The same labelled rows in every table shape people have: (file, prompt column, answer column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    rows = table()
    out = {"csv": (write_csv(tmp_path / "t.csv", rows), "text", "category")}
    out["tsv"] = (write_csv(tmp_path / "t.tsv", renamed(rows, "question", "label"), "\t"), "question", "label")
    pq.write_table(pa.Table.from_pylist(renamed(rows, "review", "sentiment")), tmp_path / "t.parquet")
    out["parquet"] = (tmp_path / "t.parquet", "review", "sentiment")
    out["jsonl"] = (write_jsonl(tmp_path / "t.jsonl", renamed(rows, "utterance", "intent")), "utterance", "intent")
    Dataset.from_list(renamed(rows, "sentence", "class")).save_to_disk(str(tmp_path / "ds"))
    out["datasets"] = (tmp_path / "ds", "sentence", "class")
    return out


SHAPES = ["csv", "tsv", "parquet", "jsonl", "datasets"]


@pytest.mark.parametrize("shape", SHAPES)
def test_each_table_shape_gets_the_mapping_proposed_and_applied(tmp_path, shape):
    path, prompt, answer = shapes(tmp_path)[shape]
    loaded = data.read(path)
    (unmapped,) = [f for f in loaded.errors if f.rule == "unmapped-columns"]
    assert f"--prompt-column {prompt} --answer-column {answer}" in unmapped.message
    assert "4 distinct values" in unmapped.message  # what the answer column looks like
    mapping = Mapping(prompt, answer, "Classify the intent.")
    mapped = data.read(path, mapping)
    assert not mapped.errors and len(mapped.examples) == 40 and mapped.formats == {"mapped": 40}
    rows = table()
    assert mapped.examples[5].messages == [
        {"role": "user", "content": "Classify the intent.\n\n" + rows[5]["text"]},
        {"role": "assistant", "content": rows[5]["category"]},
    ]


def test_a_mapped_row_renders_as_the_same_row_written_by_hand(tmp_path, tokenizer):
    """Same token ids, same trained mask: the mapping makes the chat row a person would have written."""
    rows = table(6)
    path = write_csv(tmp_path / "t.csv", rows)
    mapping = Mapping("Message: {text}", "category", "", "You label banking messages.")
    mapped = data.read(path, mapping).examples[3]
    by_hand = write_jsonl(
        tmp_path / "hand.jsonl",
        [chat_row(f"Message: {r['text']}", r["category"], system="You label banking messages.") for r in rows],
    )
    hand = data.read(by_hand).examples[3]
    a, b = data.render_example(tokenizer, mapped, 256), data.render_example(tokenizer, hand, 256)
    assert a.input_ids == b.input_ids and a.labels == b.labels


@pytest.mark.parametrize("shape", SHAPES)
def test_the_mapping_is_recorded_and_train_config_applies_it_again(home, tmp_path, shape):
    path, prompt, answer = shapes(tmp_path)[shape]
    ns = cli.parser().parse_args(
        ["train", "--data", str(path), "--prompt-column", prompt, "--answer-column", answer,
         "--instruction", "Classify it.", "--system-prompt", "Be brief."]
    )  # fmt: skip
    from tunewiz.tui.commands import build_config

    cfg = build_config(ns)
    run_dir = runs.create_run(cfg, home)
    record = runs.read_record(run_dir).to_dict()["data"]
    assert (record["prompt_column"], record["answer_column"]) == (prompt, answer)
    again = build_config(cli.parser().parse_args(["train", "--config", str(run_dir / runs.RECORD)]))
    assert Mapping.of(again.data) == Mapping(prompt, answer, "Classify it.", "Be brief.")
    first, second = data.load_for(cfg.data), data.load_for(again.data)
    assert [e.messages for e in first.examples] == [e.messages for e in second.examples]
    assert second.examples[0].messages[0] == {"role": "system", "content": "Be brief."}


def test_a_text_and_label_table_is_not_ready_to_train_without_a_choice(tmp_path, capsys):
    path = write_csv(tmp_path / "t.csv", table())
    assert cli.main(["lint", str(path), "--no-tokens"]) == 1
    out = capsys.readouterr().out
    assert "unmapped-columns" in out and "ready to train" not in out
    assert "--prompt-column text --answer-column category" in out and "--as-text" in out
    assert cli.main(["lint", str(path), "--no-tokens", "--prompt-column", "text", "--answer-column", "category"]) == 0
    assert cli.main(["lint", str(path), "--no-tokens", "--as-text"]) == 0  # plain text, said explicitly
    capsys.readouterr()
    assert cli.main(["preview", str(path), "--plain"]) == 2
    assert "--prompt-column text" in capsys.readouterr().err


def test_a_text_column_beside_an_id_is_plain_text_as_before(tmp_path):
    rows = [{"text": f"some sentence {i} of a book", "id": i} for i in range(20)]
    loaded = data.read(write_jsonl(tmp_path / "t.jsonl", rows))
    assert not loaded.errors and loaded.formats == {"text": 20}


NUMBERED = [{"text": f"review {i}", "category": float(i % 2)} for i in range(3)]  # pandas writes int labels as 0.0


@pytest.mark.parametrize(
    ("rows", "mapping", "said"),
    [
        (table(), Mapping("txt", "category"), "names column 'txt', which the file does not have"),
        (table(), Mapping("Review: {body}", "category"), "names column 'body'"),
        (table()[:3] + [{"text": "hello", "category": ""}], Mapping("text", "category"), "'category' is empty"),
        (table()[:3] + [{"text": "hello", "category": None}], Mapping("text", "category"), "is empty (null / NaN)"),
        (NUMBERED + [{"text": "hello", "category": float("nan")}], Mapping("text", "category"), "(null / NaN)"),
        (NUMBERED + [{"text": "hello", "category": 2.5}], Mapping("text", "category"), "2.5"),
        (table(), Mapping("Review: {text", "category"), "prompt template"),
    ],
)
def test_a_mapping_that_cannot_apply_says_where_and_what(tmp_path, rows, mapping, said):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    loaded = data.read(path, mapping)
    messages = [str(f) for f in loaded.errors]
    assert any(said in m for m in messages), messages
    if "does not have" in said:
        assert "did you mean 'text'?" in messages[0]
    if "empty" in said or "2.5" in said or "NaN" in said:
        assert [f.line for f in loaded.errors] == [4]  # the row, by number; the others read
        assert len(loaded.examples) == 3


def test_a_half_mapping_is_refused_by_the_config():
    cfg = RunConfig()
    cfg.data.path = "t.csv"
    cfg.data.answer_column = "category"
    assert any("prompt_column and answer_column go together" in p for p in cfg.problems())


def test_the_held_out_split_is_stratified_by_label_and_repeatable():
    rows = [
        data.Example(i, "mapped", [{"role": "user", "content": f"m{i}"}, {"role": "assistant", "content": label}])
        for i, label in enumerate(["common"] * 60 + ["mid"] * 12 + [f"rare{j}" for j in range(6) for _ in range(3)])
    ]
    train, held = data.split(rows, 0.1, 42)
    held_labels = {e.messages[-1]["content"] for e in held}
    assert held_labels == {"common", "mid", *(f"rare{j}" for j in range(6))}  # every label with 3+ rows
    assert data.split(rows, 0.1, 42) == (train, held)
    assert data.split(rows, 0.1, 7) != (train, held)
    assert all(any(e.messages[-1]["content"] == lab for e in train) for lab in held_labels)


def test_lint_speaks_about_the_labels(tmp_path):
    rows = [{"text": f"message {i}", "category": "Billing"} for i in range(30)]
    rows += [{"text": f"other {i}", "category": "billing "} for i in range(3)]
    rows += [{"text": f"else {i}", "category": "refund"} for i in range(2)]
    report = lint.lint(write_csv(tmp_path / "t.csv", rows), mapping=Mapping("text", "category"))
    rules = {f.rule: f.message for f in report.findings}
    assert "3 labels" in rules["labels"]
    assert "'refund' (2)" in rules["rare-label"]
    assert "'Billing' / 'billing'" in rules["label-variants"] or "'billing' / 'Billing'" in rules["label-variants"]
    assert "'Billing' has 30 rows" in rules["label-imbalance"]


def test_long_label_names_of_a_mapped_column_are_judged_as_labels():
    from tunewiz.core.judging import metrics

    long = "balance_not_updated_after_cheque_or_cash_deposit"
    expected = [long, "card_arrival", long, "card_arrival"]
    assert metrics.measure(expected, expected)["kind"] == "text"  # a 48-character answer is no label by itself
    labels = columns.label_set(expected)
    m = metrics.measure(expected, [long, long, long, "card_arrival"], labels=labels)
    assert m["kind"] == "labels" and set(m["labels"]) == {long, "card_arrival"} and "confusion" in m


def test_the_sample_table_is_proposed_as_its_readme_says(capsys):
    path = SAMPLE / "bank_intents.csv"
    proposal = columns.propose([r for _, r in data.read_rows(path)[0]])
    assert proposal.mapping == Mapping("text", "category")
    assert "12 distinct values" in proposal.why[1]
    loaded = data.read(path, proposal.mapping)
    assert len(loaded.examples) == 268 and not loaded.errors
    assert json.dumps(sorted(columns.label_set([e.messages[-1]["content"] for e in loaded.examples])))


def test_a_mapped_label_column_is_judged_as_labels_from_the_whole_column(tmp_path):
    """12 labels and 23 held-out rows (fewer than two each): the column, not the held-out rows, says
    they are labels; every label of the column is in the set."""
    from tunewiz.core.judging.evaluate import mapped_labels

    cfg = RunConfig()
    cfg.data.path = str(SAMPLE / "bank_intents.csv")
    cfg.data.prompt_column, cfg.data.answer_column = "text", "category"
    held = [e.messages[-1]["content"] for e in data.split(data.load_for(cfg.data).examples, 0.1, 42)[1]]
    assert len(held) < 2 * 12 and columns.label_set(held) is None
    labels = mapped_labels(cfg, held)
    assert labels is not None and len(labels) == 12 and set(held) <= set(labels)
    cfg.data.answer_column = ""
    assert mapped_labels(cfg, held) is None


def test_the_sample_table_mapped_has_no_errors_or_warnings(tokenizer):
    report = lint.lint(SAMPLE / "bank_intents.csv", tokenizer, mapping=Mapping("text", "category"))
    assert report.ok and not report.warnings, report.findings
    assert any(f.rule == "labels" and "12 labels" in f.message for f in report.findings)


def test_twenty_long_labels_fit_80_columns_in_the_per_label_table_and_the_matrix():
    from tunewiz.core.judging import metrics
    from tunewiz.tui.eval_screen import TEXT_WIDTH
    from tunewiz.tui.record_text import comparison_table, confusion_lines

    labels = [f"intent_number_{i:02d}_with_a_rather_long_descriptive_name" for i in range(20)]
    truth = [label for label in labels for _ in range(3)]
    answers = truth[1:] + truth[:1]
    ft = {**metrics.measure(truth, answers, labels=labels), "examples": len(truth)}
    base = {**metrics.measure(truth, ["?"] * len(truth), labels=labels), "examples": len(truth)}
    table = comparison_table({"base": base, "finetuned": ft})
    assert "20 labels" in table and max(len(line) for line in table.splitlines()) <= 78
    matrix = confusion_lines(ft, "fine-tuned answers", TEXT_WIDTH)
    assert len(matrix) == 2 + 20 + 1 and max(map(len, matrix)) <= TEXT_WIDTH
    assert matrix[2].startswith(" 1 intent_") and matrix[-1].startswith("columns: the rows' numbers")
