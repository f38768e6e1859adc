"""Files a user points tunewiz at that are not what it expects (issue 24): a --config that is a directory,
UTF-16 or binary, and a damaged eval/predictions.jsonl, each give one clear message, never a traceback."""

from __future__ import annotations

import json

import pytest
from tunewiz.core.bookkeeping import runs
from tunewiz.core.config import RunConfig
from tunewiz.core.judging.evaluate import PREDICTIONS
from tunewiz.tui import cli

from tests.conftest import SAMPLE

GOOD = f'[data]\npath = "{SAMPLE / "support_tickets.jsonl"}"\n\n[training]\nlearning_rate = 1e-4\n'


def _config(tmp_path, kind: str):
    path = tmp_path / "run.toml"
    if kind == "directory":
        path.mkdir()
    elif kind == "utf-16":
        path.write_bytes(GOOD.encode("utf-16"))
    elif kind == "utf-16 without a mark":
        path.write_bytes(GOOD.encode("utf-16-le"))
    elif kind == "binary":
        path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    elif kind == "nul":
        path.write_bytes(GOOD.encode() + b"\x00\x00")
    return path


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("directory", "a directory, not a file: --config takes a TOML file"),
        ("utf-16", "saved as UTF-16, not UTF-8: save it again as UTF-8"),
        ("utf-16 without a mark", "saved as UTF-16, not UTF-8: save it again as UTF-8"),
        ("binary", "not a text file (byte 0 is not UTF-8)"),
        ("nul", "is NUL): --config takes a TOML file saved as UTF-8"),
    ],
)
def test_a_config_that_is_not_a_toml_text_file_is_one_clear_error(home, tmp_path, capsys, kind, says):
    path = _config(tmp_path, kind)
    assert cli.main(["train", "--config", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tunewiz: error: 1 problem(s) in ") and str(path) in err and says in err
    assert "Traceback" not in err and "Error:" not in err.split("error:", 1)[1]
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


def test_a_config_saved_by_notepad_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "run.toml"
    path.write_bytes(GOOD.encode("utf-8-sig"))
    assert RunConfig.from_toml(path).training.learning_rate == 1e-4


def _run_with_predictions(home, raw: bytes):
    cfg = RunConfig(name="tickets")
    cfg.data.path = str(SAMPLE / "support_tickets.jsonl")
    run_dir = runs.create_run(cfg, home)
    (run_dir / PREDICTIONS).parent.mkdir(exist_ok=True)
    (run_dir / PREDICTIONS).write_bytes(raw)
    return run_dir


def _row(i: int) -> bytes:
    row = {"line": i, "prompt": f"question {i}", "expected": f"answer {i}", "base": "b", "finetuned": f"ft {i}"}
    return json.dumps(row).encode() + b"\n"


def test_show_examples_of_damaged_predictions_skips_bad_lines_and_says_how_many(home, capsys):
    raw = _row(1) + b'{"line": 2, "prompt": "que\xff\xfe\n' + b"\x00\x00garbage\n" + _row(3) + b'{"line": 4, "pro'
    run_dir = _run_with_predictions(home, raw)
    assert cli.main(["show", run_dir.name, "--examples", "5"]) == 0
    out, err = capsys.readouterr()
    assert "'question 1'" in out and "'ft 3'" in out and "question 4" not in out
    assert f"3 line(s) of {run_dir / PREDICTIONS} could not be read (damaged)" in err
    assert f"`tunewiz eval {run_dir.name}`" in err


def test_show_examples_of_rows_missing_fields_prints_what_is_there(home, capsys):
    run_dir = _run_with_predictions(home, b'{"line": 1, "prompt": "only a prompt"}\n')
    assert cli.main(["show", run_dir.name, "--examples", "1"]) == 0
    out, err = capsys.readouterr()
    assert "'only a prompt'" in out and "could not be read" not in err
