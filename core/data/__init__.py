"""Data: the user's examples, read, checked and rendered exactly as the model will see them.

Owns: dataset (read any common file, detect each row's format, normalise to chat messages, split, render with the
loss mask), lint (what silently ruins a fine-tune, with the line and the fix), samples (the bundled
datasets), columns (a table's column mapping: proposed, applied, label sets) and deadline (a time limit
on rendering through a model's chat template, which is code from the model's files).

Imports: the shared modules, models and planning (lint sizes a run with the planner's arithmetic).
"""
