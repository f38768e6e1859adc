"""The `tunewiz` commands: one `cmd_*` function per sub-command, each a thin layer over core/, grouped
by what they work on. tunewiz.tui.cli parses the arguments and calls them; nothing else does.

Every command takes the parsed arguments and returns the exit code. Errors a user can act on are
raised as TunewizError (UserError for a command-line mistake); the CLI prints their message, and
nothing else.

Owns, one module each:

    request     arguments into a request (RunConfig): the data flags, train, sweep, fit, probe; UserError
    shared      what several groups use: warnings, a record's summary, the sample data, the data's shape
    screens     the commands that open the app: wizard, history, review (and run_app, for attach and chat)
    training    train (--dry-run, --queue), queue, sweep, demo, stop, resume, attach; launch, follow_run
    records     runs (the runs table), show, repair
    data        lint, preview
    planning    hw, fit, probe, recommend, settings
    chat        chat, and its plain loop on stdin and stdout
    export      eval, export

An import leads to its file: import a name from the module that owns it (and patch it there in a
test). The names this module had before it became a package still resolve here, on first use, for
callers written before the split; this package imports none of its modules itself.
"""

from __future__ import annotations

import importlib

_OWNERS = {
    "UserError": "request",
    "apply_data_args": "request",
    "data_request": "request",
    "build_config": "request",
    "warn": "shared",
    "print_record_summary": "shared",
    "sample_data": "shared",
    "data_shape_of": "shared",
    "run_app": "screens",
    "cmd_wizard": "screens",
    "cmd_history": "screens",
    "cmd_review": "screens",
    "launch": "training",
    "follow_run": "training",
    "cmd_train": "training",
    "cmd_dry_run": "training",
    "queued_line": "training",
    "cmd_queue": "training",
    "cmd_sweep": "training",
    "cmd_demo": "training",
    "cmd_stop": "training",
    "cmd_resume": "training",
    "cmd_attach": "training",
    "cmd_runs": "records",
    "runs_table": "records",
    "cmd_show": "records",
    "show_damaged": "records",
    "cmd_repair": "records",
    "max_seq_len_of": "data",
    "cmd_lint": "data",
    "preview_lines": "data",
    "cmd_preview": "data",
    "cmd_hw": "planning",
    "settings_lines": "planning",
    "cmd_settings": "planning",
    "cmd_fit": "planning",
    "cmd_probe": "planning",
    "cmd_recommend": "planning",
    "CHAT_HELP": "chat",
    "cmd_chat": "chat",
    "chat_plain": "chat",
    "cmd_eval": "export",
    "cmd_export": "export",
}
"""Each name of the one-file tunewiz.tui.commands -> the module that owns it now."""


def __getattr__(name: str):
    """`tunewiz.tui.commands.NAME` as before the split: the name read from the module that owns it."""
    owner = _OWNERS.get(name)
    if owner is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{owner}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_OWNERS})
