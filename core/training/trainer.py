"""The training process: ``python -m tunewiz.core.training.trainer RUN_DIR [--resume]``.

Started detached by :mod:`tunewiz.core.training.launcher` (own session, stdin from /dev/null,
stdout/stderr to train.log), it takes the run's trainer lock (a second trainer on the
same run refuses) and takes the run.toml through its phases, read top to bottom in :func:`train`:

1. :func:`setup` (:class:`RunConfig` -> :class:`Prepared`) - lints the data against the model's
   template, renders every example with the loss mask of :func:`tunewiz.core.data.dataset.render`
   (assistant tokens only), and plans the run for this machine (:func:`tunewiz.core.planning.planner.plan`);
2. :func:`build` (:class:`Prepared` -> :class:`Built`) - the model as planned
   (:mod:`tunewiz.core.models.loading`), LoRA adapters, trl's SFTTrainer with the plan's arguments;
3. :func:`fit` (the trainer, a checkpoint -> :class:`Fitted`) - trains, appending step / eval events
   to events.jsonl (:class:`~tunewiz.core.training.callbacks.EventsCallback`), checkpointing;
4. :func:`save` - the adapter (PEFT, safetensors; its config names the base by hub id);
5. :func:`evaluate` (:class:`Serving` -> the [results] summary) - base vs fine-tuned on the held-out
   rows (:mod:`tunewiz.core.judging.evaluate`).

The probe (:mod:`tunewiz.core.training.probe`) runs the same setup and build for a few steps.

Signals (:mod:`tunewiz.core.training.stopping`): SIGHUP is ignored (a closed terminal must not stop
training). The first SIGTERM/SIGINT finishes the current step, saves a checkpoint and the adapter,
and records ``stopped``; a second one exits at once.

Raises nothing to its caller: every failure ends as status ``failed`` with a
reason (and for out-of-memory, what to change) in run.toml.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import shutil
import sys
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from tunewiz.core import __version__
from tunewiz.core.bookkeeping import checkpoints, runs
from tunewiz.core.bookkeeping.events import EventWriter
from tunewiz.core.bookkeeping.record import FailureKind
from tunewiz.core.config import RunConfig
from tunewiz.core.planning import planner
from tunewiz.core.training import distributed, launcher
from tunewiz.core.training.callbacks import Counter, EventsCallback, NonFinite, StepsAndCheckpoints
from tunewiz.core.training.process_memory import gpu_memory_figures, peak_memory_mb, steady_cpu_memory
from tunewiz.core.training.stopping import RunRemoved, RunWatch, StopFlag

log = logging.getLogger("tunewiz.trainer")


# -- what the phases hand each other ---------------------------------------------------------------


@dataclass
class Run:
    """The run as the trainer found it, before any phase: its record, its config, and this process's
    part (rank 0 is the primary: the one that writes the record, the adapter and the comparison)."""

    run_dir: Path
    resume: bool
    doc: runs.Record
    """run.toml as read at the start."""
    cfg: RunConfig
    primary: bool
    t_start: float

    def record(self, sections: dict[str, Any] | runs.Record) -> None:
        """Merge {table: {key: value}} (or a record's tables) into the record on the primary; nothing on the
        other ranks."""
        if self.primary:
            runs.update_record(self.run_dir, lambda rec: rec.merge(sections))

    def set_status(self, status: str, **fields: Any) -> None:
        """runs.set_status on the primary; nothing on the other ranks."""
        if self.primary:
            runs.set_status(self.run_dir, status, **fields)


@dataclass
class Prepared:
    """What :func:`setup` hands the other phases: the model, the rendered data and the plan."""

    cfg: RunConfig
    hw: Any
    resolved: Any
    tok: Any
    train_rows: list[dict]
    eval_rows: list[dict]
    eval_ex: list
    stats: dict[str, int]
    spec: Any
    plan: planner.Plan
    total_steps: int
    model_type: str = ""
    records: runs.Record = field(default_factory=runs.Record)
    """The tables setup learned for run.toml (model, data, hardware, versions, plan), merged into it."""


@dataclass
class Start:
    """Where training starts: the newest complete checkpoint when resuming (None: from the start)."""

    checkpoint: Path | None = None
    step: int = 0


class Built(NamedTuple):
    """What :func:`build` returns (a tuple, so ``trainer, model, counter = build(...)`` reads it too)."""

    trainer: Any
    """trl's SFTTrainer with callbacks.StepsAndCheckpoints mixed in."""
    model: Any
    """The PEFT model the trainer trains."""
    counter: Counter
    """The training tokens and time the steps count."""


@dataclass
class Fitted:
    """What :func:`fit` returns: the Trainer's TrainOutput and the wall time of the whole fit."""

    result: Any
    seconds: float


@dataclass
class Serving:
    """The precision the comparison runs in (planner.choose_serving_dtype), why, and whether the
    trained model must make way for the saved adapter loaded afresh."""

    dtype: str
    why: str
    reload: bool


@dataclass
class Outcome:
    """What the record's [results] and [artifacts] get at the run's end, filled in phase by phase."""

    results: dict[str, Any]
    artifacts: dict[str, str]


# -- the recipe ------------------------------------------------------------------------------------


def train(run_dir: Path, resume: bool, events: EventWriter, stop: StopFlag) -> None:
    """A run from its run.toml to its final status, through the phases."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # train.log gets our step lines, not progress bars
    run = open_run(run_dir, resume)
    p = prepare(run, events)
    events.emit("status", status="preparing", message=f"loading {run.cfg.model.id} ({run.cfg.model.method})")
    start = resume_point(run, events)
    if resume and run.primary and start.step >= p.total_steps > 0 and runs.has_adapter(run_dir):
        return compare_only(run, p, start, events, stop)  # it crashed after training ended, in the comparison

    watch = RunWatch(run_dir)
    if run.primary:
        checkpoints.make_reserve(run_dir)  # room for the final record if the disk fills
    built = build(p, run_dir / runs.CHECKPOINTS, watch=watch)
    on_cpu = p.plan.device == "cpu"
    built.trainer.add_callback(EventsCallback(events, stop, built.counter, start.step, on_cpu=on_cpu, watch=watch))
    announce(run, p, built.model, events)
    fitted = fit(built.trainer, start.checkpoint)
    watch.check()
    save(p, built.trainer, built.model, run_dir / runs.ADAPTER, run.primary)
    if not run.primary:  # data-parallel ranks other than 0 train only
        return

    outcome = training_outcome(run, p, built, fitted)
    if stop.requested:
        return record_stop(run, outcome, built.trainer.state.global_step, events)
    run.record({"results": outcome.results, "artifacts": outcome.artifacts})
    serving = evaluation_model(p, built.trainer)
    model = None if serving.reload else built.model
    del built  # this frame held the last references to the trained model and its optimizer states
    compare_and_finish(run, p, events, stop, outcome, model, serving)


def open_run(run_dir: Path, resume: bool) -> Run:
    """The run's record and its config, validated as at submit."""
    t_start = time.time()
    doc = runs.read_record(run_dir)
    cfg = doc.request(strict=True, source=str(run_dir / runs.RECORD)).validate(str(run_dir / runs.RECORD))
    return Run(run_dir, resume, doc, cfg, distributed.is_primary(), t_start)


def prepare(run: Run, events) -> Prepared:
    """:func:`setup` for this run, refusing to resume on data that changed; setup's sections recorded."""
    from tunewiz.core.planning import hardware

    # Every rank plans from rank 0's view of the machine: the same inputs give the same plan.
    hw = distributed.from_primary(hardware.detect(run.run_dir) if run.primary else None)
    p = setup(run.cfg, runs.home_of(run.run_dir), events, hw=hw)
    if run.resume and run.doc.data.sha256 not in (None, p.records.data.sha256):
        raise RuntimeError(
            f"the data file {run.cfg.data.path} changed since this run started (sha256 differs); "
            "resuming would train on different data. Start a new run instead."
        )
    run.record(p.records)
    return p


def resume_point(run: Run, events) -> Start:
    """Where training starts: when resuming, the newest complete checkpoint (newer torn ones are skipped
    and said so); otherwise the start."""
    if not run.resume:
        return Start()
    ckpt, skipped = checkpoints.newest_complete(run.run_dir / runs.CHECKPOINTS)
    for s in skipped:  # newer than the one resumed from, and not whole
        log.warning("skipping %s: %s", s.path.name, s.why)
        events.emit("checkpoint_skipped", path=str(s.path), reason=s.why)
    log.info("resuming from %s", ckpt.name if ckpt else "the start: no complete checkpoint")
    return Start(ckpt, checkpoints.step_of(ckpt) if ckpt else 0)


def compare_only(run: Run, p: Prepared, start: Start, events, stop: StopFlag) -> None:
    """A resumed run whose training had ended (its adapter saved): no step past the end, only the
    comparison, with the [results] of its training kept."""
    log.info("training had ended at step %d of %d: resuming runs only the comparison", start.step, p.total_steps)
    run.set_status("running", pid=os.getpid())
    events.emit("status", status="running", message="training had ended: only the comparison is left")
    results = {k: v for k, v in run.doc.results.to_dict().items() if k not in ("base", "finetuned")}
    artifacts = {**run.doc.artifacts.to_dict(), "adapter": str(run.run_dir / runs.ADAPTER)}
    compare_and_finish(run, p, events, stop, Outcome(results, artifacts), None, evaluation_model(p, None))


def announce(run: Run, p: Prepared, model, events) -> None:
    """Training starts: the real adapter size and the refined estimate recorded, status `running`."""
    cfg, run_dir = p.cfg, run.run_dir
    trainable, total = model.get_nb_trainable_parameters()
    est = p.plan.estimate
    if est is not None:  # the real adapter size from PEFT
        est.breakdown.count_trainable(trainable, est.setup.optimizer)
        est.source = "trainer: tokenized data, the real adapter size; replaces the estimate made at submit"
    run.record(
        {
            "model": {"parameters": total, "trainable_parameters": trainable},
            "training": {"effective_batch": p.plan.effective_batch, "total_steps": p.total_steps},
            **({"estimate": est.to_dict()} if est is not None else {}),
            **({"artifacts": {"tensorboard": str(run_dir / TENSORBOARD_DIR)}} if tracks_tensorboard(cfg) else {}),
        },
    )
    run.set_status("running", pid=os.getpid())
    events.emit(
        "status",
        status="running",
        total_steps=p.total_steps,
        message=f"training {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%)",
    )
    log.info(
        "training %s parameters of %s on %d rows, %d steps",
        f"{trainable:,}",
        f"{total:,}",
        len(p.train_rows),
        p.total_steps,
    )


def training_outcome(run: Run, p: Prepared, built: Built, fitted: Fitted) -> Outcome:
    """[results] of the training part and the run's [artifacts] so far."""
    run_dir = run.run_dir
    results = results_of(p, built, fitted, distributed.world_size())
    artifacts = {"adapter": str(run_dir / runs.ADAPTER), "checkpoints": str(run_dir / runs.CHECKPOINTS)}
    if tracks_tensorboard(p.cfg):
        artifacts["tensorboard"] = str(run_dir / TENSORBOARD_DIR)
    return Outcome(results, artifacts)


def record_stop(run: Run, outcome: Outcome, step: int, events) -> None:
    """A stop during training: the adapter is saved; the run is `stopped` at `step`, with no comparison."""
    outcome.results["wall_time_s"] = round(time.time() - run.t_start, 1)
    run.record({"results": outcome.results, "artifacts": outcome.artifacts})
    run.set_status("stopped", stopped_at_step=step)
    events.emit("status", status="stopped", step=step)
    log.info("stopped at step %d; adapter saved to %s", step, run.run_dir / runs.ADAPTER)


# -- 1. setup: the model resolved, the data checked and rendered, the run planned -----------------


@dataclass
class Rendered:
    """The data as the model sees it: examples split into training and held-out, tokenized with the
    loss mask, and the files' fingerprints for the record."""

    train_rows: list[dict]
    eval_rows: list[dict]
    eval_ex: list
    stats: dict[str, int]
    record: dict[str, Any]
    """The data section's part learned while rendering (sha256, format, row counts, token counts)."""


def setup(cfg: RunConfig, home_dir: Path, events, hw=None, lint_first: bool = True) -> Prepared:
    """Resolve the model, check and render the data, and plan the run for this machine."""
    from tunewiz.core.models import resolve as models
    from tunewiz.core.models.loading import load_tokenizer

    hw = usable_hardware(hw, home_dir)
    events.emit("status", status="preparing", message="resolving the model")
    resolved = models.resolve(cfg.model.id, home_dir)
    tok = load_tokenizer(resolved.path, cfg.model.trust_remote_code)
    records = runs.Record()  # the tables setup adds to the run's record
    if lint_first:
        events.emit("status", status="preparing", message="checking the data against the model's template")
        records.data.update(lint_data(cfg, tok))

    events.emit("status", status="preparing", message="loading and rendering the data")
    data = render_data(cfg, tok)
    model_cfg = models.read_config(resolved.path)
    model_type = str(model_cfg.get("model_type", ""))
    spec, plan = plan_run(cfg, hw, model_cfg, data)

    t = cfg.training
    steps_per_epoch = -(-len(data.train_rows) // plan.effective_batch)
    total_steps = t.max_steps if t.max_steps > 0 else int(steps_per_epoch * t.num_epochs + 0.999)
    records.merge(
        {
            "model": {
                "source": resolved.source,
                "resolved_path": str(resolved.path),
                "revision": resolved.revision,
                "effective_dtype": plan.dtype,
            },
            "data": data.record,
            "hardware": {**hw.to_dict(), "processes": distributed.world_size()},
            "versions": library_versions(),
            "plan": {**machine_placement(plan.to_record()), "total_steps": total_steps},
        }
    )
    return Prepared(
        cfg,
        hw,
        resolved,
        tok,
        data.train_rows,
        data.eval_rows,
        data.eval_ex,
        data.stats,
        spec,
        plan,
        total_steps,
        model_type,
        records,
    )


def usable_hardware(hw, home_dir: Path):
    """`hw` (or this machine's, detected), without GPUs that this torch cannot use."""
    import torch
    from tunewiz.core.planning import hardware

    hw = hw or hardware.detect(home_dir)
    if hw.gpus and not torch.cuda.is_available():  # NVML sees a GPU this torch cannot use (a CPU build, old driver)
        log.warning("the driver reports %d GPU(s) but torch cannot use CUDA: training on the CPU", len(hw.gpus))
        hw.gpus = []
    return hw


def lint_data(cfg: RunConfig, tok) -> dict[str, Any]:
    """The data checked against the model's template; the lint's part of the data section. Raises
    DataError with the same errors `tunewiz lint` and the wizard's data step show, with their lines."""
    from tunewiz.core.data import dataset as data_mod
    from tunewiz.core.data import lint

    report = lint.lint_run(cfg, tok)
    if report.errors:
        raise data_mod.DataError([str(f) for f in report.errors])
    return report.record()


def render_data(cfg: RunConfig, tok) -> Rendered:
    """Load the data, split off the held-out rows (or load them from eval_path), and tokenize both."""
    from tunewiz.core.data import dataset as data_mod

    loaded = data_mod.load_for(cfg.data)
    eval_loaded = data_mod.load_for(cfg.data, cfg.data.eval_path) if cfg.data.eval_path else None
    if eval_loaded is not None:
        train_ex, eval_ex = loaded.examples, eval_loaded.examples
    else:
        train_ex, eval_ex = data_mod.split(loaded.examples, cfg.data.eval_fraction, cfg.data.split_seed)
    train_rows, stats = data_mod.tokenize_examples(tok, train_ex, cfg.data.max_seq_len)
    eval_rows, _ = data_mod.tokenize_examples(tok, eval_ex, cfg.data.max_seq_len)
    if not train_rows:
        raise data_mod.DataError(["no example has any trained token left after truncation; raise max_seq_len"])
    record = {
        "sha256": loaded.sha256,
        "format": loaded.format,
        "train_rows": len(train_rows),
        "eval_rows": len(eval_rows),
        **({"eval_sha256": eval_loaded.sha256} if eval_loaded else {}),
        **stats,
    }
    return Rendered(train_rows, eval_rows, eval_ex, stats, record)


def plan_run(cfg: RunConfig, hw, model_cfg: dict[str, Any], data: Rendered) -> tuple[Any, planner.Plan]:
    """(catalog spec, plan) for the tokenized data on `hw`; raises when the plan has problems. Sets
    torch's thread count as planned."""
    import torch
    from tunewiz.core.models import catalog

    try:
        spec = catalog.from_config(model_cfg, key=cfg.model.id)
    except catalog.CatalogError:  # no estimate: the plan falls back to the safe side
        spec = None
    shape = data_shape(data.train_rows, data.stats, "tokenized by the trainer")
    plan = planner.plan(
        cfg,
        hw,
        spec,
        shape,
        model_type=str(model_cfg.get("model_type", "")),
        trained_only_available=trained_only_available(),
    )
    log.info(
        "plan: %s, %d per device x %d accumulation, checkpointing %s",
        plan.placement[min(distributed.local_rank(), len(plan.placement) - 1)],
        plan.per_device_batch,
        plan.accumulation,
        "on" if plan.gradient_checkpointing else "off",
    )
    if plan.memory_advice:
        log.warning("the plan says this may not fit: %s", plan.memory_advice)
    if plan.problems:
        raise RuntimeError("; ".join(plan.problems))
    torch.set_num_threads(plan.threads)
    return spec, plan


def data_shape(rows: list[dict], stats: dict[str, int], source: str):
    from tunewiz.core.planning.memory import DataShape

    total = max(stats.get("total_tokens", 0), 1)
    return DataShape(
        longest=max(len(r["input_ids"]) for r in rows),
        train_tokens=sum(len(r["input_ids"]) for r in rows),
        trained_fraction=max(stats.get("trained_tokens", 0) / total, 0.01),
        source=source,
        rows=len(rows),
    )


def machine_placement(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan as the record keeps it: a one-process trainer sees only its GPU, as cuda:0; the record
    names it as the machine does (launcher.PLACEMENT_ENV), so the queue and `tunewiz queue` know which
    GPU is in use."""
    place = os.environ.get(launcher.PLACEMENT_ENV)
    if place and plan["processes"] == 1 and plan["device"] == "cuda" and place != plan["placement"][0]:
        plan["placement"] = [place]
        plan["reasons"]["placement"] = f"{place}: as placed when the run started (this trainer sees only it)"
    return plan


# -- 2. build: the model, its adapters and the trainer ----------------------------------------------


def build(
    p: Prepared,
    output_dir: Path,
    callbacks=(),
    train_rows: list[dict] | None = None,
    with_eval: bool = True,
    watch: RunWatch | None = None,
) -> Built:
    """The model as planned, with LoRA adapters, inside trl's SFTTrainer, checkpointing into `output_dir`.

    `callbacks`: TrainerCallbacks besides the trainer's own (the probe times its steps with one);
    `train_rows`: rows to train on instead of the prepared ones; `with_eval`: whether the held-out loss
    is computed while training; `watch`: a removed run is not re-created by a checkpoint. Checkpoints
    are whole or do not count (callbacks.StepsAndCheckpoints).
    """
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling
    from tunewiz.core.models import loading as modeling

    class CountingTrainer(StepsAndCheckpoints, SFTTrainer):
        """trl's SFTTrainer that counts its steps' tokens and keeps its checkpoints whole."""

    cfg, plan = p.cfg, p.plan
    if plan.device == "cpu":
        steady_cpu_memory()  # before the model's weights and the optimizer states are allocated
    rank = distributed.local_rank()
    model = modeling.load_base(
        p.resolved.path,
        plan.dtype,
        method=cfg.model.method,
        attention=plan.attention,
        device=plan.placement[min(rank, len(plan.placement) - 1)],
        trust_remote_code=cfg.model.trust_remote_code,
        gradient_checkpointing=plan.gradient_checkpointing,
    )
    model = modeling.add_lora(model, cfg.training, plan.gradient_checkpointing)
    if plan.score_trained_only:
        score_only_trained_positions()
    counter = Counter()
    trainable = sum(x.numel() for x in model.parameters() if x.requires_grad)

    rows = p.train_rows if train_rows is None else train_rows
    asked = cfg.evaluation.enabled or cfg.training.eval_steps > 0  # --no-eval: no epoch-end held-out pass
    eval_rows = loss_sample(p.eval_rows, cfg.data.split_seed) if with_eval and asked else []
    trainer = CountingTrainer(
        model=model,
        args=sft_args(cfg, plan, output_dir, has_eval=bool(eval_rows)),
        train_dataset=Dataset.from_list(rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=p.tok,
        data_collator=DataCollatorForLanguageModeling(pad_token_id=p.tok.pad_token_id, padding_free=plan.padding_free),
        counter=counter,
        checkpoints_dir=output_dir,
        keep=cfg.training.save_total_limit,
        first_checkpoint_bytes=trainable * 12 + (4 << 20),  # weights + two AdamW states in fp32, small files
        watch=watch,
    )
    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; our callback writes readable lines
    for cb in callbacks:
        trainer.add_callback(cb)
    return Built(trainer, model, counter)


MAX_LOSS_ROWS = 1000
"""Held-out rows the in-training held-out loss is computed on, at most: a fixed sample of many held-out
rows (10,000 took over 8 minutes on 2 cores, and a stop waited for it)."""


def loss_sample(rows: list[dict], seed: int, limit: int = MAX_LOSS_ROWS) -> list[dict]:
    """`rows`, or a fixed seeded sample of `limit` of them in their order.

    >>> len(loss_sample([{}] * 5000, 42)), loss_sample([{"a": 1}], 42)
    (1000, [{'a': 1}])
    """
    if len(rows) <= limit:
        return rows
    import random

    keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in keep]


# -- 3. fit ----------------------------------------------------------------------------------------


def fit(trainer, checkpoint: Path | None) -> Fitted:
    """Train (from `checkpoint` when resuming)."""
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    return Fitted(result, time.time() - t0)


def results_of(p: Prepared, built: Built, fitted: Fitted, world: int) -> dict[str, Any]:
    """[results] of the training part: losses, honest speed (trained tokens over time in training steps),
    peak memory against the plan's estimate."""
    state, counter, train_time = built.trainer.state, built.counter, fitted.seconds
    eval_losses = [h["eval_loss"] for h in state.log_history if "eval_loss" in h]
    tokens = counter.tokens * world  # each rank counts its own share
    out: dict[str, Any] = {
        "train_loss": round(float(fitted.result.training_loss), 4),
        "steps": state.global_step,
        "epochs": round(float(state.epoch or 0.0), 3),
        "tokens_per_s": round(tokens / max(counter.seconds, 1e-6), 1),
        "train_tokens_seen": tokens,
        "padding_fraction": counter.padding_fraction,
        "peak_memory_mb": peak_memory_mb(),
        "train_time_s": round(train_time, 1),
        "step_time_s": round(counter.seconds, 2),
    }
    if eval_losses:
        out["eval_loss"] = round(float(eval_losses[-1]), 4)
    out.update(gpu_memory_figures())
    est = p.plan.estimate
    if est is not None:
        # max_memory_allocated on a GPU does not see the CUDA context the estimate adds
        bd = est.breakdown
        predicted = bd.total - (bd.overhead if bd.device != "cpu" else 0.0)
        out["peak_memory_vs_estimate"] = round(out["peak_memory_mb"] / max(predicted, 1e-9) - 1, 4)
        if est.tokens_per_s:
            out["tokens_per_s_vs_estimate"] = round(out["tokens_per_s"] / est.tokens_per_s - 1, 4)
        if est.train_time_s:
            out["train_time_vs_estimate"] = round(train_time / est.train_time_s - 1, 4)
    return out


# -- 4. save ---------------------------------------------------------------------------------------


def save(p: Prepared, trainer, model, adapter_dir: Path, primary: bool) -> None:
    """The adapter in PEFT format (safetensors) with the tokenizer; its config names the base by hub id."""
    from tunewiz.core.models import loading as modeling
    from tunewiz.core.models import resolve as models

    sharded = bool(getattr(trainer, "is_fsdp_enabled", False))
    if sharded:  # every rank hands its shards over; rank 0 writes a whole PEFT adapter
        trainer.save_model(str(adapter_dir))
    if not primary:
        return
    if not sharded:
        model.save_pretrained(str(adapter_dir), safe_serialization=True)
    p.tok.save_pretrained(str(adapter_dir))
    hub_id = models.hub_id_of(p.cfg.model.id)
    if hub_id:  # a local directory has no name another machine would know
        revision = str(p.resolved.revision or "")
        modeling.portable_adapter_config(adapter_dir, hub_id, revision if len(revision) == 40 else "")


# -- 5. evaluate -----------------------------------------------------------------------------------


def evaluation_model(p: Prepared, trainer) -> Serving:
    """The precision the comparison runs in (the planner's serving decision), and whether the trained model
    must make way for the saved adapter loaded afresh: the sharded model runs only with every rank, and
    a CPU run trained in 16 bit answers in float32."""
    d = planner.choose_serving_dtype(p.plan.device, p.plan.dtype)
    dtype, why = d.value, f"{d.value}: {d.reason}"
    return Serving(dtype, why, bool(getattr(trainer, "is_fsdp_enabled", False)) or dtype != p.plan.dtype)


def evaluate(
    p: Prepared, model, serving: Serving, adapter_dir: Path, run_dir: Path, events, stop: StopFlag | None = None
) -> dict[str, Any]:
    """Base vs fine-tuned on the held-out rows in `serving.dtype` (`model` None: the saved adapter, loaded
    afresh); returns the summary for [results]."""
    import torch
    from tunewiz.core.judging import evaluate as evaluation
    from tunewiz.core.models import loading as modeling

    if model is None:
        gc.collect()  # the trained model and its optimizer states first
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        model = modeling.adapter_model(
            p.resolved.path, adapter_dir, serving.dtype, p.cfg.model.trust_remote_code, p.plan.placement[0]
        )
    log.info("evaluating in %s", serving.why)
    should_stop = (lambda: stop.requested) if stop is not None else None
    return evaluation.compare(
        model, p.tok, p.eval_ex, p.cfg, run_dir, events=events, precision=serving.dtype, should_stop=should_stop
    )


def compare_and_finish(run: Run, p: Prepared, events, stop: StopFlag, outcome: Outcome, model, serving: Serving):
    """The base-vs-fine-tuned comparison, then `completed` (the adapter is saved: the run is done).

    A stop during the comparison ends it at the next batch: the run is completed with [results]
    comparison saying it was skipped and how to run it (`tunewiz eval`), never claiming answers it did
    not compare; a second signal (`stop --now`) records the same before the process exits."""
    from tunewiz.core.judging import evaluate as evaluation

    cfg, run_dir, t_start = p.cfg, run.run_dir, run.t_start
    results, artifacts = outcome.results, outcome.artifacts

    def complete(note: str = "") -> None:
        if note:
            results["comparison"] = note
            for key in ("base", "finetuned", "max_new_tokens", "precision"):
                results.pop(key, None)
        results["wall_time_s"] = round(time.time() - t_start, 1)
        runs.update_record(run_dir, lambda rec: rec.merge({"results": results, "artifacts": artifacts}))
        runs.set_status(run_dir, "completed")

    skipped = f"skipped: stopped before the comparison ended; `tunewiz eval {run_dir.name}` runs it"
    stop.last_words = lambda: complete(skipped)
    if cfg.evaluation.enabled and p.eval_ex and not stop.requested:
        compared = min(len(p.eval_ex), cfg.evaluation.max_examples)
        of = "" if compared == len(p.eval_ex) else f" of the {len(p.eval_ex)}"
        events.emit("status", status="evaluating", message=f"base vs fine-tuned on {compared}{of} held-out rows")
        log.info("evaluating base vs fine-tuned on held-out rows")
        try:
            results.update(evaluate(p, model, serving, run_dir / runs.ADAPTER, run_dir, events, stop))
            artifacts["predictions"] = str(run_dir / evaluation.PREDICTIONS)
        except evaluation.Stopped:
            log.info("stop requested during the comparison: the run is completed without it")
    stop.last_words = None
    note = skipped if stop.requested and "finetuned" not in results and cfg.evaluation.enabled else ""
    complete(note)
    events.emit("status", status="completed", results=results)
    log.info("completed in %.0fs%s", results["wall_time_s"], f" ({note})" if note else "")


# -- the trainer's arguments -----------------------------------------------------------------------


TENSORBOARD_DIR = "tensorboard"
"""Where a run with report_to = tensorboard writes its event files: RUN_DIR/tensorboard."""


def tracking_args(report_to: str, run_dir: Path, names: set[str]) -> dict[str, Any]:
    """The Trainer's arguments for `report_to` (config.REPORT_TO): nothing is reported unless asked.
    TensorBoard writes under RUN_DIR/tensorboard (transformers 5 reads it from TENSORBOARD_LOGGING_DIR,
    4.x from logging_dir); a tracker run is named after the run's id. Only the primary process reports
    (the Trainer's callbacks check is_world_process_zero)."""
    if report_to in ("", "none"):
        return {"report_to": "none"}
    kw: dict[str, Any] = {"report_to": report_to, "run_name": run_dir.name}
    if report_to == "trackio":
        kw["project"] = "tunewiz"  # logged locally: no trackio_space_id, so no Space is made
    if report_to == "tensorboard":
        logdir = str(run_dir / TENSORBOARD_DIR)
        os.environ["TENSORBOARD_LOGGING_DIR"] = logdir
        if "logging_dir" in names:
            kw["logging_dir"] = logdir
    return kw


def sft_args(cfg: RunConfig, plan: planner.Plan, output_dir: Path, has_eval: bool):
    """SFTConfig from the request's hyper-parameters and the plan's decisions, feature-detecting
    names that moved between versions."""
    import dataclasses

    from trl import SFTConfig

    t = cfg.training
    names = {f.name for f in dataclasses.fields(SFTConfig)}
    kw: dict[str, Any] = dict(
        output_dir=str(output_dir),
        num_train_epochs=t.num_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=plan.per_device_batch,
        per_device_eval_batch_size=plan.per_device_batch,
        gradient_accumulation_steps=plan.accumulation,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if t.save_steps else "epoch",
        save_total_limit=None,  # rotated by the trainer after a checkpoint is complete (core.checkpoints)
        gradient_checkpointing=plan.gradient_checkpointing,
        max_length=cfg.data.max_seq_len,
        **tracking_args(t.report_to, output_dir.parent, names),
        ddp_find_unused_parameters=False,  # every LoRA weight gets a gradient; the search costs a graph pass
        disable_tqdm=True,
        dataloader_num_workers=plan.workers,
        dataloader_pin_memory=plan.device == "cuda",
        optim=plan.optimizer,
        bf16=plan.mixed_precision == "bf16",
        fp16=plan.mixed_precision == "fp16",
        use_cpu=plan.device == "cpu",
    )
    if t.save_steps:
        kw["save_steps"] = t.save_steps
    if plan.group_by_length:
        if "train_sampling_strategy" in names:  # transformers 5
            kw["train_sampling_strategy"] = "group_by_length"
        else:
            kw["group_by_length"] = True
    if has_eval:
        kw["eval_strategy"] = "steps" if t.eval_steps else "epoch"
        if t.eval_steps:
            kw["eval_steps"] = t.eval_steps
    else:
        kw["eval_strategy"] = "no"
    if "warmup_ratio" in names:
        kw["warmup_ratio"] = t.warmup_ratio
    else:  # transformers 5: warmup_steps takes a ratio when < 1
        kw["warmup_steps"] = t.warmup_ratio
    return SFTConfig(**{k: v for k, v in kw.items() if k in names})


def tracks_tensorboard(cfg: RunConfig) -> bool:
    return cfg.training.report_to == "tensorboard"


def trained_only_available() -> bool:
    """Whether this trl lets tunewiz project only the trained positions through the output layer."""
    try:
        from trl.trainer import utils as trl_utils
    except ImportError:
        return False
    return hasattr(trl_utils, "_use_triton")


def score_only_trained_positions() -> bool:
    """Let trl's fused LM head project only the positions that carry a label; True when it took effect.

    trl scores every position unless Triton is present (to keep tile shapes fixed for compilers).
    On CPU and eager CUDA nothing recompiles, and with loss on assistant tokens only (~20% of
    positions here) projecting the rest through a 49k-token vocabulary is wasted work. The hook is
    private to trl: where it is missing nothing changes, the plan says so and the estimate counts
    every position.
    """
    if not trained_only_available():
        return False
    from trl.trainer import utils as trl_utils

    trl_utils._use_triton = lambda device: True
    return True


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "tunewiz": __version__}
    for dist in ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


# -- the process -----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """The training process."""
    parser = argparse.ArgumentParser(prog="python -m tunewiz.core.training.trainer", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    ns = parser.parse_args(argv)
    run_dir: Path = ns.run_dir.resolve()

    tag = f" [rank {distributed.rank()}]" if distributed.world_size() > 1 else ""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format=f"%(asctime)s{tag} %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices, not the user's concern
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    stop = StopFlag()
    stop.install()
    if not distributed.is_primary():
        return _secondary(run_dir, ns.resume, stop)

    with runs.hold_trainer_lock(run_dir) as got:
        if not got:
            print(f"another trainer is already running on {run_dir}", file=sys.stderr)
            return 3
        events = EventWriter(run_dir)
        if ns.resume:
            events.emit("status", status="resuming")
        try:
            train(run_dir, ns.resume, events, stop)
            return 0
        except RunRemoved as exc:  # nothing to record in: the directory is gone, and stays gone
            log.warning("%s", exc)
            return 4
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the record
            reason = classify_failure(exc, run_dir)
            if isinstance(exc, NonFinite):
                reason += last_good_adapter(run_dir)
            traceback.print_exc()
            log.error("failed: %s", reason)
            if reason.startswith("Disk full"):
                checkpoints.release_reserve(run_dir)  # the record is small: this makes room for it
            kind = FailureKind.of_reason(reason).value  # the one reader of the words
            try:
                runs.set_status(run_dir, "failed", failure_reason=reason, failure_kind=kind)
                events.emit("status", status="failed", reason=reason)
            except Exception:  # noqa: BLE001 - a disk still full: `tunewiz runs` records it later from the log
                traceback.print_exc()
            return 1
        finally:
            checkpoints.release_reserve(run_dir)
            events.close()
            tell_the_end(run_dir)
            distributed.finish()


def classify_failure(exc: BaseException, run_dir: Path | None = None) -> str:
    """The failure reason for the record: what happened and what to do. A full disk reads as disk full
    whichever layer noticed (Python, safetensors, torch's 'unexpected pos')."""
    name = type(exc).__name__
    text = str(exc)
    if "OutOfMemoryError" in name or "out of memory" in text.lower() or isinstance(exc, MemoryError):
        return f"{text or name}. {planner.OOM_ADVICE}"
    if checkpoints.is_disk_full(exc, run_dir):
        return checkpoints.disk_full_reason(exc, run_dir or Path(getattr(exc, "filename", "") or "."))
    return f"{name}: {text}" if text else name


def last_good_adapter(run_dir: Path) -> str:
    """After the weights went non-finite: the newest complete checkpoint whose adapter is all finite
    becomes the run's adapter (any adapter/ from before is replaced); what was kept, as a sentence."""
    import torch
    from safetensors.torch import load_file

    adapter_dir = run_dir / runs.ADAPTER
    shutil.rmtree(adapter_dir, ignore_errors=True)  # never leave an adapter of NaNs behind
    for ckpt in checkpoints.all_checkpoints(run_dir / runs.CHECKPOINTS):  # newest first
        if checkpoints.why_incomplete(ckpt):
            continue
        weights = ckpt / "adapter_model.safetensors"
        try:
            if not all(bool(torch.isfinite(t).all()) for t in load_file(str(weights)).values()):
                continue
            adapter_dir.mkdir()
            for f in ("adapter_model.safetensors", "adapter_config.json"):
                shutil.copy2(ckpt / f, adapter_dir / f)
        except OSError:
            shutil.rmtree(adapter_dir, ignore_errors=True)
            continue
        return f". The adapter is the last good checkpoint's, {ckpt.name} (all its weights finite)"
    return ". No checkpoint before it was good, so the run has no adapter"


def tell_the_end(run_dir: Path) -> None:
    """The run's [notify] command, when the run reached an end (runs.notify_end runs it once); never a
    reason for the trainer to fail or wait."""
    try:
        pid = runs.notify_end(run_dir)
    except Exception as exc:  # noqa: BLE001 - the run's result is recorded already
        log.warning("notify: %s", exc)
        return
    if pid is not None:
        log.info("notify: [notify] command started (pid %d)", pid)


def _secondary(run_dir: Path, resume: bool, stop: StopFlag) -> int:
    """A data-parallel rank other than 0: trains its share; failures go to train.log (rank 0 records)."""
    try:
        train(run_dir, resume, distributed.NullEvents(), stop)  # type: ignore[arg-type]
        return 0
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        return 1
    finally:
        distributed.finish()


if __name__ == "__main__":
    sys.exit(main())
