"""`tunewiz chat RUN`: the chat screen, or the plain question-and-answer loop on stdin and stdout
(chat_plain) when there is no terminal or --plain is given.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tunewiz.core.bookkeeping import runs
from tunewiz.tui.commands.screens import run_app

CHAT_HELP = (
    "Each line is a question. /base and /tuned switch the model that answers, /again asks the last "
    "question again with the other one, /reset forgets the conversation, /quit ends."
)


def cmd_chat(ns) -> int:
    """`tunewiz chat RUN`: the chat screen, or with --plain (or no terminal) questions from stdin."""
    from tunewiz.core.judging.chat import ChatOptions, require_adapter

    run_dir = runs.find_run(runs.home(ns.home), ns.run)
    options = ChatOptions(ns.max_new_tokens, ns.temperature, ns.top_p, ns.seed)  # ChatError: said by main
    require_adapter(run_dir)  # before loading anything
    if ns.plain or not sys.stdout.isatty() or not sys.stdin.isatty():  # piped questions: plain text too
        return chat_plain(run_dir, options)
    return run_app(ns, start="chat", run=run_dir, chat_options=options)


def chat_plain(run_dir: Path, options) -> int:
    """Questions from stdin, one a line; each answer printed to stdout as it streams, then a newline.
    What is not an answer (loading, the mode, timings) goes to stderr, so a script reads answers only."""
    import warnings

    from tunewiz.core.judging.chat import ChatError, ChatSession

    def note(line: str, end: str = "\n") -> None:
        print(line, file=sys.stderr, end=end, flush=True)

    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices, not the user's
    note(f"loading the model of {run_dir.name} ...")
    session = ChatSession.for_run(run_dir, options)
    note(f"chatting with {run_dir.name}: fine-tuned model, {options.describe()}, on {session.device}. {CHAT_HELP}")
    if session.system:
        note(f"system prompt: {session.system}")
    if session.note:
        note(session.note)
    interactive = sys.stdin.isatty()
    adapter, asked_with = True, True
    while True:
        if interactive:
            note(f"{'tuned' if adapter else 'base'}> ", end="")
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            note("")
            return 0
        if not line:
            return 0
        text = line.strip()
        again = False
        if text.startswith("/"):
            word = text[1:].lower()
            if word in ("quit", "exit", "q"):
                return 0
            if word in ("base", "tuned"):
                adapter = word == "tuned"
                note(f"now asking the {'fine-tuned' if adapter else 'base'} model")
            elif word == "reset":
                session.reset()
                note("conversation cleared" + (" (the system prompt stays)" if session.system else ""))
            elif word != "again":
                note(f"unknown command {text}. {CHAT_HELP}")
            if word != "again":
                continue
            again = True
        if not text:
            continue
        which = not asked_with if again else adapter
        if again or not interactive:
            note(f"[{'fine-tuned' if which else 'base'}]")
        try:
            for piece in session.again(which) if again else session.reply(text, which):
                print(piece, end="", flush=True)
        except ChatError as exc:
            note(f"tunewiz: {exc}")
            continue
        except KeyboardInterrupt:
            print(flush=True)
            note("(stopped)")
            continue
        asked_with = which
        print(flush=True)
        if interactive:
            note(f"({session.last.describe(options.max_new_tokens)})")
