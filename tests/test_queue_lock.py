"""The queue runner starts runs under the submit lock, as `tunewiz train` creates one under it: a train
started at the moment the runner starts a run sees that run's device as busy, and the other way round."""

from __future__ import annotations

from tunewiz.core.bookkeeping import runs
from tunewiz.core.config import RunConfig
from tunewiz.core.training import launcher, queue


def test_the_runner_holds_the_submit_lock_while_it_starts_runs(tmp_path, monkeypatch):
    home = tmp_path / "home"
    held: list[bool] = []

    def start(run_dir, resume=False):
        with runs.locked(runs.runs_root(home) / launcher.SUBMIT_LOCK, blocking=False) as got:
            held.append(not got)  # another open file description holds it: the runner
        return 1

    monkeypatch.setattr(launcher, "start", start)
    run_dir = runs.create_run(
        RunConfig(name="cpu"),
        home,
        extra={"run": {"status": "waiting", "queue_order": 1.0}, "plan": {"placement": ["cpu"]}},
    )
    assert queue.start_ready(home) == [run_dir]
    assert held == [True]
    with runs.locked(runs.runs_root(home) / launcher.SUBMIT_LOCK, blocking=False) as got:
        assert got  # let go once the runs are started
