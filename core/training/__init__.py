"""Training: the process that trains, and starting, stopping and following it.

Owns: trainer (the training process as a recipe: setup, build, fit, save, evaluate), callbacks (what the
trainer is told at each step: events, checks, the stop), stopping (the stop signals and the run-directory
watch), process_memory (the process's memory figures and allocator tuning), launcher (submit-time checks, start,
stop, follow), detach (processes that outlive the terminal), distributed (several processes through
accelerate), probe (a few real steps at the longest sequence), queue (runs that wait their turn and
start one after another) and sweep (the three presets tried on one dataset).

Imports: every room below it, and judging.evaluate for the comparison at the end of a run. Never
shipping.
"""
