"""Every setting, any value (issue 24): `--set KEY=VALUE` with NaN, Inf, huge, negative, empty and
wrong-type values, and run.toml sections of the wrong shape, give a clean ConfigError naming the
setting, never a traceback; what is accepted plans without one."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tunewiz.core.config import _SECTIONS, ConfigError, RunConfig, apply_overrides
from tunewiz.core.planning import planner
from tunewiz.core.planning.hardware import Hardware
from tunewiz.core.planning.memory import DataShape

KEYS = [f"{section}.{f.name}" for section, klass in _SECTIONS.items() for f in dataclasses.fields(klass)]
NASTY = ["nan", "inf", "-inf", "1e308", "-1", "0", "-0.0", "1e9", "100000", "", "true", "[1, 2]", "x", "1.5", "2"]
HW = Hardware(cpu_model="Fuzz CPU", cpu_physical_cores=2, ram_total_gb=16, ram_available_gb=12)
SHAPE = DataShape(200, 50_000, 0.3, "fuzz", 300)


def submitted(setting: str) -> None:
    """What submit does with a setting, short of starting anything: apply, validate, plan."""
    cfg = RunConfig()
    cfg.data.path = "x.jsonl"
    try:
        apply_overrides(cfg, [setting]).validate()
    except ConfigError as exc:
        assert exc.problems and all(isinstance(p, str) and p for p in exc.problems)
        return
    planner.plan(cfg, HW, shape=SHAPE)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(KEYS), value=st.one_of(st.sampled_from(NASTY), st.text(max_size=12)))
def test_any_value_of_any_setting_is_a_clean_problem_or_a_plan(key, value):
    submitted(f"{key}={value}")


@pytest.mark.parametrize("key", KEYS)
def test_every_setting_takes_nan_and_inf_cleanly(key):
    for value in ("nan", "inf", "1e400", "-1e400"):
        submitted(f"{key}={value}")


@pytest.mark.parametrize(
    "doc",
    [
        {"preset": 5},
        {"preset": {"name": ["a"]}},
        {"run": {"name": ["a", "list"]}},
        {"training": "fast"},
        {"training": {"learning_rate": "fast"}},
        {"notify": {"command": 5}},
    ],
)
def test_a_config_of_the_wrong_shape_is_a_clean_problem(doc):
    with pytest.raises(ConfigError) as exc:
        RunConfig.from_dict({"data": {"path": "x.jsonl"}, **doc}).validate()
    assert exc.value.problems
