"""Training data: loading both row formats, error reports with file:line, the split, and the loss mask."""

from __future__ import annotations

import copy
import json

import pytest
from tunewiz.core.data import dataset as data
from tunewiz.core.data.dataset import DataError, Example, TemplateError

from tests.conftest import SAMPLE, chat_row, write_jsonl

# -- loading: the formats -----------------------------------------------------------


def test_load_chat_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [chat_row("hi", "hello", system="be nice"), chat_row("a", "b")])
    loaded = data.load(path)
    assert loaded.format == "messages"
    assert loaded.formats == {"messages": 2}
    assert [e.line for e in loaded.examples] == [1, 2]
    assert loaded.examples[0].messages == [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    assert loaded.path == path.resolve()
    assert len(loaded.sha256) == 64


def test_chat_rows_keep_only_role_and_content(tmp_path):
    row = {"messages": [{"role": "user", "content": "q", "name": "x"}, {"role": "assistant", "content": "a"}]}
    loaded = data.load(write_jsonl(tmp_path / "d.jsonl", [row]))
    assert loaded.examples[0].messages[0] == {"role": "user", "content": "q"}


def test_load_alpaca_with_and_without_input(tmp_path):
    rows = [
        {"instruction": "Translate", "input": "Hallo", "output": "Hello"},
        {"instruction": "Say hi", "output": "Hi"},
        {"instruction": "Say hi", "input": "  ", "output": "Hi"},
    ]
    loaded = data.load(write_jsonl(tmp_path / "alpaca.jsonl", rows))
    assert loaded.format == "alpaca"
    msgs = [e.messages for e in loaded.examples]
    assert msgs[0] == [{"role": "user", "content": "Translate\n\nHallo"}, {"role": "assistant", "content": "Hello"}]
    assert msgs[1] == [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi"}]
    assert msgs[2] == msgs[1]  # blank input adds nothing


def test_load_alpaca_with_system_and_history(tmp_path):
    row = {
        "system": "You are terse.",
        "history": [["q1", "a1"], ["q2", "a2"]],
        "instruction": "q3",
        "input": "",
        "output": "a3",
    }
    loaded = data.load(write_jsonl(tmp_path / "alpaca.jsonl", [row]))
    assert [(m["role"], m["content"]) for m in loaded.examples[0].messages] == [
        ("system", "You are terse."),
        ("user", "q1"),
        ("assistant", "a1"),
        ("user", "q2"),
        ("assistant", "a2"),
        ("user", "q3"),
        ("assistant", "a3"),
    ]


def test_bad_alpaca_history_is_reported(tmp_path):
    row = {"instruction": "q", "output": "a", "history": [["only one"]]}
    with pytest.raises(DataError) as exc_info:
        data.load(write_jsonl(tmp_path / "d.jsonl", [row]))
    assert f"{tmp_path / 'd.jsonl'}:1: 'history'" in str(exc_info.value)


def test_mixed_formats_are_counted(tmp_path):
    rows = [chat_row("q", "a"), {"instruction": "q", "output": "a"}, chat_row("q2", "a2")]
    loaded = data.load(write_jsonl(tmp_path / "mixed.jsonl", rows))
    assert loaded.formats == {"messages": 2, "alpaca": 1}
    assert loaded.format == "alpaca+messages"


def test_load_json_array_file(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([chat_row("q", "a"), {"instruction": "i", "output": "o"}], indent=2), encoding="utf-8")
    loaded = data.load(path)
    assert len(loaded.examples) == 2
    assert [e.line for e in loaded.examples] == [1, 2]  # element numbers
    assert loaded.formats == {"messages": 1, "alpaca": 1}


def test_json_array_in_a_jsonl_file_is_read_as_an_array(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps([chat_row("q", "a"), chat_row("q2", "a2")]), encoding="utf-8")
    assert len(data.load(path).examples) == 2


def test_bad_element_of_a_json_array_names_its_number(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([chat_row("q", "a"), {"txt": "x"}]), encoding="utf-8")
    with pytest.raises(DataError) as exc_info:
        data.load(path)
    assert f"{path}:2: unrecognised row" in str(exc_info.value)


def test_json_syntax_error_in_a_json_file_names_the_line(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('[\n  {"messages": []},\n  {"messages": [}\n]\n', encoding="utf-8")
    with pytest.raises(DataError) as exc_info:
        data.load(path)
    assert f"{path}:3: not valid JSON" in str(exc_info.value)


# -- loading: errors with file:line ----------------------------------------------------


def test_malformed_line_reports_its_line(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl", [chat_row("q", "a"), chat_row("q", "a"), '{"messages": [', chat_row("q", "a")]
    )
    with pytest.raises(DataError) as exc_info:
        data.load(path)
    assert len(exc_info.value.problems) == 1
    assert exc_info.value.problems[0].startswith(f"{path}:3: not valid JSON")


def test_blank_lines_do_not_shift_line_numbers(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(chat_row("q", "a")) + "\n\n   \n{oops}\n", encoding="utf-8")
    with pytest.raises(DataError) as exc_info:
        data.load(path)
    assert [p.split(": ")[0] for p in exc_info.value.problems] == [f"{path}:4"]


def test_every_bad_line_is_reported_at_once(tmp_path):
    rows = [
        chat_row("q", "a"),  # 1 ok
        "not json",  # 2
        {"txt": "hello"},  # 3 unknown shape
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "   "}]},  # 4 empty
        {"messages": [{"role": "human", "content": "q"}, {"role": "assistant", "content": "a"}]},  # 5 bad role
        {"messages": [{"role": "user", "content": "q"}]},  # 6 last not assistant
        chat_row("q", "a"),  # 7 ok
        "{truncated",  # 8
    ]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError) as exc_info:
        data.load(path)
    problems = exc_info.value.problems
    lines = sorted(int(p[len(str(path)) + 1 :].split(":")[0]) for p in problems)
    assert lines == [2, 3, 4, 5, 6, 8]
    assert str(exc_info.value).startswith("6 problem(s) in the data")


@pytest.mark.parametrize(
    "row, fragment",
    [
        ({"txt": "hello", "label": 1}, "unrecognised row (label, txt)"),
        (["a", "list"], "unrecognised row (list)"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}, "empty"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 5}]}, "not int"),
        ({"messages": [{"role": "bot", "content": "q"}, {"role": "assistant", "content": "a"}]}, "role 'bot'"),
        ({"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}, "needs 'role' and 'content'"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "user", "content": "q"}]}, "no assistant turn"),
        (
            {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]},
            "must be from the assistant",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "system", "content": "s"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "system message may only come first",
        ),
        ({"instruction": "", "output": "a"}, "'instruction' is empty"),
        ({"instruction": "q", "output": "  "}, "'output' is empty"),
    ],
)
def test_bad_row_gives_an_error_with_its_line(tmp_path, row, fragment):
    path = write_jsonl(tmp_path / "d.jsonl", [chat_row("q", "a"), row])
    with pytest.raises(DataError) as exc_info:
        data.load(path)
    assert len(exc_info.value.problems) == 1
    problem = exc_info.value.problems[0]
    assert problem.startswith(f"{path}:2: ")
    assert fragment in problem


def test_many_problems_are_listed_up_to_a_limit(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ["bad"] * 25)
    with pytest.raises(DataError) as exc_info:
        data.load(path)
    assert len(exc_info.value.problems) == 25
    assert "25 problem(s)" in str(exc_info.value)
    assert "and 5 more" in str(exc_info.value)


def test_bom_at_the_start_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(chat_row("q", "a")) + "\n").encode())
    assert len(data.load(path).examples) == 1
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([chat_row("q", "a")]).encode())
    assert len(data.load(path).examples) == 1


def test_crlf_line_endings_are_accepted(tmp_path):
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b"".join(json.dumps(chat_row("q", "a")).encode() + b"\r\n" for _ in range(3)))
    assert [e.line for e in data.load(path).examples] == [1, 2, 3]


def test_non_utf8_bytes_report_their_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    good = json.dumps(chat_row("q", "a")).encode()
    bad = json.dumps(chat_row("caf\u00e9", "a"), ensure_ascii=False).encode("latin-1")
    path.write_bytes(good + b"\n" + good + b"\n" + bad + b"\n")
    with pytest.raises(DataError) as exc_info:
        data.load(path)
    assert exc_info.value.problems[0].startswith(f"{path}:3: ")
    assert "UTF-8" in exc_info.value.problems[0]


def test_non_ascii_utf8_is_kept(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [chat_row("Grüße 🎉", "日本語")])
    loaded = data.load(path)
    assert loaded.examples[0].messages[-1]["content"] == "日本語"


def test_line_separator_characters_inside_a_string_are_not_line_breaks(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [chat_row("first\u2028second", "ok"), chat_row("q", "a\u0085b"), chat_row("q", "a")]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    loaded = data.load(path)
    assert [e.line for e in loaded.examples] == [1, 2, 3]
    assert loaded.examples[0].messages[0]["content"] == "first\u2028second"


def test_alpaca_input_that_is_not_text_is_not_silently_dropped(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "Double the number", "input": 21, "output": "42"}])
    try:
        loaded = data.load(path)
    except DataError as exc:
        assert f"{path}:1" in str(exc)
    else:
        assert "21" in loaded.examples[0].messages[-2]["content"]


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="no examples found"):
        data.load(path)


def test_missing_file_message(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DataError) as exc_info:
        data.load(path)
    assert f"{path}: no such file" in str(exc_info.value)
    assert "check the path" in str(exc_info.value)


def test_directory_instead_of_a_file(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        data.load(tmp_path)


def test_sha256_changes_with_the_content(tmp_path):
    a = data.load(write_jsonl(tmp_path / "a.jsonl", [chat_row("q", "a")])).sha256
    b = data.load(write_jsonl(tmp_path / "b.jsonl", [chat_row("q", "b")])).sha256
    a2 = data.load(write_jsonl(tmp_path / "a2.jsonl", [chat_row("q", "a")])).sha256
    assert a != b and a == a2


@pytest.mark.parametrize(
    "name, fmt", [("support_tickets.jsonl", "messages"), ("order_extraction_alpaca.jsonl", "alpaca")]
)
def test_sample_files_load(name, fmt):
    loaded = data.load(SAMPLE / name)
    assert loaded.format == fmt
    n_lines = sum(1 for line in (SAMPLE / name).read_text(encoding="utf-8").splitlines() if line.strip())
    assert len(loaded.examples) == n_lines > 10
    assert all(e.messages[-1]["role"] == "assistant" for e in loaded.examples)


# -- split --------------------------------------------------------------------------


def _examples(n: int) -> list[Example]:
    return [Example(i, "messages", [{"role": "assistant", "content": str(i)}]) for i in range(1, n + 1)]


def test_split_is_deterministic_for_a_seed():
    ex = _examples(100)
    assert data.split(ex, 0.1, 42) == data.split(ex, 0.1, 42)


def test_split_differs_for_another_seed():
    ex = _examples(100)
    assert data.split(ex, 0.1, 42)[1] != data.split(ex, 0.1, 43)[1]


@pytest.mark.parametrize("n", [2, 3, 10, 37, 100, 1000])
def test_split_has_no_overlap_and_loses_nothing(n):
    ex = _examples(n)
    train, evals = data.split(ex, 0.1, 7)
    train_lines, eval_lines = {e.line for e in train}, {e.line for e in evals}
    assert not train_lines & eval_lines
    assert train_lines | eval_lines == set(range(1, n + 1))
    assert train and evals
    assert [e.line for e in train] == sorted(e.line for e in train)  # file order kept


@pytest.mark.parametrize("n, fraction, expected", [(100, 0.1, 10), (1000, 0.1, 100), (50, 0.2, 10), (5, 0.1, 1)])
def test_split_eval_share(n, fraction, expected):
    assert len(data.split(_examples(n), fraction, 1)[1]) == expected


def test_split_needs_two_examples():
    with pytest.raises(DataError, match="at least 2"):
        data.split(_examples(1), 0.1, 42)


def test_prompt_and_answer():
    msgs = chat_row("q", "a", system="s")["messages"]
    prompt, answer = data.prompt_and_answer(msgs)
    assert answer == "a"
    assert prompt == msgs[:-1]


# -- rendering with the loss mask (real tokenizer) ------------------------------------


def _trained_text(tokenizer, r) -> str:
    return tokenizer.decode([t for t, m in zip(r.input_ids, r.mask, strict=True) if m])


def test_render_trains_exactly_the_assistant_answer(tokenizer):
    msgs = chat_row("What is the capital of France?", "Paris is the capital.", system="Answer briefly.")["messages"]
    r = data.render(tokenizer, msgs)
    # the answer and its end-of-turn token; not the newline the template writes after it
    assert _trained_text(tokenizer, r) == "Paris is the capital.<|im_end|>"
    untrained = tokenizer.decode([t for t, m in zip(r.input_ids, r.mask, strict=True) if not m])
    assert "Answer briefly." in untrained and "capital of France" in untrained
    assert "Paris" not in untrained
    assert r.labels == [t if m else -100 for t, m in zip(r.input_ids, r.mask, strict=True)]
    assert all((lab == -100) == (not m) for lab, m in zip(r.labels, r.mask, strict=True))
    assert r.trained_tokens == sum(r.mask) > 0
    assert not r.truncated and r.cut_trained_tokens == 0 and r.total_tokens == len(r.input_ids)
    assert tokenizer.decode(r.input_ids) == r.text


def test_render_multi_turn_trains_every_assistant_turn(tokenizer):
    msgs = [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one please."},
        {"role": "assistant", "content": "Green."},
    ]
    r = data.render(tokenizer, msgs)
    assert _trained_text(tokenizer, r) == "Blue.<|im_end|>Green.<|im_end|>"
    # the user turn in between is not trained
    untrained = tokenizer.decode([t for t, m in zip(r.input_ids, r.mask, strict=True) if not m])
    assert "Another one please." in untrained


def test_render_assistant_only_conversation_trains_only_the_answer(tokenizer):
    r = data.render(tokenizer, [{"role": "assistant", "content": "Hello there."}])
    assert _trained_text(tokenizer, r) == "Hello there.<|im_end|>"


def test_render_truncation_counts_cut_trained_tokens(tokenizer):
    msgs = chat_row("Count to twenty.", " ".join(str(i) for i in range(1, 21)))["messages"]
    full = data.render(tokenizer, msgs)
    keep = len(full.input_ids) - 10
    r = data.render(tokenizer, msgs, max_seq_len=keep)
    assert r.truncated
    assert len(r.input_ids) == len(r.mask) == len(r.labels) == keep
    assert r.input_ids == full.input_ids[:keep]
    assert r.total_tokens == len(full.input_ids)
    assert r.cut_trained_tokens == 9 == sum(full.mask[keep:])  # the last token cut is the untrained newline
    assert r.trained_tokens == full.trained_tokens - 9
    # long enough: nothing cut
    r = data.render(tokenizer, msgs, max_seq_len=len(full.input_ids))
    assert not r.truncated and r.cut_trained_tokens == 0


def test_tokenizer_without_chat_template_raises_template_error(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    with pytest.raises(TemplateError, match="chat template"):
        data.render(tok, chat_row("q", "a")["messages"])
    assert tokenizer.chat_template  # the shared tokenizer is untouched


def test_tokenize_examples_drops_rows_with_no_trained_tokens(tokenizer):
    short = Example(1, "messages", chat_row("Hi", "Hello!")["messages"])
    long_prompt = Example(2, "messages", chat_row("word " * 100, "answer")["messages"])
    max_len = len(data.render(tokenizer, short.messages).input_ids) + 5
    rows, stats = data.tokenize_examples(tokenizer, [short, long_prompt], max_len)
    assert len(rows) == 1
    assert stats["dropped_rows"] == 1
    assert stats["truncated_rows"] == 1
    r = data.render(tokenizer, short.messages, max_len)
    assert rows[0] == {"input_ids": r.input_ids, "labels": r.labels}
    assert stats["trained_tokens"] == r.trained_tokens
    assert stats["total_tokens"] == len(r.input_ids) + max_len
