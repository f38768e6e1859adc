"""Random damage to every file of a run directory (issue 24): the record, the events, the log, the
adapter, a checkpoint, the predictions, the review. Listing, showing, the run's evaluation text and
repair each give a clean answer (the run listed, perhaps as damaged, and what to do), never a traceback."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tunewiz.core.bookkeeping import checkpoints, repair, runs
from tunewiz.tui import cli
from tunewiz.tui.record_text import record_summary_lines

FIXTURE = Path(__file__).parent / "fixtures" / "records" / "v0-2026-12-07-labels.toml"
FILES = [
    "run.toml",
    "events.jsonl",
    "train.log",
    "adapter/adapter_config.json",
    "adapter/adapter_model.safetensors",
    "checkpoints/checkpoint-12/trainer_state.json",
    "checkpoints/checkpoint-12/adapter_config.json",
    "eval/predictions.jsonl",
    "review.jsonl",
]
DAMAGE = ["truncate", "garbage", "zeros", "delete", "directory", "flip", "dangling-link", "not-utf8", "huge-line"]


def make_run(home: Path) -> Path:
    """A completed run of the labels fixture with every file a run keeps."""
    run_dir = home / "runs" / "20261207-194806-bank-intents-balanced"
    (run_dir / "adapter").mkdir(parents=True)
    record = FIXTURE.read_text().replace("/home/ana/.local/share/tunewiz", str(home))
    (run_dir / runs.RECORD).write_text(record)
    events = [
        {"event": "status", "status": "running", "t": 1.0},
        *({"event": "step", "step": s, "max_steps": 12, "loss": 4.0 - s / 10, "t": 1.0 + s} for s in range(1, 13)),
        {"event": "checkpoint", "step": 12, "t": 14.0},
        {"event": "status", "status": "completed", "t": 15.0, "results": {"train_loss": 3.8}},
    ]
    (run_dir / runs.EVENTS).write_text("".join(json.dumps(e) + "\n" for e in events))
    (run_dir / runs.LOG).write_text("step 12/12 loss 2.8\n")
    conf = {"base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct", "r": 16, "lora_alpha": 32}
    (run_dir / "adapter" / "adapter_config.json").write_text(json.dumps(conf))
    (run_dir / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    ckpt = run_dir / "checkpoints" / "checkpoint-12"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": 12, "max_steps": 12}))
    (ckpt / "adapter_config.json").write_text(json.dumps(conf))
    checkpoints.mark_complete(ckpt, 12)
    (run_dir / "eval").mkdir()
    row = {"prompt": "my card", "expected": "card_arrival", "base": "x", "finetuned": "card_arrival"}
    row.update(base_score=0.0, finetuned_score=1.0)
    (run_dir / "eval" / "predictions.jsonl").write_text(json.dumps(row) + "\n")
    (run_dir / "review.jsonl").write_text(json.dumps({"row": 0, "preferred": "finetuned"}) + "\n")
    return run_dir


def damage(path: Path, kind: str, at: float, data: bytes) -> None:
    raw = path.read_bytes() if path.is_file() else b""
    cut = int(len(raw) * at)
    if kind == "truncate":
        path.write_bytes(raw[:cut])
    elif kind == "garbage":
        path.write_bytes(data)
    elif kind == "zeros":
        path.write_bytes(b"\0" * max(len(raw), 1))
    elif kind == "delete":
        path.unlink(missing_ok=True)
    elif kind == "directory":
        path.unlink(missing_ok=True)
        path.mkdir()
    elif kind == "flip":
        path.write_bytes(raw[:cut] + data + raw[cut + len(data) :])
    elif kind == "dangling-link":
        path.unlink(missing_ok=True)
        path.symlink_to(path.parent / "nowhere")
    elif kind == "not-utf8":
        path.write_bytes(raw[:cut] + b"\xff\xfe\xc3" + raw[cut:])
    elif kind == "huge-line":
        path.write_bytes(raw[:cut] + b"x" * 2_000_000 + raw[cut:])


def looked_at(home: Path, run_dir: Path, capsys) -> None:
    """Everything that reads a run: none may raise; a damaged record is listed as damaged."""
    (listed,) = runs.list_runs(home)
    assert listed.id == run_dir.name
    if listed.status != runs.DAMAGED:
        record_summary_lines(runs.read_record(run_dir))
    for argv in (["runs"], ["show", run_dir.name], ["show", run_dir.name, "--examples", "3"], ["runs", "--json"]):
        code = cli.main(["--home", str(home), *argv])
        out = capsys.readouterr()
        assert code in (0, 1, 2), (argv, code)
        assert "Traceback" not in out.err + out.out, argv
    repair.rebuild_record(run_dir)


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("kind", DAMAGE)
def test_any_damage_to_any_file_of_a_run_gives_a_clean_answer(name, kind, capsys):
    """Every file, every kind of damage (deterministic: the same 81 cases in every run), cut or flipped
    in the middle."""
    check_damage(name, kind, 0.5, b'\x00\xff{["', capsys)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(FILES),
    kind=st.sampled_from(["truncate", "flip", "garbage", "not-utf8"]),
    at=st.floats(0.0, 1.0),
    data=st.binary(min_size=1, max_size=64),
)
def test_random_bytes_at_random_places_give_a_clean_answer(name, kind, at, data, capsys):
    check_damage(name, kind, at, data, capsys)


def check_damage(name: str, kind: str, at: float, data: bytes, capsys) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        run_dir = make_run(home)
        damage(run_dir / name, kind, at, data)
        looked_at(home, run_dir, capsys)
        code = cli.main(["--home", str(home), "repair", run_dir.name])
        out = capsys.readouterr()
        assert code in (0, 1, 2) and "Traceback" not in out.err + out.out
        (listed,) = runs.list_runs(home)
        if name == "run.toml" and kind not in ("directory", "dangling-link"):
            assert listed.status != runs.DAMAGED, listed.problem  # repair gave it a record that reads
