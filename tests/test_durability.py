"""Records survive writers killed at any point: run.toml is always readable."""

import os
import signal
import subprocess
import sys
import time

from tunewiz.core.bookkeeping import runs
from tunewiz.core.config import RunConfig
from tunewiz.core.toml import read_toml

from tests.conftest import ROOT

WRITER = """
import sys
from tunewiz.core.bookkeeping import runs
run_dir = sys.argv[1]
i = 0
while True:
    i += 1
    runs.update_record(run_dir, lambda rec: rec.results.update({"counter": i, "blob": "x" * (i % 5000)}))
"""


def test_killing_a_record_writer_never_leaves_an_unreadable_record(tmp_path):
    cfg = RunConfig()
    cfg.data.path = "data.jsonl"
    run_dir = runs.create_run(cfg, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    written = 0
    for i in range(15):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(run_dir)], env=env)
        time.sleep(0.3 + (i % 5) * 0.07)  # kill at varying points of a write
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        doc = read_toml(run_dir / runs.RECORD)  # must parse, every time
        assert doc["run"]["status"] == "queued"
        blob = doc.get("results", {}).get("blob", "")
        assert blob == "x" * len(blob)  # never a mix of two writes
        written = max(written, doc.get("results", {}).get("counter", 0))
    assert written > 0
    # Temp files of killed writers are dot-files; the record itself is never one of them.
    assert (run_dir / runs.RECORD).is_file()


def test_disk_full_is_reported_in_words():
    import errno

    from tunewiz.core.training.trainer import classify_failure

    msg = classify_failure(OSError(errno.ENOSPC, "No space left on device", "/runs/x/checkpoints/checkpoint-8"))
    assert "Disk full" in msg and "checkpoint-8" in msg and "tunewiz resume" in msg


def test_out_of_memory_reason_carries_the_advice():
    from tunewiz.core.training.trainer import classify_failure

    msg = classify_failure(MemoryError())
    assert "Out of memory" in msg and "gradient_checkpointing" in msg and "qlora" in msg
