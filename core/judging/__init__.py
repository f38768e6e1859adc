"""Judging: is the fine-tuned model better, and by how much.

Owns: evaluate (base vs fine-tuned on held-out rows), metrics (labels, JSON fields, free text, intervals),
review (the blind A/B review) and chat (talking with a finished run's model).

Imports: models, planning, data, bookkeeping. Never training (a finished run is read from its
directory) or shipping.
"""
