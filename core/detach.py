"""Processes that outlive the terminal that started them: the trainer, the queue runner, a notify program.

Each runs in a new session (no controlling terminal, so a closed SSH connection sends it no SIGHUP), with
stdin from /dev/null and stdout/stderr appended to a log file.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path


def spawn(cmd: Sequence[object], log_path: Path, cwd: Path, env: Mapping[str, str]) -> subprocess.Popen:
    """Start `cmd` detached; its output is appended to `log_path`. Raises OSError when it cannot start."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [str(a) for a in cmd],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            cwd=str(cwd),
            env=dict(env),
        )
