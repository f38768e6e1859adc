"""Planning: what this machine has and every training decision made for it.

Owns: hardware (GPUs, CPU, RAM, disk), memory (the arithmetic of a step: peak memory, FLOPs, speed), planner (every
decision with its reason: device, dtype, batch split, checkpointing, workers, the estimate) and presets
(conservative / balanced / aggressive: preset_table's numbers, presets' configs).

Imports: the shared modules and models (architecture numbers). Never data, bookkeeping, judging, training
or shipping: the planner is a pure function any of them may call.
"""
