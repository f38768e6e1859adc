"""Try all three presets (core.sweep): the three configs, the ranking, `tunewiz sweep show`, the sweep
screen; slow: a real sweep of tiny runs on the sample tickets through the queue."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable
from tunewiz.core.bookkeeping import runs
from tunewiz.core.planning import presets
from tunewiz.core.toml import write_toml_atomic
from tunewiz.core.training import launcher, sweep
from tunewiz.tui import cli
from tunewiz.tui.app import create_app
from tunewiz.tui.record_text import sweep_lines

from tests.conftest import HANG_S, SAMPLE, sample_tickets
from tests.test_app import SIZE, screen_name, text_of, wait_until

SWEEP = "20260103-100000-tickets"
# preset: (fields correct, its interval, held-out loss at each eval, training time s, peak MB)
FIGURES = {
    "conservative": (0.42, [0.27, 0.58], [1.10, 0.80, 0.70], 300.0, 2300.0),
    "balanced": (0.58, [0.42, 0.73], [1.00, 0.60, 0.50], 420.0, 2570.3),
    "aggressive": (0.58, [0.42, 0.73], [0.90, 0.55, 0.75], 610.0, 3400.0),  # ties balanced; overfits
}


def write_sweep(home: Path, data: Path, sweep_id: str = SWEEP, created: float = 1767434400.0) -> list[Path]:
    """Three completed runs of one sweep, records and events written by hand with fixed numbers."""
    out = []
    for n, (name, (fields, interval, evals, train_s, peak)) in enumerate(FIGURES.items()):
        run_id = f"{sweep_id}-{name}"
        run_dir = home / "runs" / run_id
        run_dir.mkdir(parents=True)
        cfg = presets.build_config(name)
        cfg.name = f"tickets-{name}"
        cfg.data.path = str(data)
        doc = {
            "run": {
                "id": run_id,
                "name": cfg.name,
                "status": "completed",
                "created": "2026-01-03T10:00:00+00:00",
                "created_unix": created + n,
                "sweep": sweep_id,
                "queue_order": float(n + 1),
            },
            **cfg.to_dict(),
            "plan": {"placement": ["cpu"]},
        }
        doc["data"].update(train_rows=324, eval_rows=36)
        doc["results"] = {
            "train_loss": round(0.9 - 0.2 * n, 4),
            "eval_loss": evals[-1],
            "train_time_s": train_s,
            "wall_time_s": train_s + 60,
            "peak_memory_mb": peak,
            "base": {"kind": "json", "headline": "field_match", "field_match": 0.0, "eval_loss": 1.46},
            "finetuned": {
                "kind": "json",
                "headline": "field_match",
                "field_match": fields,
                "interval": interval,
                "eval_loss": evals[-1],
                "examples": 36,
            },
        }
        write_toml_atomic(run_dir / runs.RECORD, doc)
        events = [
            {"t": 1.0 + s, "event": "step", "step": s, "max_steps": 12, "epoch": s / 4, "loss": round(2.0 / s, 4)}
            for s in range(1, 13)
        ]
        events += [{"t": 20.0 + i, "event": "eval", "step": 4 * (i + 1), "eval_loss": v} for i, v in enumerate(evals)]
        events.append({"t": 30.0, "event": "status", "status": "completed"})
        (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
        out.append(run_dir)
    return out


def test_the_three_configs_share_data_split_and_the_settings_no_preset_sets(tmp_path):
    base = presets.build_config("aggressive")
    base.data.path = str(tmp_path / "tickets.jsonl")
    base.data.split_seed, base.data.eval_fraction, base.model.id = 7, 0.2, "some/model"
    base.training.max_steps, base.training.lora_r = 3, 4  # max_steps is kept; the rank is each preset's
    cfgs = sweep.configs(base, ["evaluation.max_examples=2"])
    assert [c.preset for c in cfgs] == ["conservative", "balanced", "aggressive"]
    assert [c.training.lora_r for c in cfgs] == [8, 16, 64]
    assert [c.training.learning_rate for c in cfgs] == [1e-4, 2e-4, 5e-4]
    assert {c.training.max_steps for c in cfgs} == {3} and {c.evaluation.max_examples for c in cfgs} == {2}
    assert {(c.data.path, c.data.split_seed, c.data.eval_fraction, c.data.eval_path, c.model.id) for c in cfgs} == {
        (base.data.path, 7, 0.2, "", "some/model")
    }
    assert [c.name for c in cfgs] == ["tickets-conservative", "tickets-balanced", "tickets-aggressive"]
    assert base.training.lora_r == 4  # the wizard's own config is left as it was


def test_ranking_by_the_held_out_metric_then_loss_marks_the_best_and_warns_of_overfitting(home, capsys):
    write_sweep(home, SAMPLE / "support_tickets.jsonl")
    s = sweep.load(home, sweep.find(home, "last"))
    assert (s.basis, s.kind) == ("field_match", "json")
    # balanced and aggressive tie on fields correct: the lower held-out loss wins
    assert [e.preset for e in s.entries] == ["balanced", "aggressive", "conservative"]
    assert s.best.preset == "balanced" and [e.rank for e in s.entries] == [1, 2, 3]
    aggressive = s.entries[1]
    assert aggressive.overfit is not None and (aggressive.overfit.best_step, aggressive.overfit.last_step) == (8, 12)
    assert aggressive.overfit.best_epoch == 2.0
    assert all(e.overfit is None for e in s.entries if e.preset != "aggressive")
    assert aggressive.train[0] == (1, 2.0) and aggressive.evals[-1] == (12, 0.75)

    assert cli.main(["sweep", "show"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert f"sweep {SWEEP}" in out and "ranked by held-out fields correct, then held-out loss" in out
    best = next(line for line in lines if line.startswith("* 1"))
    assert "balanced" in best and "58% (42-73%)" in best and "7m00s" in best and "2.5 GB" in best
    said = " ".join(out.split())
    assert "aggressive is overfitting" in said and "fewer epochs" in said and "epoch 2.0" in said
    assert f"tunewiz show {SWEEP}-balanced" in out and f"tunewiz export {SWEEP}-balanced" in out
    assert cli.main(["sweep", "show", "nothing-like-it"]) == 2
    assert "no sweep 'nothing-like-it'" in capsys.readouterr().err


def test_without_a_comparison_the_held_out_loss_ranks(home):
    dirs = write_sweep(home, SAMPLE / "support_tickets.jsonl")
    for d in dirs:
        runs.update_record(d, lambda rec: rec.results.drop("finetuned"))
    runs.update_record(dirs[0], lambda rec: rec.run.update({"status": "failed"}))
    s = sweep.load(home, SWEEP)
    assert s.basis == "eval_loss"
    assert [e.preset for e in s.entries] == ["balanced", "aggressive", "conservative"]  # 0.50, 0.75; failed last
    assert "held-out loss (lower is better" in "\n".join(sweep_lines(s))


async def open_sweep(app, pilot) -> DataTable:
    """From the history screen with the sweep's three runs listed, `s` opens its ranking; returns the table."""
    table = app.screen.query_one("#runs", DataTable)
    await wait_until(pilot, lambda: table.row_count == 3)
    await pilot.press("s")
    await wait_until(pilot, lambda: screen_name(app) == "SweepScreen")
    ranking = app.screen.query_one("#sweep-table", DataTable)
    await wait_until(pilot, lambda: ranking.row_count == 3)
    return ranking


def test_the_sweep_screen_ranks_and_plots_the_three_side_by_side(home):
    write_sweep(home, SAMPLE / "support_tickets.jsonl")

    async def run() -> None:
        app = create_app(home, start="history")
        async with app.run_test(size=SIZE) as pilot:
            ranking = await open_sweep(app, pilot)
            rows = [ranking.get_row_at(i) for i in range(3)]
            assert "*1" in str(rows[0][0]) and "balanced" in str(rows[0][1]) and rows[0][3] == "58% (42-73%)"
            assert [len(app.screen.query_one(f"#plot-{p}").train) for p in presets.PRESETS] == [12, 12, 12]
            assert "aggressive is overfitting" in text_of(app, "#sweep-advice")
            await pilot.press("enter")
            await wait_until(pilot, lambda: screen_name(app) == "RunScreen")
            assert app.screen.run_dir.name == f"{SWEEP}-balanced"

    asyncio.run(run())


def test_ctrl_t_on_the_preset_step_queues_all_three_and_opens_their_ranking(home, monkeypatch):
    from tunewiz.core.planning.hardware import Hardware
    from tunewiz.core.training.queue import Queued
    from tunewiz.tui.preset_step import PresetStep

    asked = []

    def fake_submit(cfg, home_dir, overrides=(), hw=None, warn=None):
        asked.append(cfg)
        dirs = write_sweep(home_dir, Path(cfg.data.path))
        return SWEEP, [Queued(d, n, []) for n, d in enumerate(dirs, 1)]

    monkeypatch.setattr(sweep, "submit", fake_submit)

    async def run() -> None:
        app = create_app(home, data=str(SAMPLE / "support_tickets.jsonl"))
        app.hardware = Hardware(cpu_physical_cores=2, ram_total_gb=24, ram_available_gb=22)
        async with app.run_test(size=SIZE) as pilot:
            await app.push_screen(PresetStep())
            await pilot.press("ctrl+a")
            app.screen.query_one("#f-max_steps").value = "2"
            await pilot.pause()
            await pilot.press("ctrl+t")
            await wait_until(pilot, lambda: screen_name(app) == "ConfirmScreen")  # three runs: asked first
            assert asked == []
            await pilot.press("y")
            await wait_until(pilot, lambda: screen_name(app) == "SweepScreen")
            assert app.screen.sweep_id == SWEEP

    asyncio.run(run())
    (cfg,) = asked
    assert cfg.training.max_steps == 2 and cfg.data.path.endswith("support_tickets.jsonl")


# -- a real sweep ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_sweep_on_the_sample_tickets_queues_three_runs_and_ranks_them(home, tiny_model_dir, tmp_path, capsys):
    data = sample_tickets(tmp_path / "tickets.jsonl", rows=60)
    args = ["sweep", "--data", str(data), "--model", str(tiny_model_dir), "--max-steps", "3", "--max-seq-len", "128"]
    args += ["--set", "evaluation.max_examples=2", "--set", "evaluation.max_new_tokens=8", "--set", "eval_steps=1"]
    assert cli.main([*args, "--set", "threads=1"]) == 0
    out = capsys.readouterr().out
    sweep_id = out.split()[1].rstrip(":")
    assert "#1" in out and "(starts now)" in out and f"tunewiz sweep show {sweep_id}" in out
    dirs = [d for d, _ in sweep.members(home)[sweep_id]]
    assert len(dirs) == 3
    deadline = time.time() + 3 * HANG_S  # three runs one after another; a hang guard, not a speed check
    while not all(launcher.is_finished(d) for d in dirs):
        assert time.time() < deadline, [runs.read_record(d).to_dict()["run"]["status"] for d in dirs]
        time.sleep(2)
    docs = [runs.read_record(d).to_dict() for d in dirs]
    assert all(doc["run"]["status"] == "completed" for doc in docs), [(d / runs.LOG).read_text()[-1500:] for d in dirs]
    # the same data and held-out rows for all three: the same file, seed and fraction, the same prompts
    assert len({(doc["data"]["sha256"], doc["data"]["eval_rows"], doc["data"]["split_seed"]) for doc in docs}) == 1
    prompts = [
        [json.loads(x)["prompt"] for x in (d / "eval" / "predictions.jsonl").read_text().splitlines()] for d in dirs
    ]
    assert prompts[0] == prompts[1] == prompts[2]
    assert sorted(doc["preset"]["name"] for doc in docs) == sorted(presets.PRESETS)

    assert cli.main(["sweep", "show", sweep_id]) == 0
    shown = capsys.readouterr().out
    print(shown)  # the report quotes it
    assert all(len(line) <= 80 for line in shown.splitlines())
    assert shown.count("completed") == 3 and "* 1" in shown and "* best:" in shown

    async def run() -> None:
        app = create_app(home, start="history")
        async with app.run_test(size=SIZE) as pilot:
            ranking = await open_sweep(app, pilot)
            assert "*1" in str(ranking.get_row_at(0)[0])
            assert all(len(app.screen.query_one(f"#plot-{p}").evals) == 3 for p in presets.PRESETS)

    asyncio.run(run())
