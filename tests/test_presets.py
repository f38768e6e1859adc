"""Presets: the cheat-sheet numbers, and splitting the effective batch to fit a device."""

from __future__ import annotations

import pytest
from tunewiz.core.config import ConfigError, DataConfig, RunConfig
from tunewiz.core.planning import presets

CHEAT_SHEET = {
    # name: (lora rank, learning rate, epochs, effective batch)
    "conservative": (8, 1e-4, 2, 4),
    "balanced": (16, 2e-4, 3, 8),
    "aggressive": (64, 5e-4, 5, 16),
}


def test_the_three_presets_exist():
    assert set(presets.PRESETS) == set(CHEAT_SHEET)


@pytest.mark.parametrize("name", CHEAT_SHEET)
def test_preset_numbers_match_the_cheat_sheet(name):
    rank, lr, epochs, batch = CHEAT_SHEET[name]
    p = presets.get(name)
    assert (p.lora_r, p.learning_rate, p.num_epochs, p.effective_batch) == (rank, lr, epochs, batch)


@pytest.mark.parametrize("name", CHEAT_SHEET)
def test_training_settings_of_a_preset(name):
    rank, lr, epochs, batch = CHEAT_SHEET[name]
    t = presets.training_for(name)
    assert t.lora_r == rank
    assert t.lora_alpha == 2 * rank
    assert t.learning_rate == lr
    assert t.num_epochs == float(epochs)
    assert t.effective_batch == batch
    assert t.lr_scheduler == "cosine"


@pytest.mark.parametrize("name", CHEAT_SHEET)
def test_a_preset_asks_for_its_effective_batch_and_leaves_the_split_to_the_plan(name):
    t = presets.training_for(name)
    assert t.per_device_batch_size * t.gradient_accumulation_steps == CHEAT_SHEET[name][3]
    assert t.auto_batch_split


def test_a_fixed_split_is_kept_as_given():
    t = presets.build_config("balanced", split=(2, 4)).training
    assert (t.per_device_batch_size, t.gradient_accumulation_steps, t.auto_batch_split) == (2, 4, False)


@pytest.mark.parametrize(
    "effective, max_per_device, expected",
    [(8, 4, (4, 2)), (16, 3, (2, 8)), (4, 16, (4, 1)), (12, 5, (4, 3)), (7, 4, (1, 7)), (8, 0, (1, 8))],
)
def test_split_batch(effective, max_per_device, expected):
    assert presets.split_batch(effective, max_per_device) == expected


def test_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError) as exc_info:
        presets.get("extreme")
    text = str(exc_info.value)
    assert "extreme" in text
    for name in CHEAT_SHEET:
        assert name in text
    with pytest.raises(ConfigError):
        presets.training_for("Balanced")


def test_build_config_uses_the_preset_and_replaces_sections(tmp_path):
    data = DataConfig(path=str(tmp_path / "train.jsonl"))
    cfg = presets.build_config("aggressive", data=data)
    assert isinstance(cfg, RunConfig)
    assert cfg.preset == "aggressive"
    assert cfg.training.lora_r == 64
    assert (cfg.training.per_device_batch_size, cfg.training.gradient_accumulation_steps) == (4, 4)
    assert cfg.data is data
    assert cfg.validate() is cfg


def test_default_build_config_matches_the_default_run_config():
    assert presets.build_config().training == RunConfig().training
