"""The presets' numbers: conservative / balanced / aggressive, the usual cheat sheet for LoRA fine-tuning
of small models (the table is in core.planning.presets, which builds a request from one).

Data only, so the planner can plan each preset (planner.recommend) and core.planning.presets can take
its rules (alpha, the split of the batch) from the planner without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunewiz.core.config import ConfigError


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
