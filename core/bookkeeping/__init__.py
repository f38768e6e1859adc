"""Bookkeeping: run directories and everything written into them.

Owns: runs (run.toml: create, update atomically, observe, reconcile, list, find), checkpoints (whole or absent),
events (events.jsonl), repair (rebuild a damaged record) and notify (the end of a run told).

Imports: the shared modules, models, planning and data; notify borrows judging.metrics' words for a
run's headline (the one exception, in tests/test_import_contract.py).
"""
