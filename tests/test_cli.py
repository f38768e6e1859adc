"""The command line as a user meets it: help, clear errors, nothing half-written."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tunewiz.core.config import RunConfig
from tunewiz.tui import cli

from tests.conftest import HANG_S, ROOT, SAMPLE, chat_row, write_jsonl

COMMANDS = ["hw", "train", "demo", "runs", "show", "eval", "attach", "stop", "resume"]


def run_cli(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "tunewiz.tui.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        timeout=HANG_S,
    )


def test_bare_command_prints_help(capsys):
    assert cli.main([]) == 0
    assert "COMMAND" in capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: tunewiz" in capsys.readouterr().out


def test_malformed_jsonl_line_is_reported_with_file_and_line(home, tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [chat_row("a", "b"), '{"messages": [', chat_row("c", "d")])
    assert cli.main(["train", "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert f"{data}:2" in err and "not valid JSON" in err
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


def test_unknown_model_id_is_one_clear_error(home, capsys):
    code = cli.main(["train", "--data", str(SAMPLE / "support_tickets.jsonl"), "--model", "no-such-model"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown model id 'no-such-model'" in err and "bundled:smollm2-135m-instruct" in err
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


def test_a_catalog_name_names_its_model_and_a_near_miss_is_named(home, tmp_path, capsys):
    """`tunewiz recommend` prints catalog names (smollm2-135m): --model and a config file take them, as
    the id they stand for; a name one letter off gets the catalog name it is closest to."""
    data = str(SAMPLE / "support_tickets.jsonl")
    assert cli.main(["train", "--data", data, "--model", "smollm2-135m", "--dry-run"]) == 0
    assert "dry run: bundled:smollm2-135m-instruct (lora)" in capsys.readouterr().out
    config = tmp_path / "run.toml"
    config.write_text(f'[model]\nid = "qwen2.5-0.5b"\n\n[data]\npath = "{data}"\n')
    assert RunConfig.from_toml(config).model.id == "Qwen/Qwen2.5-0.5B-Instruct"
    assert cli.main(["train", "--data", data, "--model", "smollm2-135", "--dry-run"]) == 2
    assert "Did you mean smollm2-135m (bundled:smollm2-135m-instruct)?" in capsys.readouterr().err


def test_unwritable_runs_directory(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = cli.main(["--home", str(blocker / "home"), "train", "--data", str(SAMPLE / "support_tickets.jsonl")])
    assert code == 2
    err = capsys.readouterr().err
    assert "cannot write to the runs directory" in err and "--home" in err


def test_bad_override_names_known_settings(home, capsys):
    code = cli.main(["train", "--data", str(SAMPLE / "support_tickets.jsonl"), "--set", "learning_rat=1"])
    assert code == 2
    assert "learning_rat" in capsys.readouterr().err


def test_runs_with_no_runs(home, capsys):
    assert cli.main(["runs"]) == 0
    assert "no runs yet" in capsys.readouterr().out


def test_installed_entry_point_works_from_any_directory(tmp_path):
    exe = Path(sys.executable).parent / "tunewiz"
    if not exe.exists():
        pytest.skip("tunewiz is not installed in this environment")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0 and "fine-tune" in out.stdout.lower()


def test_module_entry_point_error_exit_code(tmp_path):
    r = run_cli("--home", str(tmp_path / "h"), "show", "nothing-here")
    assert r.returncode == 2 and "no run 'nothing-here'" in r.stderr


# -- 80 columns ---------------------------------------------------------------------
# Over SSH in tmux the terminal is often 80 wide: a table that wraps cannot be read, so every listing
# and plan fits 79 columns (a long path or command stays whole).


def _widest(text: str) -> int:
    """The longest line, less those that hold a word (a path) too long to cut."""
    return max((len(line) for line in text.splitlines() if max(map(len, line.split()), default=0) < 40), default=0)


def test_runs_listing_fits_80_columns_and_a_cut_id_still_finds_its_run(home, tmp_path, monkeypatch, capsys):
    from tunewiz.core.bookkeeping import runs
    from tunewiz.core.config import RunConfig

    monkeypatch.setenv("COLUMNS", "80")
    made = []
    for name in ("conservative learning rate on all tickets", "b"):
        cfg = RunConfig(name=name)
        cfg.data.path = str(tmp_path / "train.jsonl")
        made.append(runs.create_run(cfg, home))
    runs.update_record(
        made[0],
        lambda rec: rec.merge({"run": {"status": "completed"}, "results": {"train_loss": 0.355, "wall_time_s": 3504}}),
    )
    assert cli.main(["runs"]) == 0
    out = capsys.readouterr().out
    assert _widest(out) <= 79, out
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    cut = next(r for r in rows if r.endswith("…"))
    assert runs.find_run(home, cut.rstrip("…")) == made[0] == runs.find_run(home, cut)  # pasted with its '…' too
    assert "0.355" in rows[cut] and "58m24s" in rows[cut]
    assert made[1].name in rows  # a short id is shown whole


@pytest.mark.parametrize(
    "args",
    [
        ["hw"],
        ["recommend", "--gpu-gb", "16", "--tokens", "100000"],
        ["recommend", "--all"],
        ["fit", "--model", "llama3.1-8b", "--method", "qlora", "--gpu-gb", "24", "--tokens", "5000"],
        ["fit", "--model", "qwen2.5-1.5b"],
    ],
)
def test_plans_and_listings_fit_80_columns(args, home, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    assert cli.main(args) in (0, 1)
    out = capsys.readouterr().out
    assert out.strip() and _widest(out) <= 79, out


def test_settings_lists_every_setting_with_its_help_within_80_columns(capsys):
    import dataclasses

    from tunewiz.core.config import _SECTIONS

    assert cli.main(["settings"]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) < 80
    for section, klass in _SECTIONS.items():
        assert f"[{section}]" in out
        for f in dataclasses.fields(klass):
            assert f"  {f.name} = " in out, f"{section}.{f.name} is not listed"
    assert "  learning_rate = 0.0002  (between 0 and 1)\n      step size of each update" in out
    assert cli.main(["settings", "nosuch"]) == 2
