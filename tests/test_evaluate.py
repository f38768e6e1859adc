"""Scoring of generated answers: exact match, JSON validity and field match."""

from __future__ import annotations

import json

import pytest
from tunewiz.core.judging.evaluate import PREDICTIONS, load_predictions
from tunewiz.core.judging.metrics import parse_json_object, score, summarize

EXPECTED = '{"category": "billing", "priority": "high", "sentiment": "negative"}'


def test_exact_match_ignores_surrounding_whitespace():
    assert score("Paris", "  Paris\n") == {"exact": True, "json_expected": False}
    assert score("Paris", "paris")["exact"] is False


def test_plain_text_answers_have_no_json_scores():
    s = score("The answer is 4.", "It is 4.")
    assert s == {"exact": False, "json_expected": False}


def test_json_answer_fully_right():
    s = score(EXPECTED, '{"sentiment": "negative", "priority": "high", "category": "billing"}')
    assert s == {"exact": False, "json_expected": True, "json_valid": True, "fields": 3, "fields_matched": 3}


def test_json_answer_partly_right():
    s = score(EXPECTED, '{"category": "billing", "priority": "low"}')
    assert s["json_valid"] is True
    assert (s["fields"], s["fields_matched"]) == (3, 1)


def test_non_json_answer_to_a_json_question():
    s = score(EXPECTED, "The category is billing.")
    assert s == {"exact": False, "json_expected": True, "json_valid": False, "fields": 3, "fields_matched": 0}


def test_truncated_json_is_not_valid():
    s = score(EXPECTED, '{"category": "billing", "prio')
    assert s["json_valid"] is False and s["fields_matched"] == 0


@pytest.mark.parametrize(
    "output",
    [
        "```json\n" + EXPECTED + "\n```",
        "```JSON\n" + EXPECTED + "\n```",
        "```\n" + EXPECTED + "\n```",
        "  ```json\n" + EXPECTED + "\n```  \n",
    ],
)
def test_code_fenced_json_is_accepted(output):
    s = score(EXPECTED, output)
    assert s["json_valid"] is True and s["fields_matched"] == 3
    assert s["exact"] is False


def test_one_line_code_fence_does_not_crash_scoring():
    s = score(EXPECTED, "```json " + EXPECTED + "```")
    assert s["json_expected"] is True  # valid or not, scoring must not raise


@pytest.mark.parametrize("output", ["[1, 2, 3]", '"billing"', "42", "null", '[{"category": "billing"}]'])
def test_json_that_is_not_an_object_is_not_valid(output):
    s = score(EXPECTED, output)
    assert s["json_valid"] is False
    assert s["fields_matched"] == 0


def test_expected_json_list_is_not_a_json_task():
    assert score("[1, 2]", "[1, 2]") == {"exact": True, "json_expected": False}


def test_parse_json_object():
    assert parse_json_object('{"a": 1}') == {"a": 1}
    assert parse_json_object('```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_json_object("[1]") is None
    assert parse_json_object("not json") is None
    assert parse_json_object("") is None


def test_field_values_must_be_equal():
    s = score('{"quantity": 6, "unit_price": 12.49}', '{"quantity": "6", "unit_price": 12.49}')
    assert s["fields_matched"] == 1  # "6" is not 6


def test_json_booleans_do_not_match_numbers():
    s = score('{"in_stock": true, "quantity": 1}', '{"in_stock": 1, "quantity": true}')
    assert s["fields_matched"] == 0


def test_summarize_plain_text_answers():
    scores = [score("a", "a"), score("b", "x"), score("c", "c"), score("d", "d")]
    assert summarize(scores) == {"examples": 4, "exact_match": 0.75}


def test_summarize_json_answers():
    scores = [
        score(EXPECTED, EXPECTED),  # 3/3, exact
        score(EXPECTED, '{"category": "billing"}'),  # 1/3
        score(EXPECTED, "no idea"),  # invalid, 0/3
        score('{"a": 1}', '```json\n{"a": 1}\n```'),  # 1/1
    ]
    out = summarize(scores)
    assert out["examples"] == 4
    assert out["exact_match"] == 0.25
    assert out["json_valid"] == 0.75
    assert out["field_match"] == round(5 / 10, 4)


def test_summarize_mixed_only_counts_json_rows_for_json_metrics():
    scores = [score(EXPECTED, EXPECTED), score("plain", "other")]
    out = summarize(scores)
    assert out["json_valid"] == 1.0 and out["field_match"] == 1.0
    assert out["exact_match"] == 0.5


def test_summarize_nothing():
    assert summarize([]) == {"examples": 0, "exact_match": 0.0}


def test_load_predictions(tmp_path):
    assert load_predictions(tmp_path) == []
    path = tmp_path / PREDICTIONS
    path.parent.mkdir()
    rows = [{"line": 1, "expected": "a"}, {"line": 2, "expected": "b\u2028c"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n", encoding="utf-8")
    assert load_predictions(tmp_path) == rows


@pytest.mark.slow
def test_the_batched_comparison_answers_as_one_row_at_a_time_does(bundled_dir, tokenizer):
    """What the comparison measures is what the model does when asked one question at a time (as it is
    when served): on 13 held-out rows of the sample tickets that span their lengths (the shortest, the
    longest and every third between: batches that pad each length), in float32, the batched, length-sorted
    generation gives the same answers as a plain per-row loop."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tunewiz.core.config import RunConfig
    from tunewiz.core.data import dataset as data
    from tunewiz.core.judging import evaluate
    from tunewiz.core.models.loading import answer_budget, end_of_turn_ids, load_base

    from tests.conftest import SAMPLE

    cfg = RunConfig()
    _, held_out = data.split(data.load(SAMPLE / "support_tickets.jsonl").examples, 0.1, cfg.data.split_seed)
    pairs = sorted((data.prompt_and_answer(e.messages) for e in held_out), key=lambda pa: len(str(pa[0])))
    assert len(pairs) == 36  # every held-out row is a candidate
    prompts, expected = zip(*[*pairs[:-1:3], pairs[-1]], strict=True)  # 13 rows, the shortest to the longest
    budget = answer_budget(tokenizer, expected)
    torch.manual_seed(0)
    model = get_peft_model(
        load_base(bundled_dir, "float32", for_training=False), LoraConfig(r=8, target_modules="all-linear")
    )
    with torch.no_grad():  # a small random change of the answers, as a short training makes
        for name, w in model.named_parameters():
            if "lora_B" in name:
                w.normal_(0, 0.02)
    model.eval()
    stop = end_of_turn_ids(model, tokenizer)

    def one_at_a_time() -> list[str]:
        out = []
        for p in prompts:
            enc = tokenizer.apply_chat_template(
                list(p), add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            with torch.no_grad():
                gen = model.generate(**enc, max_new_tokens=budget, do_sample=False, eos_token_id=stop)
            out.append(tokenizer.decode(gen[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
        return out

    tuned, _ = evaluate.generate(model, tokenizer, list(prompts), budget)
    assert tuned == one_at_a_time()  # the base pass is the same code with the adapter disabled
    with model.disable_adapter():
        base, _ = evaluate.generate(model, tokenizer, list(prompts[:6]), budget)
    assert len(prompts) == 13 and tuned[:6] != base  # the adapter changed answers
