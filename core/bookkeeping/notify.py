"""Saying that a run ended: a terminal alert for whoever is watching, and the run's `[notify] command`.

* The terminal alert (:func:`terminal_alert`): BEL, then a desktop notification as OSC 9 (iTerm2,
  WezTerm, Ghostty, ...) and OSC 777 (foot, rxvt-unicode, some VTE terminals, ...); a terminal ignores
  the one it does not know. Inside tmux the two OSC sequences go through tmux's passthrough
  (``set -g allow-passthrough on``); the BEL goes to tmux itself, which flags the window. The train
  screen and ``tunewiz attach --plain`` write it when they see a run they watch end.
* The command (:func:`spawn`): the program of ``[notify] command``, run once per end of a run, in its own
  session with stdin from /dev/null and its output appended to train.log. It is an argument list, run
  without a shell: the run's facts reach it only as environment variables (:func:`environment`), never
  as text pasted into a command line. ``runs.notify_end`` decides "once" under the record's lock.

Plain Python: nothing here reads or writes a record.
"""

from __future__ import annotations

import os
import re
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from tunewiz.core import detach
from tunewiz.core.bookkeeping.record import Record
from tunewiz.core.judging.metrics import headline_text

ENV_VARS = (
    "TUNEWIZ_RUN_ID",
    "TUNEWIZ_RUN_NAME",
    "TUNEWIZ_RUN_DIR",
    "TUNEWIZ_STATUS",
    "TUNEWIZ_HEADLINE",
    "TUNEWIZ_METRIC",
    "TUNEWIZ_METRIC_VALUE",
    "TUNEWIZ_REASON",
    "TUNEWIZ_SUMMARY",
)
"""What a notify command is told (README: Notifications); each is set, empty when it does not apply."""

BASE_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "TERM",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XDG_RUNTIME_DIR",
    "DBUS_SESSION_BUS_ADDRESS",
)
"""What a notify program gets of the training process's environment by default: enough to run and to
reach the desktop (notify-send), nothing secret. `[notify] pass_env` names more."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def one_line(text: str, limit: int = 200) -> str:
    """`text` as one line of at most `limit` characters, without control characters (an escape or a BEL
    inside a notification's text would end it early, or start another sequence).

    >>> one_line("loss\\n0.12\\x1b]0;x\\x07 done", 40)
    'loss 0.12 ]0;x done'
    """
    text = " ".join(_CONTROL.sub(" ", str(text)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def metric(results: dict[str, Any]) -> tuple[str, str]:
    """(name, value) of the run's headline figure: the fine-tuned model's held-out headline (a share,
    0 to 1) when the run was compared with its base, else its eval loss, else its train loss.

    >>> metric({"train_loss": 1.5, "finetuned": {"kind": "json", "headline": "field_match", "field_match": 0.875}})
    ('field_match', '0.875')
    >>> metric({"train_loss": 1.5, "eval_loss": 1.25})
    ('eval_loss', '1.25')
    >>> metric({})
    ('', '')
    """
    ft = results.get("finetuned") if isinstance(results.get("finetuned"), dict) else {}
    key = ft.get("headline")
    if key and isinstance(ft.get(key), (int, float)):
        return str(key), str(ft[key])
    for key in ("eval_loss", "train_loss"):
        if isinstance(results.get(key), (int, float)):
            return key, str(results[key])
    return "", ""


def summary(rec: Record) -> str:
    """The end of a run in one line: the held-out headline, else the losses; for a failed or crashed run,
    why; for a stopped one, where.

    >>> R = Record.from_dict
    >>> summary(R({"run": {"status": "completed"}, "results": {"train_loss": 0.51234, "eval_loss": 0.61}}))
    'train loss 0.5123, eval loss 0.6100'
    >>> summary(R({"run": {"status": "crashed", "failure_reason": "the training process ended (last step 3)"}}))
    'the training process ended (last step 3)'
    >>> summary(R({"run": {"status": "stopped", "stopped_at_step": 7}, "results": {"train_loss": 2.0}}))
    'stopped at step 7; train loss 2.0000'
    """
    run, res = rec.run, rec.results.to_dict()
    if run.status in ("failed", "crashed"):
        return one_line(run.failure_reason or run.status or "")
    text = headline_text(res)
    if not text:
        losses = [
            f"{k.replace('_', ' ')} {res[k]:.4f}"
            for k in ("train_loss", "eval_loss")
            if isinstance(res.get(k), (int, float))
        ]
        text = ", ".join(losses)
    if run.status == "stopped":
        where = f"stopped at step {run.stopped_at_step}" if run.stopped_at_step is not None else "stopped"
        text = f"{where}; {text}" if text else where
    return one_line(text)


def title(rec: Record) -> str:
    """The notification's title: 'tunewiz: NAME completed'.

    >>> title(Record.from_dict({"run": {"id": "20300101-000000-tiny", "name": "tiny", "status": "failed"}}))
    'tunewiz: tiny failed'
    """
    run = rec.run
    return one_line(f"tunewiz: {run.name or run.id or '?'} {run.status or '?'}", 80)


def environment(rec: Record, run_dir: str | Path) -> dict[str, str]:
    """The TUNEWIZ_* variables a notify command gets (ENV_VARS), from the run's final record.

    >>> env = environment(Record.from_dict({"run": {"id": "r1", "name": "tiny", "status": "completed"},
    ...                    "results": {"train_loss": 0.5}}), "/runs/r1")
    >>> env["TUNEWIZ_STATUS"], env["TUNEWIZ_METRIC"], env["TUNEWIZ_METRIC_VALUE"], env["TUNEWIZ_HEADLINE"]
    ('completed', 'train_loss', '0.5', '')
    """
    run, res = rec.run, rec.results.to_dict()
    name, value = metric(res)
    return {
        "TUNEWIZ_RUN_ID": run.id or Path(run_dir).name,
        "TUNEWIZ_RUN_NAME": run.name or "",
        "TUNEWIZ_RUN_DIR": str(run_dir),
        "TUNEWIZ_STATUS": run.status or "",
        "TUNEWIZ_HEADLINE": headline_text(res),
        "TUNEWIZ_METRIC": name,
        "TUNEWIZ_METRIC_VALUE": value,
        "TUNEWIZ_REASON": one_line(run.failure_reason or "", 1000),
        "TUNEWIZ_SUMMARY": summary(rec),
    }


def base_environment(
    pass_env: list[str] | tuple[str, ...] = (), source: dict[str, str] | None = None
) -> dict[str, str]:
    """The part of `source` (this process's environment) a notify program inherits: BASE_ENV and the
    names in `pass_env`, nothing else (a token in the environment stays with tunewiz).

    >>> base_environment(["WEBHOOK"], {"PATH": "/bin", "HF_TOKEN": "s3cret", "WEBHOOK": "https://x"})
    {'PATH': '/bin', 'WEBHOOK': 'https://x'}
    """
    source = os.environ if source is None else source
    return {k: source[k] for k in (*BASE_ENV, *pass_env) if k in source}


def spawn(
    command: list[str], env: dict[str, str], run_dir: str | Path, log_path: str | Path, pass_env: list[str] = ()
) -> int | None:
    """Start `command` (an argument list: no shell) detached, with `env` added to the part of this
    process's environment it may see (:func:`base_environment`), in `run_dir`, stdin from /dev/null,
    stdout and stderr appended to `log_path`. Returns
    its pid; None when it could not start, which is said in one line of the log and raises nothing.
    It is not waited for (a thread reaps it when it exits)."""
    stamp = datetime.now().strftime("%H:%M:%S")
    try:
        with open(log_path, "ab") as log:
            log.write(f"{stamp} INFO notify: running {command[0]} (run {env.get('TUNEWIZ_STATUS', '')})\n".encode())
        proc = detach.spawn(command, log_path, run_dir, {**base_environment(pass_env), **env})
    except (OSError, ValueError, IndexError) as exc:
        what = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        line = f"{stamp} WARNING notify: [notify] command {command!r} could not start: {what}\n"
        try:
            with open(log_path, "a", encoding="utf-8") as log:
                log.write(line)
        except OSError:
            pass
        return None
    threading.Thread(target=proc.wait, name="notify-reaper", daemon=True).start()
    return proc.pid


# -- the terminal --------------------------------------------------------------------------------------

BEL = "\x07"


def tmux_passthrough(seq: str) -> str:
    """`seq` wrapped in tmux's DCS passthrough (its escapes doubled), so tmux hands it to the terminal.

    >>> tmux_passthrough("\\x1b]9;hi\\x07")
    '\\x1bPtmux;\\x1b\\x1b]9;hi\\x07\\x1b\\\\'
    """
    return "\x1bPtmux;" + seq.replace("\x1b", "\x1b\x1b") + "\x1b\\"


def desktop_sequences(title_text: str, body: str, tmux: bool = False) -> str:
    """OSC 9 (`title: body`) then OSC 777 (title and body apart), each through tmux when `tmux`.

    >>> desktop_sequences("tunewiz: tiny completed", "loss 0.5")
    '\\x1b]9;tunewiz: tiny completed: loss 0.5\\x07\\x1b]777;notify;tunewiz: tiny completed;loss 0.5\\x07'
    """
    head = one_line(title_text, 80).replace(";", ",")  # OSC 777 splits its fields at ';'
    text = one_line(body)
    whole = f"{head}: {text}" if text else head
    seqs = [f"\x1b]9;{whole}\x07", f"\x1b]777;notify;{head};{text}\x07"]
    return "".join(tmux_passthrough(s) if tmux else s for s in seqs)


def terminal_alert(title_text: str, body: str, tmux: bool | None = None) -> str:
    """BEL and the desktop notification sequences, for a terminal that watched a run end. `tmux`: inside
    tmux ($TMUX set) when None. The BEL is never wrapped: tmux rings it and flags the window itself.

    >>> terminal_alert("t", "b", tmux=False)
    '\\x07\\x1b]9;t: b\\x07\\x1b]777;notify;t;b\\x07'
    """
    if tmux is None:
        tmux = bool(os.environ.get("TMUX"))
    return BEL + desktop_sequences(title_text, body, tmux)
