"""The probe's phases without training: the trainer's setup and build stand in, so the probe's own
wiring (the longest row, the plan for it, the timed steps, an out-of-memory) is checked in a second."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from tunewiz.core.planning import planner, presets
from tunewiz.core.planning.hardware import Hardware
from tunewiz.core.training import probe
from tunewiz.core.training import trainer as tr

CPU = Hardware(cpu_physical_cores=2, ram_total_gb=24, ram_available_gb=20, disk_free_gb=100)
ROWS = [
    {"input_ids": [1] * 40, "labels": [-100] * 30 + [1] * 10},
    {"input_ids": [1] * 10, "labels": [1] * 10},
]


@dataclasses.dataclass
class FakePrepared:
    cfg: Any
    plan: Any
    spec: Any
    train_rows: list
    model_type: str = "llama"


class FakeModel:
    def get_nb_trainable_parameters(self):
        return 1000, 2000


class FakeTrainer:
    def __init__(self, callbacks, rows, oom: bool):
        self.args = type("Args", (), {"save_strategy": "steps"})()
        self.callbacks, self.rows, self.oom = callbacks, rows, oom

    def train(self):
        if self.oom:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB\nmore")
        for _ in range(len(self.rows) // 2):
            for cb in self.callbacks:
                cb.on_step_begin(None, None, None)
                cb.on_step_end(None, None, None)


@pytest.fixture
def fake_trainer(monkeypatch):
    built: dict[str, Any] = {}
    cfg = presets.build_config("balanced", split=(2, 4))
    cfg.model.id = "bundled:smollm2-135m-instruct"
    spec = planner.catalog_spec(cfg.model.id)
    whole = planner.plan(cfg, CPU, spec, probe.longest_row(ROWS)[1])
    monkeypatch.setattr(
        tr, "setup", lambda c, home, events, hw=None, lint_first=True: FakePrepared(c, whole, spec, ROWS)
    )
    monkeypatch.setattr(tr, "trained_only_available", lambda: True)

    def build(run, out, callbacks, train_rows, with_eval):
        built.update(run=run, rows=train_rows)
        return FakeTrainer(callbacks, train_rows, built.get("oom", False)), FakeModel(), None

    monkeypatch.setattr(tr, "build", build)
    return cfg, built


def test_the_probe_plans_and_trains_a_batch_of_the_longest_row(fake_trainer, tmp_path):
    cfg, built = fake_trainer
    result = probe.probe(cfg, tmp_path, steps=3, hw=CPU)
    assert (result.seq_len, result.batch, result.steps) == (40, 2, 3)
    assert built["rows"] == [ROWS[0]] * 6  # the longest row, batch x steps times
    assert built["run"].cfg.training.max_steps == 3 and built["run"].plan.per_device_batch == 2
    assert len(result.step_times_s) == 3 and not result.oom
    assert result.memory_kind == "peak RSS" and result.measured_mb > 0
    assert result.estimate.breakdown.trainable_params == 1000  # the adapter's real size replaces the estimate's


def test_an_out_of_memory_is_reported_with_the_changes_that_fit(fake_trainer, tmp_path):
    cfg, built = fake_trainer
    built["oom"] = True
    result = probe.probe(cfg, tmp_path, steps=2, hw=CPU)
    assert result.oom == "CUDA out of memory. Tried to allocate 2 GiB"
    assert result.lines()[0].startswith("probe: OUT OF MEMORY at batch 2 x 40 tokens")


def test_the_longest_row_and_its_shape():
    row, shape = probe.longest_row(ROWS)
    assert row is ROWS[0]
    assert (shape.longest, shape.train_tokens, shape.trained_fraction, shape.rows) == (40, 80, 0.25, 2)
