"""Conservative / balanced / aggressive presets, and the plan that turns one into a config.

The numbers (core.planning.preset_table) are the usual cheat sheet for LoRA fine-tuning of small models:

| | conservative | balanced | aggressive |
|---|---|---|---|
| LoRA rank | 8 | 16 | 64 |
| learning rate | 1e-4 | 2e-4 | 5e-4 |
| epochs | 2 | 3 | 5 |
| effective batch | 4 | 8 | 16 |
| dataset size it suits | 200-500 | 500-2,000 | 2,000+ |

lora_alpha is 2 x rank (planner.choose_lora_alpha); the schedule is cosine with a short warm-up.
"""

from __future__ import annotations

from tunewiz.core.config import RunConfig, TrainingConfig
from tunewiz.core.planning import planner
from tunewiz.core.planning.preset_table import PRESETS, Preset, get

__all__ = ["PRESETS", "Preset", "build_config", "get", "split_batch", "training_for"]

split_batch = planner.split_batch
"""The planner's rule (kept here for its callers): the largest per-device batch <= max_per_device that
divides the effective batch."""


def training_for(preset: str) -> TrainingConfig:
    """A preset's training request. Its batch is the effective batch; the split written here (at most 4
    per device, planner.choose_request_split) is a starting point the planner re-splits for the machine
    (auto_batch_split)."""
    return planner.preset_request(get(preset))


def build_config(preset: str = "balanced", split: tuple[int, int] | None = None, **sections) -> RunConfig:
    """A RunConfig from a preset; `sections` may replace model / data / evaluation. `split`: a fixed
    (per-device batch, accumulation) instead of the plan's (as `--set per_device_batch_size=...` gives)."""
    cfg = RunConfig(preset=preset, training=training_for(preset))
    if split is not None:
        t = cfg.training
        t.per_device_batch_size, t.gradient_accumulation_steps, t.auto_batch_split = split[0], split[1], False
    for key, value in sections.items():
        setattr(cfg, key, value)
    return cfg
