"""Chatting with a trained run: the session streams, the adapter toggle reaches the base model, the
chat screen at 80x24 and `tunewiz chat --plain`.

One tiny run is trained for real (a 2-layer random model, a high learning rate, a repetitive answer)
so its adapter changes what it says; every slow test here shares it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tunewiz.core.bookkeeping import runs
from tunewiz.core.judging.chat import ChatError, ChatOptions, ChatSession
from tunewiz.core.training import launcher
from tunewiz.tui import cli, commands
from tunewiz.tui.app import create_app

from tests.conftest import HANG_S, ROOT, chat_row, write_jsonl
from tests.test_app import SIZE, make_run, wait_until
from tests.test_training import tiny_config

SYSTEM = "You are the banana oracle."
ANSWER = "The answer is always banana, my friend."
QUESTION = "What colour is the sky?"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir) -> Path:
    """A completed tiny run whose adapter answers every question with ANSWER."""
    home = tmp_path_factory.mktemp("chat-home")
    topics = ["the sky", "grass", "the sea", "snow", "a lemon", "coal", "blood", "the sun"]
    rows = [chat_row(f"What colour is {t}? ({i})", ANSWER, system=SYSTEM) for i in range(3) for t in topics]
    data = write_jsonl(tmp_path_factory.mktemp("chat-data") / "banana.jsonl", rows)
    cfg = tiny_config(tiny_model_dir, data, max_steps=30, learning_rate=1e-2, warmup_ratio=0.0)
    cfg.evaluation.enabled = False
    run_dir = commands.launch(cfg.validate(), home)
    doc = launcher.wait(run_dir, timeout=HANG_S).to_dict()
    assert doc["run"]["status"] == "completed", (run_dir / runs.LOG).read_text()[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def session(trained) -> ChatSession:
    return ChatSession.for_run(trained, ChatOptions(max_new_tokens=24))


@pytest.fixture(scope="module")
def reference(session):
    """Greedy answers to [system, QUESTION] from the same PEFT model, adapter off and on, the way
    evaluation generates them (core.modeling.greedy): what the chat must reproduce."""
    from tunewiz.core.models.loading import greedy

    prompt = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]]
    stop = session.stop_ids
    with session.model.disable_adapter():
        (base,) = greedy(session.model, session.tok, prompt, 24, stop)
    (tuned,) = greedy(session.model, session.tok, prompt, 24, stop)
    # As the user reads them (stripped), and as they stream (the raw text `--plain` prints).
    raw = {
        "base": session.tok.decode(base, skip_special_tokens=True),
        "tuned": session.tok.decode(tuned, skip_special_tokens=True),
    }
    return {**{k: v.strip() for k, v in raw.items()}, "raw": raw, "base_tokens": len(base)}


@pytest.mark.slow
def test_replies_stream_and_the_adapter_toggle_asks_the_base_model(session, reference):
    session.reset()
    assert session.system == SYSTEM and session.messages == [{"role": "system", "content": SYSTEM}]
    pieces = list(session.reply(QUESTION))
    tuned = "".join(pieces).strip()
    assert len(pieces) > 1, pieces  # streamed, not one block at the end
    assert tuned == reference["tuned"] and "banana" in tuned
    assert 0 < session.last.tokens <= 24 and session.last.seconds > 0
    assert [m["role"] for m in session.messages] == ["system", "user", "assistant"]

    # The same question with the adapter off: the base model's greedy answer, not the fine-tuned one.
    session.reset()
    base = "".join(session.reply(QUESTION, adapter=False)).strip()
    assert base == reference["base"]
    assert base != tuned and "banana" not in base

    # Asked again with the other model: the new answer replaces the last one, the question stays once.
    again = "".join(session.again(adapter=True)).strip()
    assert again == tuned
    assert [m["content"] for m in session.messages] == [SYSTEM, QUESTION, tuned]

    # Multi-turn: the second question sees the first exchange.
    "".join(session.reply("And grass?"))
    assert [m["role"] for m in session.messages] == ["system", "user", "assistant", "user", "assistant"]
    with pytest.raises(ChatError, match="nothing to send"):
        list(session.reply("   "))


@pytest.mark.slow
def test_the_context_keeps_the_system_prompt_and_drops_the_oldest_turns(session):
    session.reset()
    full = session.max_context
    try:
        for i in range(3):
            "".join(session.reply(f"Question number {i}: what colour is the sky?"))
        one_exchange = session.prompt_tokens(session.messages[:3])
        session.max_context = one_exchange + 40 + session.options.max_new_tokens
        "".join(session.reply("Last question?"))
        assert session.dropped >= 2
        assert session.messages[0] == {"role": "system", "content": SYSTEM}
        assert session.messages[-2]["content"] == "Last question?"
        assert session.prompt_tokens(session.messages[:-1]) + session.options.max_new_tokens <= session.max_context
        session.max_context = 20
        with pytest.raises(ChatError, match="too long"):
            list(session.reply("x " * 50))
    finally:
        session.max_context = full
        session.reset()


@pytest.mark.slow
def test_stop_ends_an_answer_early_and_keeps_what_it_wrote(session):
    session.reset()
    slow = session.model.get_base_model().register_forward_pre_hook(lambda *a: time.sleep(0.05))
    try:
        stream = session.reply(QUESTION, adapter=False)  # the base model does not stop on its own
        first = next(stream)
        session.stop()
        rest = "".join(stream)
    finally:
        slow.remove()
    assert session.last.cancelled and session.last.tokens < 24
    assert "stopped" in session.last.describe(24)
    assert session.messages[-1] == {"role": "assistant", "content": (first + rest).strip()}
    session.reset()


def test_a_run_without_an_adapter_is_refused_before_anything_loads(home, tmp_path, capsys):
    run_dir = make_run(home, tmp_path, "no-adapter", "failed")
    with pytest.raises(ChatError, match="no saved adapter"):
        ChatSession.for_run(run_dir)
    assert cli.main(["--home", str(home), "chat", run_dir.name]) == 2
    err = capsys.readouterr().err
    assert "no-adapter has no saved adapter (status failed)" in err and "tunewiz resume" in err
    assert cli.main(["--home", str(home), "chat", run_dir.name, "--temperature", "-1"]) == 2
    assert "temperature -1.0: give 0 (greedy) to 5" in capsys.readouterr().err


async def grows_while_streaming(pilot, screen, turn_index: int, timeout: float = HANG_S) -> list[str]:
    """The answer's text, sampled between pauses until it is done."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = screen.turns[turn_index].text if len(screen.turns) > turn_index else ""
        if not seen or text != seen[-1]:
            seen.append(text)
        if not screen.busy and len(screen.turns) > turn_index:
            return seen
        await pilot.pause(0.05)
    raise AssertionError("the answer did not finish in time")


@pytest.mark.slow
def test_chat_screen_at_80x24_streams_and_switches_to_the_base(trained, reference):
    async def run() -> None:
        app = create_app(trained.parent.parent, start="chat", run=trained, chat_options=ChatOptions(max_new_tokens=24))
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            assert type(screen).__name__ == "ChatScreen"
            assert "loading the model" in str(screen.query_one("#chat-status").render())
            await wait_until(pilot, lambda: screen.session is not None)
            assert "adapter on" in str(screen.query_one("#chat-status").render())
            # Slow each decoding step down so the pauses see the answer grow token by token.
            inner = screen.session.model.get_base_model()  # what generate() calls once per token
            hook = inner.register_forward_pre_hook(lambda *a: time.sleep(0.08))
            try:
                await pilot.press(*QUESTION, "enter")
                n = len(screen.turns)
                assert screen.busy and screen.turns[-2].text == QUESTION
                seen = await grows_while_streaming(pilot, screen, n - 1)
                assert len([s for s in seen if s]) >= 3, seen  # it grew over several pauses
                assert screen.turns[-1].who == "tuned" and screen.turns[-1].text == reference["tuned"]
                await pilot.pause(0.2)
                assert "Fine-tuned: " + reference["tuned"] in screen.transcript()

                await pilot.press("ctrl+b")
                assert "adapter off" in str(screen.query_one("#chat-status").render())
                await pilot.press("ctrl+l")  # a fresh conversation: the base sees [system, QUESTION]
                await pilot.press(*QUESTION, "enter")
                await grows_while_streaming(pilot, screen, len(screen.turns) - 1)
                assert screen.turns[-1].who == "base" and screen.turns[-1].text == reference["base"]
                # The random base writes only blank lines: the log says so, with the base's token count.
                assert screen.turns[-1].after.startswith(f"a blank answer: {reference['base_tokens']} tokens")

                await pilot.press("ctrl+r")  # the same question, now the fine-tuned model
                await grows_while_streaming(pilot, screen, len(screen.turns) - 1)
                assert screen.turns[-1].who == "tuned" and screen.turns[-1].text == reference["tuned"]
                assert [t.who for t in screen.turns if t.who != "note"] == ["system", "user", "base", "tuned"]
            finally:
                hook.remove()
            await pilot.press("escape")
        assert app.return_code in (None, 0)

    asyncio.run(run())


@pytest.mark.slow
def test_plain_chat_reads_stdin_and_prints_the_answers(trained, reference):
    home = trained.parent.parent
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    questions = f"{QUESTION}\n/reset\n/base\n{QUESTION}\n"
    r = subprocess.run(
        [sys.executable, "-m", "tunewiz.tui.cli", "--home", str(home), "chat", trained.name, "--max-new-tokens", "24"],
        input=questions,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=HANG_S,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == reference["raw"]["tuned"] + "\n" + reference["raw"]["base"] + "\n"
    assert "loading the model" in r.stderr and "now asking the base model" in r.stderr
