"""RunConfig: TOML round trip, strict reading, validation and command-line overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w
from tunewiz.core.config import RECORD_ONLY_KEYS, ConfigError, RunConfig, apply_overrides


def _custom_config(data_path: Path) -> RunConfig:
    cfg = RunConfig(preset="aggressive")
    cfg.model.id = "someorg/some-model"
    cfg.model.method = "qlora"
    cfg.model.dtype = "bfloat16"
    cfg.model.trust_remote_code = True
    cfg.data.path = str(data_path)
    cfg.data.eval_fraction = 0.2
    cfg.data.split_seed = 7
    cfg.data.max_seq_len = 256
    cfg.training.lora_r = 64
    cfg.training.lora_alpha = 128
    cfg.training.target_modules = ["q_proj", "v_proj"]
    cfg.training.learning_rate = 5e-4
    cfg.training.num_epochs = 1.5
    cfg.training.max_steps = 30
    cfg.training.gradient_checkpointing = True
    cfg.training.lr_scheduler = "linear"
    cfg.evaluation.enabled = False
    cfg.evaluation.max_examples = 5
    return cfg


def _write(path: Path, doc: dict) -> Path:
    path.write_text(tomli_w.dumps(doc), encoding="utf-8")
    return path


def _problems(exc_info) -> str:
    return "\n".join(exc_info.value.problems)


# -- round trip ---------------------------------------------------------------------


def test_default_config_round_trips_through_toml(tmp_path):
    cfg = RunConfig()
    cfg.data.path = str(tmp_path / "train.jsonl")
    back = RunConfig.from_toml(_write(tmp_path / "cfg.toml", cfg.to_dict()))
    assert back == cfg


def test_customised_config_round_trips_through_toml(tmp_path):
    cfg = _custom_config(tmp_path / "train.jsonl")
    back = RunConfig.from_toml(_write(tmp_path / "cfg.toml", cfg.to_dict()))
    assert back == cfg
    assert back.preset == "aggressive"
    assert isinstance(back.training.num_epochs, float) and back.training.num_epochs == 1.5
    assert back.training.target_modules == ["q_proj", "v_proj"]


def test_to_dict_has_the_run_toml_sections():
    doc = RunConfig().to_dict()
    assert set(doc) == {"model", "data", "preset", "training", "evaluation"}
    assert doc["preset"] == {"name": "balanced"}
    assert doc["training"]["lora_r"] == 16


def test_run_name_is_read_from_the_run_section():
    doc = {"run": {"name": "my-run"}, **RunConfig().to_dict()}
    assert RunConfig.from_dict(doc).name == "my-run"


# -- reading a record / strictness --------------------------------------------------


def test_a_run_record_reads_back_as_a_config(tmp_path):
    """Everything a record adds (run/results/hardware sections, RECORD_ONLY_KEYS) is ignored."""
    cfg = _custom_config(tmp_path / "train.jsonl")
    doc = cfg.to_dict()
    for section, keys in RECORD_ONLY_KEYS.items():
        for key in keys:
            doc[section][key] = 123
    doc["run"] = {"id": "x", "status": "completed"}
    doc["results"] = {"train_loss": 1.0}
    doc["hardware"] = {"device": "cpu"}
    assert RunConfig.from_dict(doc) == cfg


def test_unknown_key_is_reported_with_section_and_key():
    doc = {"training": {"learning_rte": 1e-4}}
    with pytest.raises(ConfigError) as exc_info:
        RunConfig.from_dict(doc, source="my.toml")
    text = _problems(exc_info)
    assert "[training]" in text and "learning_rte" in text
    assert "learning_rate" in text  # the known keys are listed
    assert "my.toml" in str(exc_info.value)


def test_record_only_key_in_the_wrong_section_is_still_unknown():
    with pytest.raises(ConfigError) as exc_info:
        RunConfig.from_dict({"model": {"sha256": "abc"}})
    assert "[model] unknown key 'sha256'" in _problems(exc_info)


def test_unknown_keys_are_allowed_when_not_strict():
    cfg = RunConfig.from_dict({"training": {"bogus": 1, "lora_r": 4}}, strict=False)
    assert cfg.training.lora_r == 4


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("training", "learning_rate", "fast"),
        ("training", "lora_r", 2.5),
        ("training", "lora_r", True),
        ("training", "gradient_checkpointing", "maybe"),
        ("training", "target_modules", [1, 2]),
        ("data", "max_seq_len", "long"),
        ("model", "method", ["lora"]),
    ],
)
def test_type_errors_are_reported(section, key, value):
    with pytest.raises(ConfigError) as exc_info:
        RunConfig.from_dict({section: {key: value}})
    text = _problems(exc_info)
    assert f"[{section}] {key}" in text
    assert "expected" in text


def test_section_that_is_not_a_table_is_reported():
    with pytest.raises(ConfigError) as exc_info:
        RunConfig.from_dict({"training": 3})
    assert "[training] must be a table" in _problems(exc_info)


def test_all_read_problems_are_reported_at_once():
    doc = {"model": {"colour": "red"}, "training": {"learning_rate": "fast", "lora_r": "big"}}
    with pytest.raises(ConfigError) as exc_info:
        RunConfig.from_dict(doc)
    assert len(exc_info.value.problems) == 3


def test_numbers_are_coerced_to_the_field_type():
    cfg = RunConfig.from_dict({"training": {"num_epochs": 2, "lora_r": 8.0}})
    assert cfg.training.num_epochs == 2.0 and isinstance(cfg.training.num_epochs, float)
    assert cfg.training.lora_r == 8 and isinstance(cfg.training.lora_r, int)


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        RunConfig.from_toml(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[training\nlora_r = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        RunConfig.from_toml(bad)


# -- relative data paths ------------------------------------------------------------


def test_relative_data_paths_resolve_against_the_config_file(tmp_path, monkeypatch):
    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = _write(cfg_dir / "cfg.toml", {"data": {"path": "data/train.jsonl", "eval_path": "../held.jsonl"}})
    cfg = RunConfig.from_toml(path)
    assert cfg.data.path == str((cfg_dir / "data" / "train.jsonl").resolve())
    assert cfg.data.eval_path == str((tmp_path / "held.jsonl").resolve())


def test_absolute_data_path_is_kept(tmp_path):
    target = tmp_path / "abs" / "train.jsonl"
    cfg = RunConfig.from_toml(_write(tmp_path / "cfg.toml", {"data": {"path": str(target)}}))
    assert cfg.data.path == str(target)
    assert cfg.data.eval_path == ""


def test_home_relative_data_path_is_expanded(tmp_path):
    cfg = RunConfig.from_toml(_write(tmp_path / "cfg.toml", {"data": {"path": "~/data.jsonl"}}))
    assert cfg.data.path == str(Path("~/data.jsonl").expanduser())


# -- validation ---------------------------------------------------------------------


def test_a_complete_default_config_is_valid(tmp_path):
    cfg = RunConfig()
    cfg.data.path = str(tmp_path / "x.jsonl")
    assert cfg.validate() is cfg
    assert cfg.problems() == []


def test_empty_data_path_is_a_problem():
    assert any("[data] path is empty" in p for p in RunConfig().problems())


def test_validate_collects_every_problem_at_once(tmp_path):
    cfg = RunConfig()
    cfg.data.path = str(tmp_path / "x.jsonl")
    cfg.model.method = "full"
    cfg.model.dtype = "int3"
    cfg.data.max_seq_len = 4
    cfg.training.lora_r = 0
    cfg.training.learning_rate = 5.0
    cfg.training.lr_scheduler = "zigzag"
    cfg.training.target_modules = []
    cfg.evaluation.max_examples = 0
    with pytest.raises(ConfigError) as exc_info:
        cfg.validate(source="cfg.toml")
    problems = exc_info.value.problems
    assert len(problems) == 8
    text = "\n".join(problems)
    for fragment in (
        "[model] method = 'full'",
        "[model] dtype = 'int3'",
        "[data] max_seq_len = 4",
        "[training] lora_r = 0",
        "[training] learning_rate = 5.0",
        "[training] lr_scheduler = 'zigzag'",
        "[training] target_modules is empty",
        "[evaluation] max_examples",
    ):
        assert fragment in text
    assert str(exc_info.value).startswith("8 problem(s) in cfg.toml")


@pytest.mark.parametrize(
    "section, attr, value, fragment",
    [
        ("data", "eval_fraction", 0.0, "eval_fraction"),
        ("data", "eval_fraction", 0.95, "eval_fraction"),
        ("training", "max_steps", 0, "max_steps"),
        ("training", "max_steps", -5, "max_steps"),
        ("training", "lora_dropout", 1.0, "lora_dropout"),
        ("training", "warmup_ratio", -0.1, "warmup_ratio"),
        ("training", "save_total_limit", 0, "save_total_limit"),
        ("training", "eval_steps", -1, "eval_steps"),
        ("training", "per_device_batch_size", 0, "per_device_batch_size"),
        ("evaluation", "max_new_tokens", -1, "max_new_tokens"),
    ],
)
def test_each_out_of_range_value_is_a_problem(tmp_path, section, attr, value, fragment):
    cfg = RunConfig()
    cfg.data.path = str(tmp_path / "x.jsonl")
    setattr(getattr(cfg, section), attr, value)
    problems = cfg.problems()
    assert len(problems) == 1 and fragment in problems[0]


def test_eval_fraction_does_not_matter_with_an_eval_file(tmp_path):
    cfg = RunConfig()
    cfg.data.path = str(tmp_path / "x.jsonl")
    cfg.data.eval_path = str(tmp_path / "y.jsonl")
    cfg.data.eval_fraction = 0.0
    assert cfg.problems() == []


def test_num_epochs_zero_is_fine_with_max_steps(tmp_path):
    cfg = RunConfig()
    cfg.data.path = str(tmp_path / "x.jsonl")
    cfg.training.num_epochs = 0
    assert any("num_epochs" in p for p in cfg.problems())
    cfg.training.max_steps = 10
    assert cfg.problems() == []


# -- overrides ----------------------------------------------------------------------


def test_overrides_with_dotted_and_bare_keys():
    cfg = apply_overrides(RunConfig(), ["training.lora_r=8", "learning_rate=1e-4", "data.max_seq_len = 256"])
    assert cfg.training.lora_r == 8
    assert cfg.training.learning_rate == 1e-4
    assert cfg.data.max_seq_len == 256


def test_override_list_value():
    cfg = apply_overrides(RunConfig(), ["target_modules=q_proj,v_proj"])
    assert cfg.training.target_modules == ["q_proj", "v_proj"]
    cfg = apply_overrides(cfg, ["training.target_modules= k_proj , o_proj ,"])
    assert cfg.training.target_modules == ["k_proj", "o_proj"]


@pytest.mark.parametrize(
    "text, expected",
    [("true", True), ("yes", True), ("1", True), ("on", True), ("false", False), ("No", False), ("off", False)],
)
def test_override_bool_values(text, expected):
    cfg = RunConfig()
    cfg.training.gradient_checkpointing = not expected
    apply_overrides(cfg, [f"gradient_checkpointing={text}"])
    assert cfg.training.gradient_checkpointing is expected


def test_override_string_value_is_kept_whole():
    cfg = apply_overrides(RunConfig(), ["model.id=org/name=with=equals"])
    assert cfg.model.id == "org/name=with=equals"


def test_override_unknown_key_is_an_error():
    with pytest.raises(ConfigError) as exc_info:
        apply_overrides(RunConfig(), ["learnin_rate=1e-4"])
    text = _problems(exc_info)
    assert "learnin_rate" in text and "unknown setting" in text
    assert "training.learning_rate" in text  # suggests the known keys


def test_override_unknown_section_is_an_error():
    with pytest.raises(ConfigError, match="unknown setting"):
        apply_overrides(RunConfig(), ["optimizer.lora_r=8"])


def test_override_without_equals_sign_and_bad_type_are_all_reported():
    with pytest.raises(ConfigError) as exc_info:
        apply_overrides(RunConfig(), ["lora_r", "learning_rate=fast", "evaluation.enabled=perhaps"])
    problems = exc_info.value.problems
    assert len(problems) == 3
    assert "key=value" in problems[0]
    assert "expected float" in problems[1]
    assert "expected bool" in problems[2]
    assert "command-line overrides" in str(exc_info.value)


def test_override_of_a_read_only_property_is_a_config_error():
    # `effective_batch` appears in [training] of every run.toml, so users try to set it.
    with pytest.raises(ConfigError):
        apply_overrides(RunConfig(), ["training.effective_batch=16"])


def test_a_split_you_set_is_kept_and_otherwise_the_plan_splits():
    assert RunConfig().training.auto_batch_split
    cfg = apply_overrides(RunConfig(), ["per_device_batch_size=2"])
    assert not cfg.training.auto_batch_split
    hand = RunConfig.from_dict({"training": {"gradient_accumulation_steps": 4}})
    assert not hand.training.auto_batch_split  # a hand-written config with a split keeps it
    again = RunConfig.from_dict(RunConfig().to_dict())  # a record re-run: the flag as recorded
    assert again.training.auto_batch_split


@pytest.mark.parametrize(
    "setting",
    [
        "weight_decay=nan",
        "num_epochs=inf",
        "learning_rate=nan",
        "max_grad_norm=-1",
        "lora_r=100000",
        "dataloader_workers=100000",
        "threads=100000",
        "num_epochs=1e9",
        "weight_decay=-5",
        "eval_fraction=nan",
    ],
)
def test_a_setting_that_would_ruin_a_run_is_refused_naming_it(setting):
    from tunewiz.core.config import ConfigError, apply_overrides

    cfg = RunConfig()
    cfg.data.path = "x.jsonl"
    with pytest.raises(ConfigError) as exc:
        apply_overrides(cfg, [setting]).validate()
    assert setting.split("=")[0] in str(exc.value)


def test_a_plan_over_the_machines_memory_is_refused_at_submit_unless_overridden(home, tmp_path, monkeypatch):
    """lora_r=4000 on a tiny machine: refused like every other problem, with what to change; the
    explicit override starts it (here the check is all that runs)."""
    from tunewiz.core.bookkeeping import runs
    from tunewiz.core.planning.hardware import Hardware
    from tunewiz.core.training import launcher

    from tests.conftest import sample_tickets

    cfg = RunConfig()
    cfg.data.path = str(sample_tickets(tmp_path / "t.jsonl", rows=40))
    cfg.training.lora_r = 4000
    hw = Hardware(cpu_model="Tiny", cpu_physical_cores=2, ram_total_gb=2, ram_available_gb=1)
    with pytest.raises(runs.RunError) as exc:
        launcher.check(cfg, home, hw=hw)
    said = str(exc.value)
    assert "does not fit this machine's memory" in said and "too big" in said
    assert "gradient_checkpointing" in said and "allow_over_memory=true" in said
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())
