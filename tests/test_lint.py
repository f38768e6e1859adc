"""The data stage: every file type and row format, each lint rule at the right line, and the loss mask.

The mask tests use real chat templates of three model families besides the
bundled SmolLM2 (Llama 3, Qwen 2.5, Gemma), read from the copies trl ships in
its package (no network), put on the bundled tokenizer with each family's
special tokens. trl also ships "training" variants of those templates with
``{% generation %}`` markers: they are the independent oracle our
prefix-by-prefix mask is checked against.
"""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest
from tunewiz.core.data import dataset as data
from tunewiz.core.data import lint
from tunewiz.core.data.dataset import Example, Finding

from tests.conftest import SAMPLE, chat_row, write_jsonl


def rules_at(report_or_loaded) -> set[tuple[str, int | None]]:
    return {(f.rule, f.line) for f in report_or_loaded.findings}


def rows(n: int, start: int = 0) -> list[dict]:
    return [chat_row(f"Question number {i}?", f"Answer {i}.") for i in range(start, start + n)]


# -- file types and formats ------------------------------------------------------------------


def test_sharegpt_rows_map_speakers_to_roles(tmp_path):
    row = {
        "system": "Be brief.",
        "conversations": [
            {"from": "human", "value": "Weather?"},
            {"from": "function_call", "value": '{"name": "weather"}'},
            {"from": "observation", "value": "sunny"},
            {"from": "gpt", "value": "Sunny."},
        ],
    }
    loaded = data.load(write_jsonl(tmp_path / "s.jsonl", [row]))
    assert loaded.format == "sharegpt"
    assert [m["role"] for m in loaded.examples[0].messages] == ["system", "user", "assistant", "tool", "assistant"]


def test_sharegpt_unknown_speaker_is_an_error_with_its_line(tmp_path):
    bad = {"conversations": [{"from": "narrator", "value": "x"}, {"from": "gpt", "value": "y"}]}
    loaded = data.read(write_jsonl(tmp_path / "s.jsonl", rows(1) + [bad]))
    assert ("unknown-role", 2) in rules_at(loaded)
    assert "human" in str(loaded.errors[0])  # the known speakers are listed


def test_prompt_completion_as_strings_and_as_messages(tmp_path):
    rows_ = [
        {"prompt": "2+2?", "completion": "4"},
        {
            "prompt": [{"role": "system", "content": "math"}, {"role": "user", "content": "3+3?"}],
            "completion": [{"role": "assistant", "content": "6"}],
        },
    ]
    loaded = data.load(write_jsonl(tmp_path / "pc.jsonl", rows_))
    assert loaded.format == "prompt_completion"
    assert loaded.examples[0].messages == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert [m["role"] for m in loaded.examples[1].messages] == ["system", "user", "assistant"]


def test_text_rows_are_language_modelling(tmp_path, tokenizer):
    loaded = data.load(write_jsonl(tmp_path / "t.jsonl", [{"text": "The cat sat on the mat."}]))
    ex = loaded.examples[0]
    assert ex.format == "text" and not ex.is_chat and ex.text == "The cat sat on the mat."
    r = data.render_example(tokenizer, ex)
    assert r.input_ids[-1] == tokenizer.eos_token_id  # it learns where a text ends
    assert all(r.mask)  # every token is trained
    rows_, stats = data.tokenize_examples(tokenizer, [ex], 64)
    assert rows_[0]["labels"] == r.input_ids


def test_csv_and_tsv_map_columns_and_name_lines(tmp_path):
    path = tmp_path / "d.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["Instruction", "Input", "Output"])
        w.writerow(["Translate", "Hallo", "Hello"])
        w.writerow(["Say hi, twice", "", "Hi.\nHi."])  # a quoted newline: the next row starts on line 5
        w.writerow(["", "x", "y"])
    loaded = data.read(path)
    assert loaded.format == "alpaca"
    assert [e.line for e in loaded.examples] == [2, 3]
    assert loaded.examples[1].messages[-1]["content"] == "Hi.\nHi."
    assert ("empty-content", 5) in rules_at(loaded)

    tsv = tmp_path / "d.tsv"
    tsv.write_text("prompt\tcompletion\nhi\thello\nonly one cell\n", encoding="utf-8")
    loaded = data.read(tsv)
    assert loaded.format == "prompt_completion"
    assert ("invalid-csv", 3) in rules_at(loaded)


def test_dolly_style_columns(tmp_path):
    path = tmp_path / "dolly.csv"
    path.write_text("instruction,context,response\nSummarise,Long text,Short\n", encoding="utf-8")
    msgs = data.load(path).examples[0].messages
    assert msgs == [{"role": "user", "content": "Summarise\n\nLong text"}, {"role": "assistant", "content": "Short"}]


def test_parquet_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(
        pa.Table.from_pylist([{"instruction": "a", "output": "b"}, {"instruction": "c", "output": ""}]), path
    )
    loaded = data.read(path)
    assert len(loaded.examples) == 1
    assert ("empty-content", 2) in rules_at(loaded)


def test_dataset_folder_saved_by_datasets(tmp_path):
    from datasets import Dataset, DatasetDict

    folder = tmp_path / "ds"
    Dataset.from_list(rows(3)).save_to_disk(str(folder))
    loaded = data.load(folder)
    assert loaded.format == "messages" and len(loaded.examples) == 3 and len(loaded.sha256) == 64

    splits = tmp_path / "splits"
    DatasetDict({"train": Dataset.from_list(rows(2)), "test": Dataset.from_list(rows(1))}).save_to_disk(str(splits))
    assert len(data.load(splits).examples) == 2


def test_plain_folder_is_explained(tmp_path):
    with pytest.raises(data.DataError, match="save_to_disk"):
        data.load(tmp_path)


def test_mixed_formats_are_reported_not_guessed(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", rows(3) + [{"instruction": "q", "output": "a"}, {"text": "plain"}])
    loaded = data.read(path)
    assert loaded.formats == {"messages": 3, "alpaca": 1, "text": 1}
    (mixed,) = [f for f in loaded.findings if f.rule == "mixed-formats"]
    assert mixed.severity == "warning" and mixed.line == 4
    assert "alpaca 1 (first at line 4)" in mixed.message and "text 1 (first at line 5)" in mixed.message


# -- each rule at its line ----------------------------------------------------------------------

ALL_PROBLEMS = [
    (chat_row("Fine row?", "Yes."), None),  # 1
    ('{"messages": [', "invalid-json"),  # 2
    ({"instruction": "no output"}, "unknown-format"),  # 3
    ({"messages": [{"role": "user", "content": None}, {"role": "assistant", "content": "a"}]}, "bad-field"),  # 4
    ({"messages": [{"role": "bot", "content": "q"}, {"role": "assistant", "content": "a"}]}, "unknown-role"),  # 5
    ({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "a"}]}, "empty-content"),  # 6
    (
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "system", "content": "s"},
                {"role": "assistant", "content": "a"},
            ]
        },
        "system-not-first",
    ),  # 7
    ({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]}, "no-assistant"),  # 8
    (
        {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]},
        "last-not-assistant",
    ),  # 9
    (
        {
            "messages": [
                {"role": "user", "content": "q1"},
                {"role": "user", "content": "q2"},
                {"role": "assistant", "content": "a"},
            ]
        },
        "roles-not-alternating",
    ),  # 10
    (chat_row("Fine row?", "Yes."), "duplicate"),  # 11
    (chat_row("fine   ROW", "yes"), "near-duplicate"),  # 12
    (chat_row("Fine row?", "No."), "conflicting-answers"),  # 13
    ({"messages": chat_row("q", "a")["messages"], "id": 7}, "unknown-keys"),  # 14
    (chat_row("Say <|im_end|> now", "ok"), "special-token-in-content"),  # 15
    (chat_row("Write the words.", "word " * 300), "too-long"),  # 16
    (chat_row("word " * 300, "cut answer"), "no-trained-tokens"),  # 17
]


def test_every_problem_is_reported_at_its_line(tmp_path, tokenizer):
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, [r for r, _ in ALL_PROBLEMS])
    with path.open("ab") as fh:
        fh.write(b'{"messages": [{"role": "user", "content": "caf\xe9"}]}\n')  # 18: latin-1
    report = lint.lint(path, tokenizer, max_seq_len=200)
    found = rules_at(report)
    for line, (_row, rule) in enumerate(ALL_PROBLEMS, start=1):
        if rule:
            assert (rule, line) in found, f"{rule} not reported at line {line}: {sorted(found)}"
    assert ("not-utf8", 18) in found
    assert ("too-few-examples", None) in found
    assert not report.at_line(1)  # the good row has nothing said about it
    for f in report.findings:  # every finding says where and what to do
        assert f.rule in lint.RULES and f.severity == lint.RULES[f.rule][0], f
        assert f.file == str(path) and len(f.message) > 20
    too_long = next(f for f in report.findings if f.rule == "too-long")
    assert "raise max_seq_len to" in too_long.message and "cuts" in too_long.message


def test_bom_is_a_note(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(chat_row("q", "a")).encode() + b"\n")
    loaded = data.load(path)
    assert ("bom", 1) in rules_at(loaded) and len(loaded.examples) == 1


def test_empty_file_is_an_error(tmp_path):
    report = lint.lint(write_jsonl(tmp_path / "e.jsonl", []))
    assert [f.rule for f in report.errors] == ["empty-file"]


def test_leakage_between_train_and_eval_files(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", rows(5))
    held = write_jsonl(tmp_path / "eval.jsonl", [rows(1, start=9)[0], chat_row("question number 3", "answer 3")])
    report = lint.lint(train, eval_path=held)
    (leak,) = [f for f in report.findings if f.rule == "leakage"]
    assert leak.file == str(held) and leak.line == 2 and "line 4 of" in leak.message


def test_leakage_inside_the_seeded_split(tmp_path):
    # Every row twice: whatever the split holds out is also trained on.
    path = write_jsonl(tmp_path / "d.jsonl", rows(10) + rows(10))
    report = lint.lint(path, eval_fraction=0.2, seed=1)
    train, held = data.split(data.load(path).examples, 0.2, 1)
    trained = {json.dumps(e.messages) for e in train}
    leaked = {e.line for e in held if json.dumps(e.messages) in trained}
    assert leaked and {f.line for f in report.findings if f.rule == "leakage"} == leaked


@pytest.mark.parametrize(
    "n, rule, severity",
    [(50, "too-few-examples", "warning"), (300, "dataset-size", "info"), (6000, "dataset-size", "info")],
)
def test_dataset_size_advice(tmp_path, n, rule, severity):
    report = lint.lint(write_jsonl(tmp_path / "d.jsonl", rows(n)))
    (size,) = [f for f in report.findings if f.rule in ("too-few-examples", "dataset-size")]
    assert (size.rule, size.severity) == (rule, severity)


def test_sweet_spot_says_nothing_about_size(tmp_path):
    report = lint.lint(write_jsonl(tmp_path / "d.jsonl", rows(800)))
    assert not [f for f in report.findings if f.rule in ("too-few-examples", "dataset-size")]


def test_no_chat_template_names_the_fix(tmp_path, tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    report = lint.lint(write_jsonl(tmp_path / "d.jsonl", rows(3)), tok)
    (f,) = [f for f in report.findings if f.rule == "no-chat-template"]
    assert f.severity == "error" and "-Instruct" in f.message


def test_pad_equal_to_eos_is_noted(tmp_path, tokenizer):
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # SmolLM2's own configuration
    report = lint.lint(write_jsonl(tmp_path / "d.jsonl", rows(3)), tokenizer)
    assert ("pad-is-eos", None) in rules_at(report)


def test_eot_outside_the_trained_tokens_is_an_error(tokenizer):
    ex = Example(3, "messages", chat_row("q", "a")["messages"])
    r = data.render(tokenizer, ex.messages)
    assert not lint._eot_findings(tokenizer, ex, r, "f.jsonl")  # the real mask trains it
    broken = copy.deepcopy(r)
    eot = max(i for i, m in enumerate(broken.mask) if m)
    broken.mask[eot] = False  # what a collator that masks the pad (= EOS) token does
    (f,) = lint._eot_findings(tokenizer, ex, broken, "f.jsonl")
    assert (f.rule, f.severity, f.line) == ("eot-not-trained", "error", 3)
    assert "never learn to stop" in f.message


def test_template_without_an_end_of_turn_token_is_a_warning(tmp_path, tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    tok.chat_template += "{% if add_generation_prompt %}assistant: {% endif %}"
    report = lint.lint(write_jsonl(tmp_path / "d.jsonl", rows(3)), tok)
    (f,) = [f for f in report.findings if f.rule == "eot-not-trained"]
    assert f.severity == "warning" and "no special token" in f.message


def test_double_bos_is_an_error(tmp_path, llama3_tokenizer):
    # A plain-text row that already starts with the BOS text, from a tokenizer that adds BOS itself.
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "<|begin_of_text|>Once upon a time."}, {"text": "Fine."}])
    report = lint.lint(path, llama3_tokenizer)
    assert ("double-bos", 1) in rules_at(report)
    assert ("double-bos", 2) not in rules_at(report)


def test_system_message_the_template_rejects(tmp_path, gemma_tokenizer):
    path = write_jsonl(tmp_path / "d.jsonl", [chat_row("q", "a"), chat_row("q2", "a2", system="Be terse.")])
    report = lint.lint(path, gemma_tokenizer)
    assert ("system-unsupported", 2) in rules_at(report)
    assert not report.at_line(1)


def test_system_message_the_template_drops(tmp_path, tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] != 'system' %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
        "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    report = lint.lint(write_jsonl(tmp_path / "d.jsonl", [chat_row("q", "a", system="Secret rules.")]), tok)
    assert ("system-unsupported", 1) in rules_at(report)


def test_template_that_rejects_a_conversation_names_each_row(tmp_path, gemma_tokenizer):
    two_users = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": "c"},
        ]
    }
    path = write_jsonl(tmp_path / "d.jsonl", [chat_row("q", "a"), two_users, two_users | {"id": 2}])
    report = lint.lint(path, gemma_tokenizer)
    assert {f.line for f in report.findings if f.rule == "template-error"} == {2, 3}
    assert "alternate" in next(f for f in report.findings if f.rule == "template-error").message


def test_token_summary(tmp_path, tokenizer):
    report = lint.lint(SAMPLE / "support_tickets.jsonl", tokenizer, max_seq_len=100)
    t = report.tokens
    assert t["counted"] == 360 and t["min"] <= t["median"] <= t["p95"] <= t["max"]
    lengths = sorted(len(data.render(tokenizer, e.messages).input_ids) for e in report.examples)
    assert (t["min"], t["max"], t["total"]) == (lengths[0], lengths[-1], sum(lengths))
    assert t["truncated"] == sum(n > 100 for n in lengths) > 0
    assert t["truncated"] == len([f for f in report.findings if f.rule in ("too-long", "no-trained-tokens")])
    text = "\n".join(report.summary_lines())
    assert "median" in text and "p95" in text and "truncated" in text


def test_token_counts_equal_full_renders_for_every_family(tmp_path, family):
    """The sum-of-parts count (fast path) equals a whole render for each template family."""
    name, tok = family
    examples = data.load(SAMPLE / "support_tickets.jsonl").examples[:40]
    if name == "gemma":  # no system role there
        examples = [Example(e.line, e.format, e.messages[1:]) for e in examples]
    counted, lengths, failed, _firsts = lint._lengths(tok, examples)
    assert not failed
    assert lengths == [len(data.render(tok, e.messages).input_ids) for e in counted]


@pytest.mark.parametrize("name", ["support_tickets.jsonl", "order_extraction_alpaca.jsonl"])
def test_sample_data_has_no_errors_or_warnings(name, tokenizer):
    report = lint.lint(SAMPLE / name, tokenizer)
    assert report.ok and not report.warnings, report.findings


# -- the mask: preview == trainer, and right for several template families ---------------------

TRL_TEMPLATES = Path(__import__("trl").__file__).parent / "chat_templates"
FAMILIES = {
    # family: (template file, training template file, special tokens, bos, eos)
    "llama3": (
        "llama3.jinja",
        "llama3_training.jinja",
        ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|begin_of_text|>",
        "<|eot_id|>",
    ),
    "qwen2.5": ("qwen2_5.jinja", "qwen2_5_training.jinja", [], None, "<|im_end|>"),
    "gemma": (
        "gemma.jinja",
        "gemma_training.jinja",
        ["<bos>", "<start_of_turn>", "<end_of_turn>"],
        "<bos>",
        "<end_of_turn>",
    ),
}


def family_tokenizer(base, name: str, training: bool = False):
    from tokenizers import processors

    template, training_template, specials, bos, eos = FAMILIES[name]
    tok = copy.deepcopy(base)
    if specials:
        tok.add_special_tokens({"additional_special_tokens": specials})
    if bos:
        tok.bos_token = bos
        # Llama 3 and Gemma tokenizers add BOS themselves; the template writes it too.
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.convert_tokens_to_ids(bos))]
        )
    tok.eos_token = eos
    tok.chat_template = (TRL_TEMPLATES / (training_template if training else template)).read_text()
    return tok


@pytest.fixture(scope="module")
def llama3_tokenizer(tokenizer):
    return family_tokenizer(tokenizer, "llama3")


@pytest.fixture(scope="module")
def gemma_tokenizer(tokenizer):
    return family_tokenizer(tokenizer, "gemma")


@pytest.fixture(scope="module", params=["smollm2", *FAMILIES])
def family(request, tokenizer):
    return request.param, tokenizer if request.param == "smollm2" else family_tokenizer(tokenizer, request.param)


CONVERSATIONS = [
    chat_row("Classify: my parcel is late", '{"category": "shipping"}', system="Reply with JSON.")["messages"],
    [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "  Another, with spaces around.  "},
        {"role": "assistant", "content": "Green."},
    ],
]


@pytest.mark.parametrize("conv", range(len(CONVERSATIONS)))
def test_preview_mask_is_the_trainer_labels(family, conv):
    """What the preview highlights is exactly what the trainer's labels train."""
    name, tok = family
    messages = CONVERSATIONS[conv]
    if name == "gemma" and messages[0]["role"] == "system":
        messages = messages[1:]
    ex = Example(1, "messages", messages)
    r = data.render_example(tok, ex, 512)
    (row,), _ = data.tokenize_examples(tok, [ex], 512)
    trained_ids = [t for t in row["labels"] if t != -100]
    shown = "".join(piece for piece, kind in r.segments() if kind == "trained")
    assert tok.decode(trained_ids) == shown
    # and it is each answer followed by the end-of-turn token, nothing else
    eot = tok.eos_token if name != "llama3" else "<|eot_id|>"
    answers = [m["content"].strip() for m in messages if m["role"] == "assistant"]
    assert shown.replace(" ", "") == "".join(a + eot for a in answers).replace(" ", "")


@pytest.mark.parametrize("conv", range(len(CONVERSATIONS)))
def test_mask_agrees_with_trl_generation_markers(tokenizer, conv, request):
    """Against trl's {% generation %}-marked training templates: the same tokens, up to whitespace."""
    for name in FAMILIES:
        messages = CONVERSATIONS[conv]
        if name == "gemma" and messages[0]["role"] == "system":
            messages = messages[1:]
        ours = data.render(family_tokenizer(tokenizer, name), messages)
        tok = family_tokenizer(tokenizer, name, training=True)
        enc = tok.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, add_special_tokens=False
        )
        assert enc["input_ids"] == ours.input_ids, name
        theirs = [bool(m) for m in enc["assistant_masks"]]
        extra = [i for i, (a, b) in enumerate(zip(ours.mask, theirs, strict=True)) if a and not b]
        missing = [i for i, (a, b) in enumerate(zip(ours.mask, theirs, strict=True)) if b and not a]
        assert not extra, (
            f"{name}: we train tokens trl's markers do not: {tok.decode([ours.input_ids[i] for i in extra])!r}"
        )
        # trl's markers also take the newline around a turn; we leave whitespace outside the answer untrained
        assert all(not tok.decode([ours.input_ids[i]]).strip() for i in missing), name


# -- the command line -------------------------------------------------------------------------------


def test_cli_lint_exit_codes_and_lines(tmp_path, capsys, session_home):
    from tunewiz.tui import cli

    good = write_jsonl(tmp_path / "good.jsonl", rows(5))
    assert cli.main(["--home", str(session_home), "lint", str(good)]) == 0
    out = capsys.readouterr().out
    assert "0 error(s)" in out and "ready to train" in out

    bad = write_jsonl(tmp_path / "bad.jsonl", rows(2) + ["{oops"])
    assert cli.main(["--home", str(session_home), "lint", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:3: error [invalid-json]" in out

    assert cli.main(["--home", str(session_home), "lint", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_lint_json(tmp_path, capsys):
    from tunewiz.tui import cli

    bad = write_jsonl(tmp_path / "bad.jsonl", rows(2) + ["{oops"])
    assert cli.main(["lint", str(bad), "--no-tokens", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["by_severity"]["error"] == 1 and doc["rows"] == 2 and doc["examples"] == 2
    assert next(f for f in doc["findings"] if f["severity"] == "error") | {"message": ""} == {
        "rule": "invalid-json",
        "severity": "error",
        "file": str(bad),
        "line": 3,
        "message": "",
        "count": 1,
    }


def test_cli_preview_marks_trained_tokens_and_the_cut(tmp_path, capsys, session_home):
    from tunewiz.tui import cli

    path = write_jsonl(tmp_path / "d.jsonl", [chat_row("Hi", "Hello!"), chat_row("word " * 80, "The answer.")])
    assert cli.main(["--home", str(session_home), "preview", str(path), "--row", "1", "--plain"]) == 0
    out = capsys.readouterr().out
    assert "[[Hello!<|im_end|>]]" in out and ":1 (messages)" in out
    assert cli.main(["--home", str(session_home), "preview", str(path), "--row", "2", "--max-seq-len", "80"]) == 0
    out = capsys.readouterr().out
    assert "cut here by max_seq_len" in out and "trained" in out
    assert cli.main(["--home", str(session_home), "preview", str(path), "--row", "9"]) == 2
    assert "no example at line 9" in capsys.readouterr().err


# -- properties: nothing crashes, no row is lost without a word --------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
roles = st.sampled_from(["system", "user", "assistant", "tool", "human", "gpt", "", "USER"])
messages_rows = st.fixed_dictionaries(
    {
        "messages": st.lists(
            st.fixed_dictionaries({"role": roles, "content": st.text(max_size=40) | st.none() | st.integers()}),
            max_size=5,
        )
    }
)
shaped_rows = st.one_of(
    messages_rows,
    st.fixed_dictionaries({"instruction": st.text(max_size=20), "output": st.text(max_size=20)}),
    st.fixed_dictionaries({"conversations": st.lists(st.fixed_dictionaries({"from": roles, "value": st.text()}))}),
    st.fixed_dictionaries({"prompt": st.text() | json_values, "completion": st.text() | json_values}),
    st.fixed_dictionaries({"text": st.text(max_size=30)}),
    json_values,
)


def accounted(loaded, numbered_lines: list[int]) -> None:
    used = {e.line for e in loaded.examples}
    errors = {f.line for f in loaded.errors}
    for line in numbered_lines:
        assert line in used or line in errors, f"line {line} vanished without an error"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blob=st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_and_never_lose_a_line(tmp_path, blob):
    path = tmp_path / "blob.jsonl"
    path.write_bytes(blob)
    loaded = data.read(path)
    report = lint.lint(path)
    assert len(report.findings) >= len(loaded.findings)
    body = blob[3:] if blob.startswith(b"\xef\xbb\xbf") else blob
    if body.lstrip()[:1] != b"[":
        accounted(loaded, [n for n, c in enumerate(body.split(b"\n"), start=1) if c.strip()])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(shaped_rows, min_size=1, max_size=8))
def test_arbitrary_json_rows_never_crash_and_never_lose_a_row(tmp_path, values):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(v) + "\n" for v in values), encoding="utf-8")
    loaded = data.read(path)
    if isinstance(values[0], list):  # a file that opens with "[" is read as one JSON array
        if len(values) == 1:
            accounted(loaded, list(range(1, len(values[0]) + 1)))  # element numbers
        else:
            assert loaded.errors  # several arrays, one per line: not one JSON document, and said so
    else:
        accounted(loaded, list(range(1, len(values) + 1)))
    for f in loaded.findings:
        assert isinstance(f, Finding) and f.rule in lint.RULES
    lint.lint(path)  # the set rules too


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(messages_rows, min_size=1, max_size=4))
def test_arbitrary_chat_rows_lint_with_the_real_tokenizer(tmp_path, tokenizer, values):
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(v) + "\n" for v in values), encoding="utf-8")
    report = lint.lint(path, tokenizer, max_seq_len=64)
    accounted(report, list(range(1, len(values) + 1)))
