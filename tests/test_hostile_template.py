"""A chat template cannot hang tunewiz (issue 24): a model's template is its author's code, and one with a
runaway loop is stopped after dataset.TEMPLATE_SECONDS and reported as a template finding."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from tunewiz.core.data import dataset as data
from tunewiz.core.data import lint
from tunewiz.tui import cli

from tests.conftest import chat_row, write_jsonl

HOSTILE = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ messages }}"
BOUND_S = 20.0  # TEMPLATE_SECONDS (5 s) once, the tokenizer's load, and room for a busy machine


def finishes(fn, *args):
    """fn(*args) in a thread, failing the test (not hanging it) when it has not returned after BOUND_S."""
    out: list = []
    worker = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    start = time.monotonic()
    worker.start()
    worker.join(BOUND_S)
    assert not worker.is_alive(), f"still running after {BOUND_S:g} s: a runaway template hangs it"
    assert out, "it raised (see the thread's traceback above)"
    return out[0], time.monotonic() - start


@pytest.fixture
def hostile_model(tmp_path, tokenizer, bundled_dir):
    """A local model folder (config.json and the bundled tokenizer) whose chat template never finishes."""
    folder = tmp_path / "hostile-model"
    folder.mkdir()
    shutil.copy(bundled_dir / "config.json", folder / "config.json")
    original = tokenizer.chat_template
    try:
        tokenizer.chat_template = HOSTILE
        tokenizer.save_pretrained(folder)
    finally:
        tokenizer.chat_template = original  # the fixture is shared by the whole session
    return folder


def test_lint_reports_a_runaway_template_in_bounded_time(tmp_path, hostile_model):
    tok = lint.load_tokenizer_of(hostile_model, str(hostile_model))
    assert tok.chat_template == HOSTILE
    path = write_jsonl(tmp_path / "d.jsonl", [chat_row(f"q{i}", f"a{i}") for i in range(30)])
    report, took = finishes(lint.lint, path, tok)
    assert took < BOUND_S
    found = [f for f in report.findings if f.rule == "template-error"]
    assert {f.line for f in found} == set(range(1, 31)) and not report.ok
    assert "did not finish rendering in 5 s (a runaway loop?)" in found[0].message
    assert "fix the template's loops" in found[0].message


def test_tunewiz_lint_on_a_local_model_with_a_runaway_template_ends(home, tmp_path, hostile_model, capsys):
    path = write_jsonl(tmp_path / "d.jsonl", [chat_row("q", "a"), chat_row("q2", "a2")])
    code, _ = finishes(cli.main, ["lint", str(path), "--model", str(hostile_model)])
    out = capsys.readouterr().out
    assert code == 1 and f"{path}:1: error [template-error] the model's chat template did not finish" in out


def test_a_runaway_template_is_stopped_in_a_worker_thread_too():
    """The app lints in worker threads, where signal.alarm cannot reach: the limit works there too."""

    class Tok:
        chat_template = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}x"

        def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            return ImmutableSandboxedEnvironment().from_string(self.chat_template).render(messages=messages)

    caught: list[BaseException] = []

    def work():
        try:
            data.render(Tok(), [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
        except data.TemplateError as exc:
            caught.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(BOUND_S)
    assert not worker.is_alive() and isinstance(caught[0], data.TemplateTimeout)


def test_a_quick_template_renders_as_before(tokenizer):
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert data.render(tokenizer, messages).text == tokenizer.apply_chat_template(messages, tokenize=False)
