"""The `tunewiz` command line: the argument parser and `main`. The commands are in tunewiz.tui.commands,
one module per group; the parser adds each sub-command with a function of its own, in the order
`tunewiz --help` lists them.

Errors a user can act on (bad data, unknown model, unwritable home) print one
message that says what and where, and exit non-zero; no traceback.
"""

from __future__ import annotations

import argparse
import sys

from tunewiz.core import __version__
from tunewiz.core.errors import TunewizError
from tunewiz.core.models.resolve import DEFAULT_MODEL
from tunewiz.tui.commands.chat import cmd_chat
from tunewiz.tui.commands.data import cmd_lint, cmd_preview
from tunewiz.tui.commands.export import cmd_eval, cmd_export
from tunewiz.tui.commands.planning import cmd_fit, cmd_hw, cmd_probe, cmd_recommend, cmd_settings
from tunewiz.tui.commands.records import cmd_repair, cmd_runs, cmd_show
from tunewiz.tui.commands.screens import cmd_history, cmd_review, cmd_wizard
from tunewiz.tui.commands.training import (
    cmd_attach,
    cmd_demo,
    cmd_queue,
    cmd_resume,
    cmd_stop,
    cmd_sweep,
    cmd_train,
)

EXIT_USAGE = 2


MODEL_HELP = f"model id (default {DEFAULT_MODEL}), a catalog name (see recommend), a local directory, or a hub id"


def mapping_options(s) -> None:
    """The column mapping of a table (core.data.columns), on every command that reads data."""
    g = s.add_argument_group(
        "tables (CSV / TSV, Parquet, JSONL with keys of its own, a datasets folder)",
        "say which column is the prompt and which the answer; `tunewiz lint FILE` proposes them",
    )
    g.add_argument("--prompt-column", metavar="COLUMN", help='the user turn: a column, or a template "Review: {text}"')
    g.add_argument("--answer-column", metavar="COLUMN", help="the answer the model learns (a label, a category, ...)")
    g.add_argument("--instruction", help='put before every prompt, e.g. "Classify the intent of this message."')
    g.add_argument("--system-prompt", help="a system prompt for every row")
    g.add_argument("--as-text", action="store_true", help="train the 'text' column as plain text, other columns unused")


def fit_options(s) -> None:
    """The machine and the data `fit` and `recommend` plan for."""
    s.add_argument("--seq-len", type=int, default=512, help="tokens per example (default 512)")
    s.add_argument("--tokens", type=int, default=0, help="tokens in the dataset, for the time estimate")
    s.add_argument("--headroom", type=float, default=0.12, help="share of memory kept free (default 0.12)")
    s.add_argument("--gpu-gb", type=float, help="pretend a GPU with this much free memory")
    s.add_argument("--ram-gb", type=float, help="pretend this much available RAM")


def add_wizard(sub) -> None:
    s = sub.add_parser("wizard", help="the step-by-step wizard (also what bare `tunewiz` opens)")
    s.add_argument("--data", help="start with this data file selected")
    s.set_defaults(func=cmd_wizard)


def add_history(sub) -> None:
    s = sub.add_parser("history", help="browse, compare, re-run and resume earlier runs")
    s.set_defaults(func=cmd_history)


def add_review(sub) -> None:
    s = sub.add_parser("review", help="blind A/B review: read the two models' answers, unlabelled; say which is better")
    s.add_argument("run", help="run id, unique part of it, a run directory, or `last`")
    s.add_argument(
        "--rows",
        type=int,
        metavar="N",
        help="held-out rows to read (default: what the review was opened with, else 30; the guides ask 20-50)",
    )
    s.set_defaults(func=cmd_review)


def add_hw(sub) -> None:
    s = sub.add_parser("hw", help="show the detected hardware and what it can train")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_hw)


def add_train(sub) -> None:
    s = sub.add_parser("train", help="start a fine-tuning run in the background")
    s.add_argument("--config", help="a run.toml (from an earlier run or written by hand) to repeat")
    s.add_argument("--model", help=MODEL_HELP)
    s.add_argument("--data", help="training data: .jsonl / .json, chat messages or Alpaca rows")
    s.add_argument("--eval-data", help="separate held-out file (default: hold out 10%% of --data)")
    s.add_argument("--preset", choices=["conservative", "balanced", "aggressive"])
    mapping_options(s)
    s.add_argument("--method", choices=["lora", "qlora"])
    s.add_argument("--epochs", type=float)
    s.add_argument("--max-steps", type=int)
    s.add_argument("--max-seq-len", type=int)
    s.add_argument("--name")
    s.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override any setting, e.g. --set learning_rate=1e-4 --set data.eval_fraction=0.2",
    )
    s.add_argument("--no-eval", action="store_true", help="skip the base-vs-fine-tuned comparison")
    s.add_argument("--follow", "-f", action="store_true", help="follow the run's progress (Ctrl-C detaches)")
    s.add_argument("--dry-run", action="store_true", help="print the plan for this machine and exit; start nothing")
    s.add_argument(
        "--queue",
        action="store_true",
        help="wait in the run queue: start after the runs before it on the same device (checked now)",
    )
    s.set_defaults(func=cmd_train)


def add_queue(sub) -> None:
    s = sub.add_parser("queue", help="the runs waiting their turn on this machine: list, move, cancel")
    qs = s.add_subparsers(dest="queue_command", metavar="ACTION")
    qs.add_parser("list", help="the running and waiting runs, in order (the default)")
    q = qs.add_parser("move", help="put a waiting run at another place (1: next to start)")
    q.add_argument("run", help="run id, unique part of it, or a run directory")
    q.add_argument("place", type=int)
    q = qs.add_parser("cancel", help="take a waiting run out of the queue (its directory stays)")
    q.add_argument("run", help="run id, unique part of it, or a run directory")
    s.set_defaults(func=cmd_queue)


def add_sweep(sub) -> None:
    s = sub.add_parser(
        "sweep", help="try all three presets on the same data and held-out rows, queued; `sweep show` ranks them"
    )
    s.add_argument("--data", help="training data: .jsonl / .json, chat messages or Alpaca rows")
    s.add_argument("--model", help=MODEL_HELP)
    mapping_options(s)
    s.add_argument("--eval-data", help="separate held-out file (default: hold out 10%% of --data)")
    s.add_argument("--method", choices=["lora", "qlora"])
    s.add_argument("--epochs", type=float, help="the same number of epochs for all three (default: each preset's)")
    s.add_argument("--max-steps", type=int)
    s.add_argument("--max-seq-len", type=int)
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting in all three runs")
    s.add_argument("--no-eval", action="store_true", help="skip the comparison (ranked by held-out loss then)")
    ss = s.add_subparsers(dest="sweep_command", metavar="ACTION")
    q = ss.add_parser("show", help="the ranking of a sweep's three runs, with time, memory and loss curves")
    q.add_argument("sweep", nargs="?", default="last", help="sweep id, unique part of it, or `last` (the default)")
    s.set_defaults(func=cmd_sweep)


def add_demo(sub) -> None:
    s = sub.add_parser("demo", help="the whole job on the bundled model and sample data, start to finish")
    s.add_argument("--epochs", type=float, help="override the number of epochs")
    s.set_defaults(func=cmd_demo)


def add_settings(sub) -> None:
    s = sub.add_parser("settings", help="every setting (--set KEY=VALUE, a config's sections): default, values, help")
    s.add_argument("section", nargs="?", help="only this section: model, data, training, evaluation, notify")
    s.set_defaults(func=cmd_settings)


def add_runs(sub) -> None:
    s = sub.add_parser("runs", help="list every run with its status and results")
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--reconcile",
        action="store_true",
        help="first record this machine's runs whose trainer died as crashed, and run their [notify] command "
        "(listing alone only reads)",
    )
    s.set_defaults(func=cmd_runs)


def add_show(sub) -> None:
    s = sub.add_parser("show", help="show one run's record and comparison")
    s.add_argument("run", help="run id, unique part of it, a run directory, or `last`")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--toml", action="store_true", help="print run.toml as it is")
    g.add_argument("--json", action="store_true")
    s.add_argument("--examples", type=int, default=0, metavar="N", help="also print N held-out predictions")
    s.set_defaults(func=cmd_show)


def add_repair(sub) -> None:
    s = sub.add_parser("repair", help="rebuild a run's damaged or missing run.toml from what its directory holds")
    s.add_argument("run", help="run id, unique part of it, a run directory, or `last`")
    s.set_defaults(func=cmd_repair)


def add_lint(sub) -> None:
    s = sub.add_parser("lint", help="check a data file for what silently ruins a fine-tune (exit 1 on errors)")
    s.add_argument("data", help="data file (.jsonl .json .csv .tsv .parquet) or a datasets folder")
    mapping_options(s)
    s.add_argument("--model", default=DEFAULT_MODEL, help="whose tokenizer and chat template to check against")
    s.add_argument(
        "--max-seq-len",
        type=int,
        help="longer examples are truncated (default: what training uses, [data] max_seq_len = 512)",
    )
    s.add_argument("--eval-data", help="a separate held-out file (checked for leakage from the training file)")
    s.add_argument("--eval-fraction", type=float, default=0.1, help=argparse.SUPPRESS)
    s.add_argument("--no-tokens", action="store_true", help="structure only: no tokenizer, no lengths")
    s.add_argument("--json", action="store_true", help="every finding and the summary as JSON")
    s.add_argument("--all", action="store_true", help="list every finding, notes included")
    s.add_argument("--limit", type=int, default=40, help="findings listed (default 40)")
    s.set_defaults(func=cmd_lint)


def add_preview(sub) -> None:
    s = sub.add_parser("preview", help="show an example exactly as the model is trained on it")
    s.add_argument("data")
    mapping_options(s)
    s.add_argument("--row", type=int, help="the line (or row) number, as lint names it (default: the first)")
    s.add_argument("--model", default=DEFAULT_MODEL)
    s.add_argument("--max-seq-len", type=int, help="tokens kept (default: what training uses, 512)")
    s.add_argument("--plain", action="store_true", help="mark trained text with [[ ]] instead of colour")
    s.set_defaults(func=cmd_preview)


def add_eval(sub) -> None:
    s = sub.add_parser("eval", help="compare a finished run's model with its base on the held-out rows")
    s.add_argument("run")
    s.set_defaults(func=cmd_eval)


def add_export(sub) -> None:
    s = sub.add_parser("export", help="merged model or GGUF + Ollama Modelfile, checked against the adapter model")
    s.add_argument("run")
    s.add_argument("--format", choices=["merged", "gguf"], default="merged")
    s.add_argument(
        "--type", default="q8_0", help="GGUF type: f16, bf16, f32, q8_0 (default), q6_k, q5_k_m, q4_k_m, q4_0"
    )
    s.add_argument("--no-verify", action="store_true", help="skip the held-out comparison")
    s.set_defaults(func=cmd_export)


def add_chat(sub) -> None:
    s = sub.add_parser("chat", help="talk with a finished run's model; one key puts the question to the base model")
    s.add_argument("run", help="run id, unique part of it, a run directory, or `last`")
    s.add_argument(
        "--plain",
        action="store_true",
        help="read questions from stdin, print answers as they stream (the default when stdout is not a terminal)",
    )
    s.add_argument("--max-new-tokens", type=int, default=256, help="tokens an answer may take (default 256)")
    s.add_argument("--temperature", type=float, default=0.0, help="0: greedy (the default); 0.7: varied answers")
    s.add_argument("--top-p", type=float, default=1.0, help="with --temperature: nucleus sampling share (e.g. 0.9)")
    s.add_argument("--seed", type=int, help="with --temperature: repeatable sampled answers")
    s.set_defaults(func=cmd_chat)


def add_attach(sub) -> None:
    s = sub.add_parser("attach", help="follow a run's progress (replays what happened so far)")
    s.add_argument("run")
    s.add_argument("--plain", action="store_true", help="print events instead of opening the train screen")
    s.set_defaults(func=cmd_attach)


def add_resume(sub) -> None:
    s = sub.add_parser("resume", help="continue a stopped or crashed run from its last checkpoint")
    s.add_argument("run")
    s.add_argument("--follow", "-f", action="store_true")
    s.set_defaults(func=cmd_resume)


def add_fit(sub) -> None:
    s = sub.add_parser("fit", help="will a model fit this machine? peak memory by component, and the time")
    s.add_argument("--model", default="smollm2-135m", help="catalog name, hub id, or a model directory")
    s.add_argument("--method", choices=["lora", "qlora"], default="lora")
    s.add_argument("--preset", choices=["conservative", "balanced", "aggressive"], default="balanced")
    s.add_argument("--data", help="plan for this data file (tokenized as training does) instead of --seq-len")
    mapping_options(s)
    s.add_argument("--batch", type=int, help="per-device batch (default: the preset's, split to fit)")
    s.add_argument("--rank", type=int, help="LoRA rank (default: the preset's)")
    s.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    s.add_argument("--gradient-checkpointing", action="store_true")
    fit_options(s)
    s.set_defaults(func=cmd_fit)


def add_probe(sub) -> None:
    s = sub.add_parser("probe", help="train a few steps to measure peak memory and speed against the estimate")
    s.add_argument("--data", required=True, help="training data (.jsonl / .json); the longest example is used")
    mapping_options(s)
    s.add_argument("--model", default=DEFAULT_MODEL, help=f"model id (default {DEFAULT_MODEL})")
    s.add_argument("--method", choices=["lora", "qlora"], default="lora")
    s.add_argument("--preset", choices=["conservative", "balanced", "aggressive"], default="balanced")
    s.add_argument("--steps", type=int, default=3, help="training steps to measure (default 3; the first warms up)")
    s.add_argument("--max-seq-len", type=int, help="truncate examples to this many tokens")
    s.add_argument("--batch", type=int, help="per-device batch (default: the preset's, split for this machine)")
    s.add_argument("--json", action="store_true", help="also print the figures as JSON")
    s.set_defaults(func=cmd_probe)


def add_recommend(sub) -> None:
    s = sub.add_parser("recommend", help="catalog models ranked by what fits this machine, with batch sizes")
    s.add_argument("--all", action="store_true", help="also list what does not fit")
    fit_options(s)
    s.set_defaults(func=cmd_recommend)


def add_stop(sub) -> None:
    s = sub.add_parser("stop", help="stop a run cleanly (saves a checkpoint and the adapter)")
    s.add_argument("run")
    s.add_argument("--now", action="store_true", help="stop at once, without saving")
    s.set_defaults(func=cmd_stop)


COMMANDS = (
    add_wizard,
    add_history,
    add_review,
    add_hw,
    add_train,
    add_queue,
    add_sweep,
    add_demo,
    add_settings,
    add_runs,
    add_show,
    add_repair,
    add_lint,
    add_preview,
    add_eval,
    add_export,
    add_chat,
    add_attach,
    add_resume,
    add_fit,
    add_probe,
    add_recommend,
    add_stop,
)
"""Each sub-command's parser, in the order `tunewiz --help` lists them."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tunewiz",
        description="Fine-tune a small language model on your own examples (LoRA / QLoRA), "
        "compare it with the base model, and keep a record of every run.",
    )
    p.add_argument("--version", action="version", version=f"tunewiz {__version__}")
    p.add_argument(
        "--home", help="where runs and converted models live (default: $TUNEWIZ_HOME or ~/.local/share/tunewiz)"
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    for add in COMMANDS:
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    ns = p.parse_args(argv)
    if getattr(ns, "model", None):  # a catalog name (`tunewiz recommend` prints them) as the id it stands for
        from tunewiz.core.models.catalog import canonical_id

        ns.model = canonical_id(ns.model)
    if not getattr(ns, "func", None):
        if not sys.stdout.isatty():
            p.print_help()
            return 0
        ns.func = cmd_wizard
    try:
        return ns.func(ns)
    except TunewizError as exc:  # the one base of every error a user can act on (core.errors)
        print(f"tunewiz: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
