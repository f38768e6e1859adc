"""Conservative / balanced / aggressive presets, and the plan that turns one into a config.

The numbers are the usual cheat sheet for LoRA fine-tuning of small models:

| | conservative | balanced | aggressive |
|---|---|---|---|
| LoRA rank | 8 | 16 | 64 |
| learning rate | 1e-4 | 2e-4 | 5e-4 |
| epochs | 2 | 3 | 5 |
| effective batch | 4 | 8 | 16 |
| dataset size it suits | 200-500 | 500-2,000 | 2,000+ |

lora_alpha is 2 x rank; the schedule is cosine with a short warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunewiz.core.config import ConfigError, RunConfig, TrainingConfig


@dataclass(frozen=True)
class Preset:
    name: str
    lora_r: int
    learning_rate: float
    num_epochs: int
    effective_batch: int
    suits: str
    summary: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "conservative",
            8,
            1e-4,
            2,
            4,
            "200-500 examples",
            "Small, careful updates: least risk of forgetting what the model already knew.",
        ),
        Preset(
            "balanced",
            16,
            2e-4,
            3,
            8,
            "500-2,000 examples",
            "The usual starting point: learns a format or style without overdoing it.",
        ),
        Preset(
            "aggressive",
            64,
            5e-4,
            5,
            16,
            "2,000+ examples",
            "Big updates for big datasets or hard targets; watch the eval loss for overfitting.",
        ),
    )
}


def get(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError([f"unknown preset {name!r}: use one of {', '.join(PRESETS)}"]) from None


def split_batch(effective_batch: int, max_per_device: int) -> tuple[int, int]:
    """Largest per-device batch <= max_per_device that divides the effective batch.

    >>> split_batch(8, 4)
    (4, 2)
    >>> split_batch(16, 3)
    (2, 8)
    """
    per_device = max(1, min(effective_batch, max_per_device))
    while effective_batch % per_device:
        per_device -= 1
    return per_device, effective_batch // per_device


def training_for(preset: str) -> TrainingConfig:
    """A preset's training request. Its batch is the effective batch; the split written here (at most 4
    per device) is a starting point the planner re-splits for the machine (auto_batch_split)."""
    p = get(preset)
    per_device, accum = split_batch(p.effective_batch, 4)
    return TrainingConfig(
        lora_r=p.lora_r,
        lora_alpha=2 * p.lora_r,
        learning_rate=p.learning_rate,
        num_epochs=float(p.num_epochs),
        per_device_batch_size=per_device,
        gradient_accumulation_steps=accum,
    )


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
