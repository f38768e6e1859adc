"""tunewiz engine: everything that fine-tunes, evaluates and records, with no UI.

Heavy libraries (torch, transformers, peft, trl, datasets) are imported inside
the functions that need them, never at module import time, so the wizard and
the CLI start fast.
"""

__version__ = "0.1.0"
