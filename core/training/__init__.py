"""Training: the process that trains, and starting, stopping and following it.

Owns: trainer (the training process: setup, build, fit, save, evaluate), launcher (submit-time checks, start,
stop, follow), detach (processes that outlive the terminal), distributed (several processes through
accelerate), probe (a few real steps at the longest sequence), queue (runs that wait their turn and
start one after another) and sweep (the three presets tried on one dataset).

Imports: every room below it, and judging.evaluate for the comparison at the end of a run. Never
shipping.
"""
