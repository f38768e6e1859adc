"""tunewiz's terminal front-ends: the command line (tui.cli parses, tui.commands runs) and the
Textual wizard (tui.app, one module per screen).

Nothing here imports torch, transformers, peft, trl or datasets at import time.
"""
