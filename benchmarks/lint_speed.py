"""Lint speed: rows per second of `core.lint.lint` on a large file, without and with the tokenizer.

The file is the sample support tickets repeated to --rows rows, each user message
made unique (a ticket number), so the duplicate rules do not short-cut the work.

    python benchmarks/lint_speed.py --rows 100000

Prints rows/s for the structural pass (reading, formats, duplicates, leakage)
and for the full pass with the bundled model's tokenizer (chat template,
token lengths, masks of a sample and of every over-long row).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_file(rows: int, out: Path) -> Path:
    base = [json.loads(line) for line in (ROOT / "sample_data" / "support_tickets.jsonl").open(encoding="utf-8")]
    with out.open("w", encoding="utf-8") as fh:
        for i in range(rows):
            row = json.loads(json.dumps(base[i % len(base)]))
            row["messages"][1]["content"] += f" Ticket {i}."
            fh.write(json.dumps(row) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--home", default=os.environ.get("TUNEWIZ_HOME"), help="where the bundled model is converted")
    ns = ap.parse_args()

    from tunewiz.core.bookkeeping import runs
    from tunewiz.core.data import lint
    from tunewiz.core.models import resolve as models

    home = runs.home(ns.home)
    with tempfile.TemporaryDirectory() as tmp:
        path = make_file(ns.rows, Path(tmp) / "rows.jsonl")
        size_mb = path.stat().st_size / 2**20
        print(f"{ns.rows:,} rows, {size_mb:.1f} MiB, {os.cpu_count()} CPUs")

        t0 = time.perf_counter()
        report = lint.lint(path)
        dt = time.perf_counter() - t0
        print(f"structural: {dt:.2f} s, {ns.rows / dt:,.0f} rows/s ({len(report.findings)} findings)")

        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(models.resolve(models.DEFAULT_MODEL, home).path))
        t0 = time.perf_counter()
        report = lint.lint(path, tok, max_seq_len=1024)
        dt = time.perf_counter() - t0
        t = report.tokens
        print(
            f"with tokens: {dt:.2f} s, {ns.rows / dt:,.0f} rows/s ({len(report.findings)} findings; "
            f"tokens min {t['min']} median {t['median']} p95 {t['p95']} max {t['max']})"
        )


if __name__ == "__main__":
    main()
