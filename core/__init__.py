"""tunewiz engine: everything that fine-tunes, evaluates and records, with no UI.

Heavy libraries (torch, transformers, peft, trl, datasets) are imported inside
the functions that need them, never at module import time, so the wizard and
the CLI start fast.

Rooms, lowest first; a room imports only the rooms above it in this list (tests/test_import_contract.py):

    models/       which model, where it lives, loading it
    planning/     the hardware and every training decision (a pure planner)
    data/         the user's examples: read, lint, render with the loss mask
    bookkeeping/  run directories: run.toml, events, checkpoints, repair, notify
    judging/      base vs fine-tuned: evaluation, metrics, the blind review, chat
    training/     the training process, starting / stopping / following it, the queue, the sweep
    shipping/     exports: merged, GGUF (checked by llama.cpp), Ollama Modelfiles

Shared by every room: config (the user's request), errors, toml, units, detach.

An import leads to its file: ``tunewiz.core.ROOM.MODULE`` is ``core/ROOM/MODULE.py`` and
``tunewiz.tui.MODULE`` is ``tui/MODULE.py`` (the installed name ``tunewiz`` stands for the checkout).
"""

import importlib.metadata

try:  # the version is defined once, in pyproject.toml
    __version__ = importlib.metadata.version("tunewiz")
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
