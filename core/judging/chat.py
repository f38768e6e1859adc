"""Talking with a finished run's model: a multi-turn conversation, streamed token by token, with the
adapter on (the fine-tuned model) or off (the base model), so the same question can be put to both.

The conversation is rendered with the run's chat template (the tokenizer training saved beside the
adapter) and starts with the data's system prompt, the most common one of the training rows, so the
model sees what it was trained on. One PEFT model serves both answers: the base is the same model
under ``disable_adapter()``, as in evaluation.

:class:`ChatSession` raises :class:`ChatError` (a run with no adapter, an empty or too long message);
``torch`` and ``transformers`` are imported inside the functions that use them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewiz.core.errors import TunewizError

# transformers' "no limit" sentinel for tokenizer.model_max_length is 1e30: not a context length.
UNKNOWN_LENGTH = 1_000_000
FALLBACK_CONTEXT = 2048


class ChatError(TunewizError):
    """A chat that cannot start or a message that cannot be sent: what was wrong and what to do."""


@dataclass
class ChatOptions:
    """How answers are generated; greedy (the same answer every time) unless a temperature is set."""

    max_new_tokens: int = 256
    """Tokens an answer may take at most; it stops earlier at the end of the turn."""
    temperature: float = 0.0
    """0: greedy decoding; above 0: sampling, higher is more varied (0.7 is usual)."""
    top_p: float = 1.0
    """Sampling only: keep the smallest set of tokens whose probabilities add up to this (0.9 is usual)."""
    seed: int | None = None
    """Sampling only: a seed makes the sampled answers repeatable."""

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.max_new_tokens <= 4096:
            problems.append(f"max_new_tokens {self.max_new_tokens}: give 1 to 4096 (256 is the default)")
        if not 0 <= self.temperature <= 5:
            problems.append(f"temperature {self.temperature}: give 0 (greedy) to 5; 0.7 is usual for sampling")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p {self.top_p}: give a share above 0 and at most 1 (0.9 is usual)")
        if problems:
            raise ChatError("; ".join(problems))

    @property
    def sampling(self) -> bool:
        return self.temperature > 0

    def describe(self) -> str:
        """'greedy, up to 256 tokens' or 'sampling t=0.7 top-p 0.9, up to 256 tokens'.

        >>> ChatOptions().describe()
        'greedy, up to 256 tokens'
        >>> ChatOptions(temperature=0.7, top_p=0.9, max_new_tokens=64).describe()
        'sampling t=0.7 top-p 0.9, up to 64 tokens'
        """
        how = f"sampling t={self.temperature:g} top-p {self.top_p:g}" if self.sampling else "greedy"
        return f"{how}, up to {self.max_new_tokens} tokens"


@dataclass
class ReplyStats:
    """How the last answer went: tokens written, seconds, and whether it ended at the end of the turn
    (rather than at the token budget or because it was stopped)."""

    tokens: int = 0
    seconds: float = 0.0
    stopped_at_end: bool = False
    cancelled: bool = False

    def describe(self, budget: int) -> str:
        """
        >>> ReplyStats(12, 0.5, True).describe(256)
        '12 tokens in 0.5s'
        >>> ReplyStats(256, 4.0, False).describe(256)
        '256 tokens in 4.0s, cut at the 256-token budget'
        """
        text = f"{self.tokens} tokens in {self.seconds:.1f}s"
        if self.cancelled:
            return text + ", stopped"
        if not self.stopped_at_end and self.tokens >= budget:
            return text + f", cut at the {budget}-token budget"
        return text


def common_system_prompt(examples) -> str:
    """The system message most training rows start with ('' when none has one).

    >>> from tunewiz.core.data.dataset import Example
    >>> sys = lambda s: [{"role": "system", "content": s}, {"role": "user", "content": "q"}]
    >>> common_system_prompt([Example(1, "messages", sys("A")), Example(2, "messages", sys("B")),
    ...                       Example(3, "messages", sys("B")), Example(4, "messages", [])])
    'B'
    >>> common_system_prompt([Example(1, "messages", [{"role": "user", "content": "q"}])])
    ''
    """
    counts = Counter(e.messages[0]["content"] for e in examples if e.messages and e.messages[0].get("role") == "system")
    return counts.most_common(1)[0][0] if counts else ""


def training_system_prompt(cfg) -> tuple[str, str]:
    """The run's system prompt from its training rows (the same split training made), and a note when
    the data cannot be read any more (the chat then starts without one)."""
    from tunewiz.core.data import dataset as data_mod

    try:
        examples = data_mod.load_for(cfg.data).examples
        if not cfg.data.eval_path and len(examples) >= 2:
            examples = data_mod.split(examples, cfg.data.eval_fraction, cfg.data.split_seed)[0]
    except (OSError, TunewizError) as exc:
        return "", f"no system prompt: the training data cannot be read ({str(exc)[:120]})"
    return common_system_prompt(examples), ""


def require_adapter(run_dir: str | Path):
    """The run's parts (core.bookkeeping.finished); a ChatError that says what to do when it saved no adapter."""
    from tunewiz.core.bookkeeping import finished

    try:
        return finished.open_finished(run_dir)
    except finished.NoAdapter as exc:
        raise ChatError(str(exc)) from None


def context_limit(model, tok) -> int:
    """Tokens the model can attend to: its config's max_position_embeddings, else the tokenizer's
    model_max_length where that is a real length, else 2048."""
    conf = getattr(model, "config", None)
    n = getattr(conf, "max_position_embeddings", None)
    if isinstance(n, int) and 0 < n < UNKNOWN_LENGTH:
        return n
    n = getattr(tok, "model_max_length", None)
    if isinstance(n, int) and 0 < n < UNKNOWN_LENGTH:
        return n
    return FALLBACK_CONTEXT


class ChatSession:
    """A conversation with one model (adapter on) and its base (adapter off), one answer at a time.

    ``messages`` is exactly what the next answer sees: the system prompt (when the data has one),
    then user and assistant turns; the oldest turns are dropped when the conversation outgrows the
    model's context (``dropped`` counts them). :meth:`reply` and :meth:`again` are generators of
    text pieces, written as the model generates them; :meth:`stop` (from any thread) ends an answer
    early. Build one for a run with :meth:`for_run`.
    """

    def __init__(
        self,
        model,
        tok,
        system: str = "",
        options: ChatOptions | None = None,
        max_context: int | None = None,
        name: str = "",
    ) -> None:
        from tunewiz.core.models.loading import end_of_turn_ids

        self.model = model
        self.tok = tok
        self.system = system
        self.options = options or ChatOptions()
        self.max_context = max_context or context_limit(model, tok)
        self.name = name
        self.stop_ids = end_of_turn_ids(model, tok)
        self.messages: list[dict[str, str]] = []
        self.dropped = 0
        self.last = ReplyStats()
        self.device = str(next(model.parameters()).device)
        self.note = ""  # what the user should know about this session (no system prompt, and why)
        self._cancel = threading.Event()
        self._busy = threading.Lock()
        self.reset()

    @classmethod
    def for_run(cls, run_dir: str | Path, options: ChatOptions | None = None) -> ChatSession:
        """The run's adapter model (its base on this machine's plan device and dtype), the run's
        tokenizer and chat template, and the training data's system prompt. Seconds to load."""
        run = require_adapter(run_dir)  # before seconds of importing torch
        from transformers.utils import logging as hf_logging
        from tunewiz.core.models.loading import adapter_model, load_tokenizer

        hf_logging.disable_progress_bar()  # no "Loading weights" bar over the chat screen or the answers
        cfg = run.cfg
        device, dtype = run.placement()
        tok = load_tokenizer(run.tokenizer_dir, cfg.model.trust_remote_code)  # the chat template it learnt
        model = adapter_model(run.base_path, run.adapter_dir, dtype, cfg.model.trust_remote_code, device)
        system, note = training_system_prompt(cfg)
        session = cls(model, tok, system=system, options=options, name=Path(run_dir).name)
        session.note = note
        return session

    # -- the conversation -------------------------------------------------------------

    def reset(self) -> None:
        """Forget every turn; keep the system prompt."""
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.dropped = 0

    @property
    def turns(self) -> list[dict[str, str]]:
        """The user and assistant turns, without the system prompt."""
        return self.messages[1:] if self.system else list(self.messages)

    @property
    def last_question(self) -> str:
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")

    def prompt_tokens(self, messages: list[dict[str, str]] | None = None) -> int:
        return len(self._encode(self.messages if messages is None else messages)["input_ids"][0])

    def _encode(self, messages: list[dict[str, str]]):
        # The same rendering as evaluation's greedy answers: the template's text, then its tokens
        # (the template already wrote any BOS).
        text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tok(text, return_tensors="pt", add_special_tokens=False)

    def _fit(self) -> None:
        """Drop the oldest exchanges until the prompt and an answer's budget fit the context."""
        budget = self.max_context - self.options.max_new_tokens
        start = 1 if self.system else 0
        while self.prompt_tokens() > budget:
            rest = self.messages[start:]
            if len(rest) <= 1:  # only the new question is left
                n = self.prompt_tokens()
                raise ChatError(
                    f"this message is too long: the prompt takes {n} tokens and the model reads at most "
                    f"{self.max_context}, {self.options.max_new_tokens} of them kept for the answer; shorten it"
                )
            # One exchange: the oldest user turn and whatever answered it, up to the next user turn.
            cut = next((i for i in range(1, len(rest)) if rest[i]["role"] == "user"), len(rest) - 1)
            del self.messages[start : start + cut]
            self.dropped += 1

    def reply(self, text: str, adapter: bool = True) -> Iterator[str]:
        """Send `text` as the next user turn; yield the answer's pieces as they are generated (with the
        adapter, or from the base model with `adapter=False`), then keep the answer in the conversation."""
        text = text.strip()
        if not text:
            raise ChatError("nothing to send: type a question first")
        self.messages.append({"role": "user", "content": text})
        try:
            yield from self._answer(adapter)
        except BaseException:
            if self.messages and self.messages[-1]["role"] == "user":
                self.messages.pop()  # unanswered: the question is not part of the conversation
            raise

    def again(self, adapter: bool = True) -> Iterator[str]:
        """Ask the last question again (with the other model, say): its answer replaces the last one."""
        if not self.last_question:
            raise ChatError("nothing asked yet: send a question first")
        previous = None
        if self.messages[-1]["role"] == "assistant":
            previous = self.messages.pop()
        try:
            yield from self._answer(adapter)
        except BaseException:
            if previous is not None and self.messages[-1]["role"] == "user":
                self.messages.append(previous)
            raise

    def stop(self) -> None:
        """End the answer being written (safe from any thread); what was written so far is kept."""
        self._cancel.set()

    def _answer(self, adapter: bool) -> Iterator[str]:
        if not self._busy.acquire(blocking=False):
            raise ChatError("an answer is still being written: wait for it, or stop it first")
        try:
            self._fit()
            pieces: list[str] = []
            stream = self._stream(adapter)
            try:
                for piece in stream:
                    pieces.append(piece)
                    yield piece
            finally:
                stream.close()  # a reader that left early ends the generation now, not at garbage collection
            self.messages.append({"role": "assistant", "content": "".join(pieces).strip()})
        finally:
            self._busy.release()

    def _stream(self, adapter: bool) -> Iterator[str]:
        """model.generate in a thread, its text read from a TextIteratorStreamer as it is written."""
        import contextlib

        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        enc = {k: v.to(self.device) for k, v in self._encode(self.messages).items()}
        prompt_len = enc["input_ids"].shape[1]
        stats = ReplyStats()
        cancel = self._cancel
        cancel.clear()
        stop_ids = set(self.stop_ids)

        class Watch(StoppingCriteria):
            """Counts the tokens written and ends generation when asked to stop."""

            def __call__(self, input_ids, scores, **kwargs) -> Any:
                stats.tokens = input_ids.shape[1] - prompt_len
                stats.stopped_at_end = int(input_ids[0, -1]) in stop_ids
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        o = self.options
        streamer = TextIteratorStreamer(self.tok, skip_prompt=True, skip_special_tokens=True)
        kwargs: dict[str, Any] = dict(
            enc,
            max_new_tokens=o.max_new_tokens,
            do_sample=o.sampling,
            eos_token_id=self.stop_ids or None,
            pad_token_id=self.tok.pad_token_id if self.tok.pad_token_id is not None else (self.stop_ids or [0])[0],
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([Watch()]),
        )
        if o.sampling:
            kwargs.update(temperature=o.temperature, top_p=o.top_p)
        else:  # the model's own sampling defaults do not apply to a greedy answer
            kwargs.update(temperature=None, top_p=None, top_k=None)
        failed: list[BaseException] = []

        def run() -> None:
            try:
                if o.sampling and o.seed is not None:
                    torch.manual_seed(o.seed)
                off = self.model.disable_adapter() if not adapter else contextlib.nullcontext()
                with off, torch.no_grad():
                    self.model.generate(**kwargs)
            except BaseException as exc:  # noqa: BLE001 - raised again in the reading thread
                failed.append(exc)
                streamer.end()  # the reader would otherwise wait for text that never comes

        t0 = time.perf_counter()
        worker = threading.Thread(target=run, name="tunewiz-chat-generate", daemon=True)
        worker.start()
        finished = False
        try:
            for piece in streamer:
                if piece:
                    yield piece
            finished = True
        finally:
            asked = cancel.is_set() or not finished
            cancel.set()  # a reader that left early (or failed) ends the generation too
            worker.join()
            stats.cancelled = asked and not stats.stopped_at_end and not failed
            stats.seconds = time.perf_counter() - t0
            self.last = stats
        if failed:
            raise failed[0]
