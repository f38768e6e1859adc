"""TOML read and atomic write, shared by every module that touches a record."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

import tomli_w

__all__ = ["tomllib", "read_toml", "write_toml_atomic", "clean_for_toml", "dumps"]

# An array tomli_w writes one element per line, each a plain value (no table, array or comment).
_ARRAY = re.compile(r"^(?P<key>[^\n]* = )\[\n(?P<items>(?:    [^\n\[\]{}#]*,\n)+)\]$", re.MULTILINE)
ARRAY_WIDTH = 76  # the review step shows the record in 78 columns at 80x24


def read_toml(path: str | Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def clean_for_toml(value: Any) -> Any:
    """Drop None values (TOML has no null) and turn paths and tuples into TOML types."""
    if isinstance(value, dict):
        return {str(k): clean_for_toml(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [clean_for_toml(v) for v in value if v is not None]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and value != value:  # NaN has no TOML spelling readers agree on
        return "nan"
    return value


def dumps(doc: dict[str, Any]) -> str:
    """`doc` as TOML (tomli_w), with each short array of plain values on one line, as a person writes it
    (`target_modules = ["q_proj", "v_proj"]`), rather than one element per line; a line stays within
    ARRAY_WIDTH columns, and the text always reads back as the same document.

    >>> print(dumps({"training": {"target_modules": ["q_proj", "v_proj"], "lr": 0.0002}}), end="")
    [training]
    target_modules = ["q_proj", "v_proj"]
    lr = 0.0002
    """
    text = tomli_w.dumps(clean_for_toml(doc))

    def one_line(m: re.Match) -> str:
        items = [line.strip().removesuffix(",") for line in m["items"].splitlines()]
        line = f"{m['key']}[{', '.join(items)}]"
        return line if len(line) <= ARRAY_WIDTH else m[0]

    short = _ARRAY.sub(one_line, text)
    return short if tomllib.loads(short) == tomllib.loads(text) else text


def write_toml_atomic(path: str | Path, doc: dict[str, Any]) -> None:
    """Write `doc` so that readers see either the old file or the new one, never half.

    The text goes to a temporary file in the same directory, is flushed to disk,
    and replaces the target with one rename.
    """
    path = Path(path)
    text = dumps(doc)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
