"""tunewiz's terminal front-ends: the command line (tui.cli) and the Textual wizard.

Nothing here imports torch, transformers, peft, trl or datasets at import time.
"""
