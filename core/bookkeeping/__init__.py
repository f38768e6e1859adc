"""Bookkeeping: run directories and everything written into them.

Owns: record (run.toml's typed sections, statuses and schema version: the one reader of its tables), runs
(run directories: create, update atomically, observe, reconcile, list, find), finished (a finished run's
model, opened one way for evaluation, chat and export), checkpoints (whole or absent), events
(events.jsonl), repair (rebuild a damaged record) and notify (the end of a run told).

Imports: the shared modules, models, planning and data; notify borrows judging.metrics' words for a
run's headline (the one exception, in tests/test_import_contract.py).
"""
