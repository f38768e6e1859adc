"""tunewiz engine: everything that fine-tunes, evaluates and records, with no UI.

Heavy libraries (torch, transformers, peft, trl, datasets) are imported inside
the functions that need them, never at module import time, so the wizard and
the CLI start fast.
"""

import importlib.metadata

try:  # the version is defined once, in pyproject.toml
    __version__ = importlib.metadata.version("tunewiz")
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
