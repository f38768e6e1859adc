"""Small holes a careful user would fall into (issue 24): two submits at the same moment, a completed run
whose adapter was deleted, resuming a record that cannot be resumed, resuming while the disk is full.

Run directories are made by hand: no model, no training."""

from __future__ import annotations

import threading
import time

import pytest
from tunewiz.core.bookkeeping import runs
from tunewiz.core.data import dataset as data
from tunewiz.core.planning import presets
from tunewiz.core.planning.hardware import GPU, Hardware
from tunewiz.core.training import launcher

from tests.conftest import chat_row, write_jsonl

ONE_GPU = Hardware(gpus=[GPU(0, "A100", 80.0, 79.0, "8.0", True)], cpu_physical_cores=16, ram_available_gb=128)
TWO_GPUS = Hardware(
    gpus=[GPU(0, "A100", 80.0, 20.0, "8.0", True), GPU(1, "A100", 80.0, 79.0, "8.0", True)],
    cpu_physical_cores=16,
    ram_available_gb=128,
)


# -- a. two submits at the same moment see each other ---------------------------------------------


@pytest.mark.parametrize(
    ("hw", "places", "warned"), [(TWO_GPUS, ["cuda:0", "cuda:1"], 0), (ONE_GPU, ["cuda:0"] * 2, 1)]
)
def test_two_submits_at_the_same_moment_see_each_other(home, tmp_path, monkeypatch, hw, places, warned):
    """Both were checked while nothing trained. Created at the same moment, the second still sees the
    first: on two GPUs it is planned onto the other one, on one GPU it is told it shares."""
    cfg = presets.build_config("balanced")
    cfg.data.path = str(write_jsonl(tmp_path / "d.jsonl", [chat_row(f"q{i}", f"a{i}") for i in range(8)]))
    examples = data.read(cfg.data.path).examples
    plan = launcher.first_plan(cfg, home, examples, hw, {})
    checked = launcher.Checked(plan, None, False, hw, [], {}, examples)
    real = launcher.busy_devices

    def slow_busy(home_dir):  # widens the moment between reading what is taken and creating the record
        out = real(home_dir)
        time.sleep(0.3)
        return out

    monkeypatch.setattr(launcher, "busy_devices", slow_busy)
    both = threading.Barrier(2)
    made: list[tuple] = []

    def submit():
        both.wait()
        made.append(launcher.create(cfg, home, checked))

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(made) == 2
    placements = sorted(runs.read_record(run_dir)["plan"]["placement"][0] for run_dir, _ in made)
    assert placements == places
    first, second = made
    said = [line for _, lines in made for line in lines]
    assert len(said) == warned
    if warned:
        assert said == [f"another run ({first[0].name}) is training on this GPU 0: both will run at about half speed"]
        assert not first[1] and second[1] == said
