"""Bad input, met where a user meets it: everything checkable is refused at submit (before any process
starts) or by `tunewiz lint`, in one message that says what is wrong, where, and what to do; no command
prints a traceback. Exit codes: 0 clean, 1 the data has errors (lint), 2 could not run."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tunewiz.core.bookkeeping import runs
from tunewiz.core.data import dataset as data
from tunewiz.core.data import lint
from tunewiz.core.training import launcher
from tunewiz.tui import cli

from tests.conftest import ROOT, chat_row, write_jsonl

LONG_PROMPT = "word " * 600  # ~620 tokens with the template: over the 512 that training keeps


@pytest.fixture
def no_start(monkeypatch):
    """Submitting must fail before any trainer starts; a start here is a bug in the checks."""

    def refuse(run_dir, resume=False):
        raise AssertionError(f"a trainer was started for {run_dir}")

    monkeypatch.setattr(launcher, "start", refuse)


def tw(capsys, home: Path, *argv: str) -> tuple[int, str, str]:
    """`tunewiz --home HOME ARGV...` in this process: (exit code, stdout, stderr); never a traceback."""
    code = cli.main(["--home", str(home), *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def no_runs(home: Path) -> bool:
    root = runs.runs_root(home)
    return not root.exists() or not any(root.iterdir())


# -- 1. lint and preview truncate where training does ----------------------------------------------


def test_lint_and_preview_use_the_training_max_seq_len(home, tmp_path, capsys, tiny_model_dir):
    path = write_jsonl(tmp_path / "long.jsonl", [chat_row(f"q{i} {LONG_PROMPT}", f"answer {i}") for i in range(3)])
    model = str(tiny_model_dir)
    code, out, _ = tw(capsys, home, "lint", str(path), "--model", model)
    assert code == 1 and "(max_seq_len 512)" in out and "ready to train" not in out
    code, out, _ = tw(capsys, home, "preview", str(path), "--model", model, "--plain")
    assert code == 0 and "max_seq_len 512" in out and "cut here by max_seq_len" in out
    code, out, _ = tw(capsys, home, "lint", str(path), "--model", model, "--max-seq-len", "1024")
    assert code == 0 and "(max_seq_len 1024)" in out and "ready to train" in out


# -- 2. what would fail minutes into the run is a lint error, and stops submit --------------------


def test_every_row_cut_by_truncation_is_an_error(home, tmp_path, capsys, tiny_model_dir, no_start):
    path = write_jsonl(tmp_path / "long.jsonl", [chat_row(f"q{i} {LONG_PROMPT}", f"answer {i}") for i in range(3)])
    code, out, _ = tw(capsys, home, "lint", str(path), "--model", str(tiny_model_dir))
    assert code == 1
    line = next(x for x in out.splitlines() if "[nothing-to-train]" in x)
    assert line.startswith(f"{path}: error [nothing-to-train] every row loses all its trained tokens to truncation")
    assert "at max_seq_len 512: raise max_seq_len to at least 6" in line and "(the shortest row needs 6" in line
    code, _, err = tw(capsys, home, "train", "--data", str(path), "--model", str(tiny_model_dir))
    assert code == 2 and "every row loses all its trained tokens" in err and no_runs(home)


def test_one_row_cannot_be_split_and_says_so(home, tmp_path, capsys, tiny_model_dir, no_start):
    path = write_jsonl(tmp_path / "one.jsonl", [chat_row("Hi", "Hello!")])
    code, out, _ = tw(capsys, home, "lint", str(path), "--model", str(tiny_model_dir))
    assert code == 1
    assert (
        f"{path}: error [too-few-to-hold-out] too few rows to hold out: 1 row(s) with eval_fraction 0.1 leaves "
        "no held-out row; add rows, or give an eval file" in out
    )
    code, _, err = tw(capsys, home, "train", "--data", str(path), "--model", str(tiny_model_dir))
    assert code == 2 and "too few rows to hold out" in err and no_runs(home)
    held = write_jsonl(tmp_path / "held.jsonl", [chat_row("Bye", "Goodbye!")])
    code, out, _ = tw(capsys, home, "lint", str(path), "--model", str(tiny_model_dir), "--eval-data", str(held))
    assert code == 0 and "too-few-to-hold-out" not in out


def test_target_modules_are_checked_against_the_model(home, tmp_path, capsys, tiny_model_dir, no_start):
    path = write_jsonl(tmp_path / "d.jsonl", [chat_row(f"q{i}", f"a{i}") for i in range(4)])
    base = ["train", "--data", str(path), "--model", str(tiny_model_dir)]
    code, _, err = tw(capsys, home, *base, "--set", "training.target_modules=foo,q_prj")
    assert code == 2 and no_runs(home)
    assert "[training] target_modules" in err
    assert f"'foo' matches no layer of {tiny_model_dir}" in err and "or use all-linear" in err
    assert "'q_prj' matches no layer" in err and "did you mean q_proj?" in err
    code, _, err = tw(capsys, home, *base, "--set", "training.target_modules=norm", "--dry-run")
    assert code == 2 and "which LoRA cannot adapt" in err
    code, out, _ = tw(capsys, home, *base, "--set", "training.target_modules=q_proj,v_proj", "--dry-run")
    assert code == 0 and "nothing started" in out


# -- 3. the model directory ----------------------------------------------------------------------


def test_broken_config_json_is_one_sentence_and_exit_2(home, tmp_path, capsys, tiny_model_dir, no_start):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    for f in tiny_model_dir.iterdir():
        (broken / f.name).symlink_to(f)
    (broken / "config.json").unlink()
    (broken / "config.json").write_text('{"model_type": "llama",\n')
    path = write_jsonl(tmp_path / "d.jsonl", [chat_row(f"q{i}", f"a{i}") for i in range(4)])
    for argv in (["lint", str(path)], ["preview", str(path)], ["train", "--data", str(path)]):
        code, _, err = tw(capsys, home, *argv, "--model", str(broken))
        assert code == 2, argv
        assert f"{broken}/config.json:2: not valid JSON" in err and "copy or download the model again" in err
    assert no_runs(home)


def test_pickled_weights_are_refused_at_submit_with_the_conversion(home, tmp_path, capsys, tiny_model_dir, no_start):
    pickled = tmp_path / "pickled-model"
    pickled.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.suffix != ".safetensors":
            (pickled / f.name).symlink_to(f)
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    path = write_jsonl(tmp_path / "d.jsonl", [chat_row(f"q{i}", f"a{i}") for i in range(4)])
    code, _, err = tw(capsys, home, "train", "--data", str(path), "--model", str(pickled))
    assert code == 2 and no_runs(home)
    assert "has only pickled weights (pytorch_model.bin), which tunewiz refuses on purpose" in err
    assert "only for a model you trust" in err
    assert f"M.from_pretrained('{pickled}').save_pretrained('{pickled}-safetensors', safe_serialization=True)" in err
    # The data's checks need only the tokenizer: lint still runs.
    assert tw(capsys, home, "lint", str(path), "--model", str(pickled))[0] == 0


# -- 4. a model that runs its own code -------------------------------------------------------------


def test_trust_remote_code_is_warned_about_before_anything_starts(home, tmp_path, capsys, tiny_model_dir):
    path = write_jsonl(tmp_path / "d.jsonl", [chat_row(f"q{i}", f"a{i}") for i in range(4)])
    argv = ["train", "--data", str(path), "--model", str(tiny_model_dir), "--dry-run"]
    code, _, err = tw(capsys, home, *argv, "--set", "model.trust_remote_code=true")
    assert code == 0
    assert err.startswith(
        f"warning: model {tiny_model_dir} runs its own Python code (trust_remote_code = true); "
        "only use models whose authors you trust"
    )
    assert "trust_remote_code" not in tw(capsys, home, *argv)[2]


def test_the_wizard_warns_and_asks_before_starting_a_model_that_runs_its_own_code(home, tmp_path, monkeypatch):
    """The review step says what submit warns about (remote code, a run on the same device) and asks
    yes / no before a model that runs its own code starts."""
    import asyncio

    from textual.widgets import Static
    from tunewiz.core.planning import hardware, planner
    from tunewiz.tui.app import create_app
    from tunewiz.tui.review_step import ReviewStep
    from tunewiz.tui.widgets import ConfirmScreen

    from tests.test_app import SIZE, wait_until

    path = write_jsonl(tmp_path / "d.jsonl", [chat_row(f"q{i}", f"a{i}") for i in range(4)])
    started = []
    hw = hardware.detect(home)
    app = create_app(home, data=str(path))
    placement = planner.plan(app.cfg, hw).placement
    other = runs.create_run(app.cfg, home, extra={"plan": {"placement": placement}})
    runs.set_status(other, "running", host=socket.gethostname())

    async def run() -> None:
        monkeypatch.setattr(app, "start_run", lambda cfg: started.append(cfg.model.id))
        app.cfg.model.trust_remote_code = True
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            app.hardware = hw
            app.push_screen(ReviewStep())
            await wait_until(pilot, lambda: isinstance(app.screen, ReviewStep) and app.screen.query("#review-warnings"))
            review = app.screen
            await wait_until(pilot, lambda: "trust_remote_code" in str(review.query_one("#review-warnings").render()))
            warnings = str(review.query_one("#review-warnings").render())
            assert f"another run ({other.name}) is training on this {launcher.device_name(placement[0])}" in warnings
            assert review.focused is review.query_one("#toml-box")  # not Start: a stray Enter starts nothing
            await pilot.press("enter")
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmScreen) and started == []
            await pilot.press("ctrl+n")  # Start training, as the footer says
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            assert "runs its own Python code" in str(app.screen.query_one(Static).render())
            await pilot.press("n")
            await wait_until(pilot, lambda: app.screen is review)
            assert started == [] and "not started" in str(review.query_one("#nav-msg").render())
            await pilot.press("ctrl+n")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.press("y")
            await wait_until(pilot, lambda: started == [app.cfg.model.id])

    with runs.hold_trainer_lock(other):  # a live trainer holds its lock
        asyncio.run(run())


# -- 5. files that cannot be read ----------------------------------------------------------------


def test_symlink_loop_is_one_sentence(home, tmp_path, capsys, no_start):
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    for argv in (["train", "--data", str(loop)], ["train", "--data", str(loop), "--dry-run"], ["lint", str(loop)]):
        code, _, err = tw(capsys, home, *argv)
        assert code == 2, argv
        assert f"{loop}: is a symbolic link that leads back to itself (a loop" in err
        assert "point it at the data file" in err
    assert no_runs(home)


def test_a_directory_or_a_dangling_link_or_an_unreadable_file(home, tmp_path, capsys, monkeypatch):
    code, _, err = tw(capsys, home, "lint", str(tmp_path), "--no-tokens")
    assert code == 2 and f"{tmp_path}: is a directory; give a data file" in err
    dangling = tmp_path / "gone.jsonl"
    dangling.symlink_to(tmp_path / "nowhere.jsonl")
    code, _, err = tw(capsys, home, "lint", str(dangling), "--no-tokens")
    assert code == 2 and f"is a symbolic link to {tmp_path / 'nowhere.jsonl'}, which does not exist" in err
    locked = write_jsonl(tmp_path / "locked.jsonl", [chat_row("a", "b")])

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)  # chmod 000 does not stop root, who may run the tests
    code, _, err = tw(capsys, home, "lint", str(locked), "--no-tokens")
    assert code == 2 and f"{locked}: no permission to read it; check the file's permissions" in err


def test_a_named_pipe_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    r = subprocess.run(
        [sys.executable, "-m", "tunewiz.tui.cli", "--home", str(tmp_path / "h"), "lint", str(fifo), "--no-tokens"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=600,  # reading the pipe would wait here forever; 600 s: a hang guard on a busy machine
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{fifo}: is a named pipe (FIFO), so it cannot be read as data" in r.stderr
    assert "save the data to a file" in r.stderr


# -- 6. misspelt settings --------------------------------------------------------------------------


def test_unknown_setting_suggests_the_closest(home, tmp_path, capsys, no_start):
    path = write_jsonl(tmp_path / "d.jsonl", [chat_row(f"q{i}", f"a{i}") for i in range(4)])
    code, _, err = tw(capsys, home, "train", "--data", str(path), "--set", "training.lora_rr=8")
    assert code == 2 and "unknown setting 'training.lora_rr'; did you mean training.lora_r?" in err
    assert "training.fsdp" not in err  # one suggestion, not the whole list
    code, _, err = tw(capsys, home, "train", "--data", str(path), "--set", "zzz=1")
    assert code == 2 and "unknown setting 'zzz'; known settings: model.id" in err and "training.fsdp" in err
    toml = tmp_path / "run.toml"
    toml.write_text(f'[data]\npath = "{path}"\n[training]\nlora_rr = 8\n')
    code, _, err = tw(capsys, home, "train", "--config", str(toml), "--dry-run")
    assert code == 2 and f"in {toml}" in err and "[training] unknown key 'lora_rr'; did you mean lora_r?" in err
    assert no_runs(home)


@pytest.mark.parametrize(
    ("given", "meant"),
    [("training.lr", "training.learning_rate"), ("epochs", "training.num_epochs"), ("max_length", "data.max_seq_len")],
)
def test_another_tools_name_for_a_setting_gets_tunewizs(home, tmp_path, capsys, no_start, given, meant):
    """lr is closer to lora_r by spelling; what a person coming from TRL or Axolotl means is learning_rate."""
    path = write_jsonl(tmp_path / "d.jsonl", [chat_row(f"q{i}", f"a{i}") for i in range(4)])
    code, _, err = tw(capsys, home, "train", "--data", str(path), "--set", f"{given}=3")
    assert code == 2 and f"unknown setting {given!r}; did you mean {meant}?" in err
    assert no_runs(home)


# -- 7. two runs on one device ---------------------------------------------------------------------


def test_a_second_run_on_the_same_device_is_warned_about(home, tmp_path, capsys, tiny_model_dir):
    from tunewiz.core.planning import hardware, planner, presets

    path = write_jsonl(tmp_path / "d.jsonl", [chat_row(f"q{i}", f"a{i}") for i in range(4)])
    cfg = presets.build_config("balanced")
    cfg.data.path = str(path)
    placement = planner.plan(cfg, hardware.detect(home)).placement  # what a run gets on this machine
    other = runs.create_run(cfg, home, extra={"plan": {"placement": placement, "device": placement[0]}})
    runs.set_status(other, "running", host=socket.gethostname())
    where = launcher.device_name(placement[0])
    with runs.hold_trainer_lock(other):  # a live trainer holds its lock
        code, _, err = tw(capsys, home, "train", "--data", str(path), "--model", str(tiny_model_dir), "--dry-run")
    assert code == 0
    assert f"warning: another run ({other.name}) is training on this {where}: both will run at about half speed" in err


def test_sharing_names_the_gpu_and_ignores_other_devices_and_hosts(home, tmp_path):
    from types import SimpleNamespace

    from tunewiz.core.config import RunConfig

    def record(name: str, placement: list[str], host: str = "") -> Path:
        run_dir = runs.create_run(RunConfig(name=name), home, extra={"plan": {"placement": placement}})
        runs.update_record(run_dir, lambda rec: rec.run.update({"host": host or socket.gethostname()}))
        return run_dir

    same = record("same", ["cuda:0"])
    record("other-gpu", ["cuda:1"])
    record("other-host", ["cuda:0"], host="elsewhere")
    said = launcher.sharing(
        SimpleNamespace(placement=["cuda:0"]), launcher.busy_devices(home)
    )  # queued runs count: about to train
    assert said == [f"another run ({same.name}) is training on this GPU 0: both will run at about half speed"]


# -- 8. big files are read fast and in bounded memory ------------------------------------------------


def test_millions_of_bad_rows_are_counted_not_listed(tmp_path):
    path = tmp_path / "numbers.json"
    path.write_text(json.dumps(list(range(200_000))))
    report = lint.lint(path)
    assert report.rows == 200_000 and not report.examples
    assert len(report.findings) == data.LISTED_PER_RULE + 1
    last = report.findings[-1]
    assert last.rule == "unknown-format" and last.count == 200_000 - data.LISTED_PER_RULE
    assert f"lines {data.LISTED_PER_RULE + 1} to 200000" in last.message and "fix them the same way" in last.message


def test_an_example_of_a_whole_book_is_refused_before_tokenizing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data, "MAX_ROW_CHARS", 1000)
    path = write_jsonl(tmp_path / "book.jsonl", [chat_row("x" * 2000, "summary"), chat_row("Hi", "Hello")])
    code, out, _ = tw(capsys, tmp_path / "h", "lint", str(path), "--no-tokens")
    assert code == 1
    assert f"{path}:1: error [too-large] 2,007 characters in one example, more than any max_seq_len holds" in out
    assert "split it into examples of at most max_seq_len tokens" in out


# -- fuzz: whatever the file holds, a clean exit with a message --------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
chatty = st.dictionaries(
    st.sampled_from(["messages", "role", "content", "instruction", "output", "text", "prompt", "completion"]),
    json_values,
    max_size=3,
)
roles = st.sampled_from(["system", "user", "assistant", "tool", "human", ""])
chat_rows = st.fixed_dictionaries(  # often usable, so the token checks and the plan run too
    {
        "messages": st.lists(
            st.fixed_dictionaries({"role": roles, "content": st.text(min_size=1, max_size=40) | st.none()}),
            min_size=1,
            max_size=4,
        )
    }
) | st.builds(lambda q, a: {"instruction": q, "output": a}, st.text(min_size=1, max_size=30), st.text(max_size=30))
words = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=1, max_size=30)
good_rows = st.builds(chat_row, words, words)  # every row usable: the run would start, so the plan is made
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def fuzz_cli(home, tiny_model_dir, monkeypatch, capsys):
    """Runs lint, preview and train --dry-run on a file; the tokenizer is loaded once, not 90 times."""
    monkeypatch.setattr(lint, "load_tokenizer_of", functools.lru_cache(maxsize=None)(lint.load_tokenizer_of))
    monkeypatch.setattr(launcher, "start", lambda run_dir, resume=False: pytest.fail("dry runs start nothing"))

    def run(path: Path) -> None:
        model = ["--model", str(tiny_model_dir)]
        for argv in (["lint", str(path), *model], ["preview", str(path), *model], ["train", "--data", str(path),
                     *model, "--dry-run"]):  # fmt: skip
            code = cli.main(["--home", str(home), *argv])
            out, err = capsys.readouterr()
            assert code in (0, 1, 2), (argv, code)
            assert "Traceback" not in out + err, (argv, out, err)
            assert (out + err).strip(), argv  # a message, always
            if code == 2:
                assert err.startswith("tunewiz: error: ") or "error:" in err, (argv, err)

    return run


@FUZZ
@given(blob=st.binary(max_size=300), suffix=st.sampled_from([".jsonl", ".json", ".csv"]))
def test_fuzz_random_bytes(tmp_path, fuzz_cli, blob, suffix):
    path = tmp_path / f"blob{suffix}"
    path.write_bytes(blob)
    fuzz_cli(path)


@FUZZ
@given(
    values=st.lists(json_values | chatty | chat_rows, max_size=5) | st.lists(good_rows, min_size=2, max_size=6),
    as_array=st.booleans(),
)
def test_fuzz_random_json_values(tmp_path, fuzz_cli, values, as_array):
    path = tmp_path / ("rows.json" if as_array else "rows.jsonl")
    text = json.dumps(values) if as_array else "".join(json.dumps(v) + "\n" for v in values)
    path.write_text(text, encoding="utf-8")
    fuzz_cli(path)


csv_cells = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@FUZZ
@given(
    header=st.lists(st.sampled_from(["instruction", "output", "input", "prompt", "completion", "text", "x", ""]),
                    min_size=1, max_size=4),
    rows=st.lists(st.lists(csv_cells, max_size=5), max_size=5),
    raw=st.text(max_size=60),
)  # fmt: skip
def test_fuzz_random_csv(tmp_path, fuzz_cli, header, rows, raw):
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    path = tmp_path / "rows.csv"
    path.write_text(buf.getvalue() + raw, encoding="utf-8")
    fuzz_cli(path)
