"""The training process: ``python -m core.trainer RUN_DIR [--resume]``.

Started detached by :mod:`tunewiz.core.launcher` (own session, stdin from /dev/null,
stdout/stderr to train.log), it reads the run's run.toml and:

1. takes the run's trainer lock (a second trainer on the same run refuses),
2. resolves the model and loads the data, renders every example with the loss
   mask of :func:`tunewiz.core.data.render` (assistant tokens only),
3. trains LoRA or QLoRA adapters with trl's SFTTrainer, appending step / eval
   events to events.jsonl and checkpointing as configured,
4. saves the adapter (PEFT, safetensors), compares base and fine-tuned models on
   the held-out rows (:mod:`tunewiz.core.evaluate`), and records the results.

Signals: SIGHUP is ignored (a closed terminal must not stop training). The
first SIGTERM/SIGINT finishes the current step, saves a checkpoint and the
adapter, and records ``stopped``; a second one exits at once.

Raises nothing to its caller: every failure ends as status ``failed`` with a
reason (and for out-of-memory, what to change) in run.toml.
"""

from __future__ import annotations

import argparse
import errno
import gc
import logging
import os
import platform
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from tunewiz.core import __version__, distributed, runs
from tunewiz.core.config import RunConfig
from tunewiz.core.events import EventWriter

log = logging.getLogger("tunewiz.trainer")

OOM_ADVICE = (
    "Out of memory. Try, in this order: a smaller per_device_batch_size with more "
    "gradient_accumulation_steps (same effective batch), gradient_checkpointing = true, "
    "method = qlora, a shorter max_seq_len, or a smaller model."
)


class StopFlag:
    """Set by SIGTERM/SIGINT; the second signal exits immediately."""

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> None:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            log.warning("second stop signal: exiting now without saving")
            os._exit(130)
        self.requested = True
        log.warning("stop requested: finishing the current step, then saving a checkpoint and the adapter")


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "tunewiz": __version__}
    for dist in ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def choose_dtype(requested: str, hw) -> tuple[str, str]:
    """(dtype, reason) for this hardware."""
    if requested != "auto":
        return requested, "set in the config"
    gpu = hw.best_gpu
    if gpu is not None:
        if gpu.bf16:
            return "bfloat16", f"{gpu.name} supports bf16 natively"
        return "float16", f"{gpu.name} has no bf16 (pre-Ampere): fp16 mixed precision"
    if hw.cpu_bf16:
        return "bfloat16", "this CPU has native bf16 instructions"
    return "float32", "CPU without native bf16: full precision is fastest and exact"


def choose_attention(hw, dtype_name: str, model_type: str = "") -> tuple[str, str]:
    """(attn_implementation, reason): FlashAttention 2 where installed and supported, else PyTorch's SDPA."""
    import importlib.util

    if model_type.startswith("gemma2"):
        return "eager", "Gemma 2's attention soft-capping needs the eager kernel"
    gpu = hw.best_gpu
    if gpu is None:
        return "sdpa", "PyTorch's fused attention (FlashAttention needs a GPU)"
    major = int(str(gpu.compute_capability or "0").split(".")[0] or 0)
    if importlib.util.find_spec("flash_attn") is None:
        return "sdpa", "PyTorch's fused attention (flash-attn is not installed: pip install flash-attn)"
    if major < 8 or dtype_name not in ("bfloat16", "float16"):
        return "sdpa", f"PyTorch's fused attention (FlashAttention 2 needs an Ampere+ GPU in 16 bit; {gpu.name})"
    return "flash_attention_2", f"flash-attn is installed and {gpu.name} supports it"


def choose_padding_free(attention: str, batch: int) -> tuple[bool, str]:
    """(padding_free, reason): a batch as one row of concatenated examples, only where the attention
    kernel keeps examples apart (FlashAttention's varlen path reads their boundaries from position_ids)."""
    if attention not in ("flash_attention_2", "flash_attention_3"):
        return False, (
            "off: length-grouped batches instead; packing without FlashAttention's per-example "
            "boundaries would let examples attend to each other"
        )
    if batch < 2:
        return False, "off: one example per batch has no padding to remove"
    return True, f"on: {attention} keeps each example's attention to itself, so a batch is one row with no padding"


def choose_optimizer(hw) -> tuple[str, str]:
    """(optim, reason): one fused kernel for all parameters on a GPU."""
    if hw.best_gpu is not None:
        return "adamw_torch_fused", "fused AdamW: one kernel per step for all adapter weights"
    return "adamw_torch_fused", "fused AdamW (torch has a fused CPU kernel too; transformers' default)"


def choose_workers(hw) -> tuple[int, str]:
    """(dataloader workers, reason). The rows are tokenised before training: loading a batch is collation only."""
    if hw.best_gpu is not None:
        n = max(0, min(4, (hw.cpu_physical_cores or 1) - 1))
        return n, f"{n}: collate the next batches while the GPU computes"
    return 0, "0: on the CPU every core trains; a loader process would take cores from it"


def needs_checkpointing(cfg: RunConfig, hw, spec, seq_len: int, dtype_name: str) -> tuple[bool, str]:
    """Gradient checkpointing only when memory needs it: on if asked for, or if the run fits only with it."""
    from dataclasses import replace

    from tunewiz.core import memory

    t = cfg.training
    if t.gradient_checkpointing:
        return True, "set in the config (saves activation memory for ~20% more time)"
    if spec is None:
        return False, "off: no estimate for this model; turn it on if memory runs out"
    setup = replace(memory.setup_for(cfg, hw), seq_len=max(seq_len, 1), dtype=dtype_name)
    without = memory.fit(spec, setup, hw)
    if without.fits:
        return False, f"off: {memory.gib(without.estimate.breakdown.total)} fits without it (~20% faster)"
    with_gc = memory.fit(spec, replace(setup, gradient_checkpointing=True), hw)
    if with_gc.fits:
        return True, (
            f"on: {memory.gib(without.estimate.breakdown.total)} without it would not fit "
            f"{memory.gib(without.budget_mb)}; with it {memory.gib(with_gc.estimate.breakdown.total)}"
        )
    return False, "off: the run does not fit even with it (see tunewiz fit); left as configured"


def speed_reasons(cfg: RunConfig, dtype_name: str, dtype_reason: str, threads: int) -> dict[str, str]:
    """Why each speed-relevant setting has its value (recorded under [training.reasons])."""
    t = cfg.training
    return {
        "dtype": f"{dtype_name}: {dtype_reason}",
        "threads": f"{threads}: {'set in the config' if t.threads else 'one per physical core'}",
        "lora_dropout": f"{t.lora_dropout}: "
        + ("no dropout lets PEFT skip a copy per adapted layer" if t.lora_dropout == 0 else "set in the config"),
        "gradient_checkpointing": f"{t.gradient_checkpointing}: "
        + ("saves activation memory for ~20% more time" if t.gradient_checkpointing else "off: memory fits without it"),
        "group_by_length": f"{t.group_by_length}: "
        + ("batches of similar lengths pad less" if t.group_by_length else "random batches"),
        "lm_head_trained_only": f"{t.lm_head_trained_only}: "
        + ("only assistant positions go through the output layer" if t.lm_head_trained_only else "every position"),
    }


def memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    from tunewiz.core.hardware import peak_rss_bytes

    return round(peak_rss_bytes() / 2**20, 1)


def load_model(path: Path, cfg: RunConfig, dtype_name: str, for_training: bool = True, attention: str = ""):
    """The base model in the right precision, 4-bit NF4 for QLoRA."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, dtype_name)
    # safetensors only: a pickled .bin checkpoint can run code when loaded.
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": cfg.model.trust_remote_code, "use_safetensors": True}
    if attention:
        kwargs["attn_implementation"] = attention
    if cfg.model.method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        if torch.cuda.is_available():
            kwargs["device_map"] = {"": 0}
    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    if cfg.model.method == "qlora" and for_training:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.training.gradient_checkpointing)
    return model


def load_tokenizer(path: Path, cfg: RunConfig):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=cfg.model.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def sft_args(
    cfg: RunConfig, run_dir: Path, dtype_name: str, has_eval: bool, optim: str = "adamw_torch_fused", workers: int = 0
):
    """SFTConfig from our config, feature-detecting names that moved between versions."""
    import dataclasses

    import torch
    from trl import SFTConfig

    t = cfg.training
    names = {f.name for f in dataclasses.fields(SFTConfig)}
    on_gpu = torch.cuda.is_available()
    kw: dict[str, Any] = dict(
        output_dir=str(run_dir / "checkpoints"),
        num_train_epochs=t.num_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_batch_size,
        per_device_eval_batch_size=t.per_device_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if t.save_steps else "epoch",
        save_total_limit=t.save_total_limit,
        gradient_checkpointing=t.gradient_checkpointing,
        max_length=cfg.data.max_seq_len,
        report_to="none",
        ddp_find_unused_parameters=False,  # every LoRA weight gets a gradient; the search costs a graph pass
        disable_tqdm=True,
        dataloader_num_workers=workers,
        dataloader_pin_memory=on_gpu,
        optim=optim,
        bf16=on_gpu and dtype_name == "bfloat16",
        fp16=on_gpu and dtype_name == "float16",
        use_cpu=not on_gpu,
    )
    if t.save_steps:
        kw["save_steps"] = t.save_steps
    if t.group_by_length:
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


def make_callback(events: EventWriter, stop: StopFlag, counter: dict[str, int], start_step: int):
    import torch
    from transformers import TrainerCallback

    oom_at = int(os.environ.get("TUNEWIZ_TEST_OOM_AT_STEP", "0"))

    class EventsCallback(TrainerCallback):
        def __init__(self) -> None:
            self.t0 = time.time()
            self.tokens0 = 0

        def on_train_begin(self, args, state, control, **kw):
            self.t0, self.tokens0 = time.time(), counter["tokens"]
            events.emit(
                "train_begin", max_steps=state.max_steps, start_step=state.global_step, epochs=args.num_train_epochs
            )

        def on_step_begin(self, args, state, control, **kw):
            if oom_at and state.global_step + 1 == oom_at:
                raise torch.OutOfMemoryError("CUDA out of memory (injected by TUNEWIZ_TEST_OOM_AT_STEP)")

        def on_step_end(self, args, state, control, **kw):
            if distributed.any_rank(stop.requested):  # every rank stops after the same step
                stop.requested = True  # on ranks the signal did not reach too (the end-of-epoch checks)
                control.should_save = True
                control.should_training_stop = True
                control.should_evaluate = False  # a stop is prompt: no held-out pass on the way out

        def on_epoch_end(self, args, state, control, **kw):
            if stop.requested:  # stopping ends the epoch early; its scheduled evaluation would delay the stop
                control.should_evaluate = False

        def on_log(self, args, state, control, logs=None, **kw):
            logs = logs or {}
            elapsed = max(time.time() - self.t0, 1e-6)
            done = state.global_step - start_step
            if "loss" in logs:
                tps = (counter["tokens"] - self.tokens0) / elapsed
                left = state.max_steps - state.global_step
                eta = elapsed / done * left if done > 0 else None
                ev = events.emit(
                    "step",
                    step=state.global_step,
                    max_steps=state.max_steps,
                    epoch=round(state.epoch or 0.0, 3),
                    loss=logs.get("loss"),
                    learning_rate=logs.get("learning_rate"),
                    grad_norm=logs.get("grad_norm"),
                    tokens_per_s=round(tps, 1),
                    memory_mb=memory_mb(),
                    eta_s=round(eta, 1) if eta is not None else None,
                )
                log.info(
                    "step %d/%d  epoch %.2f  loss %.4f  lr %.2e  %.0f tok/s  eta %s",
                    ev["step"],
                    ev["max_steps"],
                    ev["epoch"],
                    ev["loss"] or 0.0,
                    ev["learning_rate"] or 0.0,
                    tps,
                    f"{eta:.0f}s" if eta is not None else "?",
                )
            elif "eval_loss" in logs:
                events.emit(
                    "eval", step=state.global_step, epoch=round(state.epoch or 0.0, 3), eval_loss=logs["eval_loss"]
                )
                log.info("eval at step %d: eval_loss %.4f", state.global_step, logs["eval_loss"])

        def on_save(self, args, state, control, **kw):
            events.emit(
                "checkpoint",
                step=state.global_step,
                path=str(Path(args.output_dir) / f"checkpoint-{state.global_step}"),
            )

    return EventsCallback()


def last_checkpoint(run_dir: Path) -> Path | None:
    ckpts = [p for p in (run_dir / "checkpoints").glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1])) if ckpts else None


def train(run_dir: Path, resume: bool, events: EventWriter, stop: StopFlag) -> None:
    import torch
    from transformers.utils import logging as hf_logging
    from tunewiz.core import data as data_mod
    from tunewiz.core import evaluate, hardware, models

    hf_logging.disable_progress_bar()  # train.log gets our step lines, not progress bars
    # Data-parallel ranks other than 0 train only: rank 0 writes the record, the adapter and the eval.
    primary = distributed.is_primary()
    record = runs.update_record if primary else (lambda *a, **k: None)
    set_status = runs.set_status if primary else (lambda *a, **k: None)

    t_start = time.time()
    doc = runs.read_record(run_dir)
    cfg = RunConfig.from_dict(doc, source=str(run_dir / runs.RECORD)).validate(str(run_dir / runs.RECORD))
    home_dir = run_dir.parent.parent  # runs live in $TUNEWIZ_HOME/runs/<id>

    hw = hardware.detect(run_dir)
    if hw.gpus and distributed.world_size() > len(hw.gpus):
        raise RuntimeError(
            f"training.processes = {distributed.world_size()} but this machine has {len(hw.gpus)} GPU(s): "
            "use one process per GPU"
        )
    if cfg.training.fsdp and not hw.gpus:
        raise RuntimeError(distributed.FSDP_NEEDS_GPUS)
    procs_here = distributed.world_size() if hw.device == "cpu" else 1  # processes sharing the cores
    threads = cfg.training.threads or max(1, hw.cpu_physical_cores // procs_here)
    torch.set_num_threads(threads)
    dtype_name, dtype_reason = choose_dtype(cfg.model.dtype, hw)
    record(
        run_dir,
        {
            "hardware": {**hw.to_dict(), "processes": distributed.world_size()},
            "versions": library_versions(),
            "training": {"reasons": speed_reasons(cfg, dtype_name, dtype_reason, threads)},
        },
    )

    events.emit("status", status="preparing", message="resolving the model")
    resolved = models.resolve(cfg.model.id, home_dir)
    tok = load_tokenizer(resolved.path, cfg)

    events.emit("status", status="preparing", message="checking the data against the model's template")
    from tunewiz.core import lint

    report = lint.lint(
        cfg.data.path,
        tok,
        max_seq_len=cfg.data.max_seq_len,
        eval_path=cfg.data.eval_path or None,
        eval_fraction=cfg.data.eval_fraction,
        seed=cfg.data.split_seed,
    )
    if report.errors:  # the same errors `tunewiz lint` and the wizard's data step show, with their lines
        raise data_mod.DataError([str(f) for f in report.errors])
    record(run_dir, {"data": report.record()})

    events.emit("status", status="preparing", message="loading and rendering the data")
    loaded = data_mod.load(cfg.data.path)
    if cfg.data.eval_path:
        eval_loaded = data_mod.load(cfg.data.eval_path)
        train_ex, eval_ex = loaded.examples, eval_loaded.examples
    else:
        eval_loaded = None
        train_ex, eval_ex = data_mod.split(loaded.examples, cfg.data.eval_fraction, cfg.data.split_seed)
    train_rows, train_stats = data_mod.tokenize_examples(tok, train_ex, cfg.data.max_seq_len)
    eval_rows, _ = data_mod.tokenize_examples(tok, eval_ex, cfg.data.max_seq_len)
    if not train_rows:
        raise data_mod.DataError(["no example has any trained token left after truncation; raise max_seq_len"])
    if resume and doc.get("data", {}).get("sha256") not in (None, loaded.sha256):
        raise RuntimeError(
            f"the data file {cfg.data.path} changed since this run started (sha256 differs); "
            "resuming would train on different data. Start a new run instead."
        )
    record(
        run_dir,
        {
            "model": {
                "source": resolved.source,
                "resolved_path": str(resolved.path),
                "revision": resolved.revision,
                "effective_dtype": dtype_name,
            },
            "data": {
                "sha256": loaded.sha256,
                "format": loaded.format,
                "train_rows": len(train_rows),
                "eval_rows": len(eval_rows),
                **({"eval_sha256": eval_loaded.sha256} if eval_loaded else {}),
                **train_stats,
            },
        },
    )

    # Hardware-aware choices, each recorded with its reason under [training.reasons].
    spec, model_type = None, ""
    try:
        import json

        from tunewiz.core import catalog

        model_cfg = json.loads((Path(resolved.path) / "config.json").read_text(encoding="utf-8"))
        model_type = str(model_cfg.get("model_type", ""))
        spec = catalog.from_config(model_cfg, key=cfg.model.id)
    except Exception:  # noqa: BLE001 - no estimate: the choices fall back to the safe side
        pass
    longest = max(len(r["input_ids"]) for r in train_rows)
    use_gc, gc_reason = needs_checkpointing(cfg, hw, spec, longest, dtype_name)
    cfg.training.gradient_checkpointing = use_gc
    attention, attention_reason = choose_attention(hw, dtype_name, model_type)
    optim, optim_reason = choose_optimizer(hw)
    workers, workers_reason = choose_workers(hw)
    padding_free, padding_free_reason = choose_padding_free(attention, cfg.training.per_device_batch_size)
    n_procs = distributed.world_size()
    if cfg.training.fsdp:
        sharding = f"FSDP 2 over {n_procs} GPUs: each holds 1/{n_procs} of the weights, gradients and optimizer states"
    elif n_procs > 1:
        sharding = f"DDP over {n_procs} processes: each holds a full copy and 1/{n_procs} of every batch"
    else:
        sharding = "one process"
    reasons = speed_reasons(cfg, dtype_name, dtype_reason, threads)
    reasons.update(
        gradient_checkpointing=f"{use_gc}: {gc_reason}",
        attention=f"{attention}: {attention_reason}",
        optimizer=f"{optim}: {optim_reason}",
        dataloader_workers=workers_reason,
        padding_free=padding_free_reason,
        parallelism=sharding,
    )
    record(run_dir, {"training": {"gradient_checkpointing": use_gc, "reasons": reasons}})

    events.emit("status", status="preparing", message=f"loading {cfg.model.id} ({cfg.model.method})")
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from trl import SFTTrainer

    model = load_model(resolved.path, cfg, dtype_name, attention=attention)
    t = cfg.training
    target = t.target_modules[0] if t.target_modules == ["all-linear"] else t.target_modules
    peft_cfg = LoraConfig(
        r=t.lora_r, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout, target_modules=target, task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, peft_cfg)
    if t.gradient_checkpointing:
        model.enable_input_require_grads()
    trainable, total = model.get_nb_trainable_parameters()

    if t.lm_head_trained_only:
        score_only_trained_positions()
    counter = {"tokens": 0, "padded": 0}
    collator = _counting_collator(tok, counter, padding_free=padding_free)
    args = sft_args(cfg, run_dir, dtype_name, has_eval=bool(eval_rows), optim=optim, workers=workers)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=tok,
        data_collator=collator,
    )
    ckpt = last_checkpoint(run_dir) if resume else None
    start_step = int(ckpt.name.split("-")[-1]) if ckpt else 0
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; our callback writes readable lines
    trainer.add_callback(make_callback(events, stop, counter, start_step))
    steps_per_epoch = -(-len(train_rows) // t.effective_batch)
    total_steps = t.max_steps if t.max_steps > 0 else int(steps_per_epoch * t.num_epochs + 0.999)
    from tunewiz.core import catalog
    from tunewiz.core.memory import Setup, estimate

    n_tokens = train_stats["total_tokens"]
    est = estimate(
        catalog.from_config(model.get_base_model().config.to_dict(), key=cfg.model.id),
        Setup(
            method=cfg.model.method,
            dtype=dtype_name,
            lora_r=t.lora_r,
            target_modules=t.target_modules,
            batch=t.per_device_batch_size,
            seq_len=max(len(r["input_ids"]) for r in train_rows),
            gradient_checkpointing=t.gradient_checkpointing,
            trained_fraction=max(train_stats["trained_tokens"] / max(n_tokens, 1), 0.01)
            if t.lm_head_trained_only
            else 1.0,
            lora_dropout=t.lora_dropout,
            device="cpu" if hw.device == "cpu" else "cuda",
            shards=distributed.world_size() if t.fsdp else 1,
        ),
        hw=hw,
        threads=threads,
        # Each of the N data-parallel processes trains on 1/N of the tokens.
        train_tokens=int(n_tokens * (t.num_epochs if t.max_steps < 0 else total_steps / steps_per_epoch))
        // distributed.world_size(),
        trainable_params=trainable,
    )
    est.source = "trainer: tokenized data, the real adapter size; replaces the estimate made at submit"
    record(
        run_dir,
        {
            "model": {"parameters": total, "trainable_parameters": trainable},
            "training": {"effective_batch": t.effective_batch, "total_steps": total_steps},
            "estimate": est.to_dict(),
        },
    )
    set_status(run_dir, "running", pid=os.getpid())
    events.emit(
        "status",
        status="running",
        total_steps=total_steps,
        message=f"training {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%)",
    )
    log.info(
        "training %s parameters of %s on %d rows, %d steps",
        f"{trainable:,}",
        f"{total:,}",
        len(train_rows),
        total_steps,
    )

    t_train = time.time()
    result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    train_time = time.time() - t_train
    adapter_dir = run_dir / "adapter"
    sharded = bool(getattr(trainer, "is_fsdp_enabled", False))
    if sharded:  # every rank hands its shards over; rank 0 writes a whole PEFT adapter
        trainer.save_model(str(adapter_dir))
    if not primary:
        return
    if not sharded:
        model.save_pretrained(str(adapter_dir), safe_serialization=True)
    tok.save_pretrained(str(adapter_dir))
    state = trainer.state
    eval_losses = [h["eval_loss"] for h in state.log_history if "eval_loss" in h]
    results: dict[str, Any] = {
        "train_loss": round(float(result.training_loss), 4),
        "steps": state.global_step,
        "epochs": round(float(state.epoch or 0.0), 3),
        "tokens_per_s": round(counter["tokens"] / max(train_time, 1e-6), 1),
        "train_tokens_seen": counter["tokens"],
        "padding_fraction": round(1 - counter["tokens"] / max(counter["padded"], 1), 4),
        "peak_memory_mb": peak_memory_mb(),
        "train_time_s": round(train_time, 1),
    }
    # Measured against predicted, so a record shows how far the estimate was off on this machine
    # (max_memory_allocated on a GPU does not see the CUDA context the estimate adds).
    bd = est.breakdown
    predicted = bd.total - (bd.overhead if bd.device != "cpu" else 0.0)
    results["peak_memory_vs_estimate"] = round(results["peak_memory_mb"] / max(predicted, 1e-9) - 1, 4)
    if est.train_time_s:
        results["train_time_vs_estimate"] = round(train_time / est.train_time_s - 1, 4)
    if eval_losses:
        results["eval_loss"] = round(float(eval_losses[-1]), 4)
    artifacts = {"adapter": str(adapter_dir), "checkpoints": str(run_dir / "checkpoints")}

    if stop.requested:
        results["wall_time_s"] = round(time.time() - t_start, 1)
        record(run_dir, {"results": results, "artifacts": artifacts})
        set_status(run_dir, "stopped", stopped_at_step=state.global_step)
        events.emit("status", status="stopped", step=state.global_step)
        log.info("stopped at step %d; adapter saved to %s", state.global_step, adapter_dir)
        return

    record(run_dir, {"results": results, "artifacts": artifacts})
    if cfg.evaluation.enabled and eval_ex:
        events.emit("status", status="evaluating", message=f"base vs fine-tuned on {len(eval_ex)} held-out rows")
        log.info("evaluating base vs fine-tuned on held-out rows")
        if sharded:  # the sharded model runs only with every rank; rank 0 evaluates a whole copy
            from peft import PeftModel

            del trainer, model
            gc.collect()
            torch.cuda.empty_cache()
            model = PeftModel.from_pretrained(
                load_model(resolved.path, cfg, dtype_name, for_training=False), str(adapter_dir)
            )
        summary = evaluate.compare(model, tok, eval_ex, cfg, run_dir, events=events)
        results.update(summary)
        artifacts["predictions"] = str(run_dir / evaluate.PREDICTIONS)
    results["wall_time_s"] = round(time.time() - t_start, 1)
    record(run_dir, {"results": results, "artifacts": artifacts})
    set_status(run_dir, "completed")
    events.emit("status", status="completed", results=results)
    log.info("completed in %.0fs", results["wall_time_s"])


def score_only_trained_positions() -> None:
    """Let trl's fused LM head project only the positions that carry a label.

    trl scores every position unless Triton is present (to keep tile shapes
    fixed for compilers). On CPU and eager CUDA nothing recompiles, and with
    loss on assistant tokens only (~20% of positions here) projecting the rest
    through a 49k-token vocabulary is wasted work.
    """
    try:
        from trl.trainer import utils as trl_utils
    except ImportError:
        return
    if hasattr(trl_utils, "_use_triton"):
        trl_utils._use_triton = lambda device: True


def _counting_collator(tok, counter: dict[str, int], padding_free: bool = False):
    """trl's collator, counting the real (non-padding) tokens that pass through.

    Padding-free (FlashAttention only): the batch's examples are concatenated into one row with
    position_ids restarting at each example, from which the kernel takes their boundaries.
    """
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    inner = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=padding_free)

    def collate(examples):
        lengths = [len(e["input_ids"]) for e in examples]
        counter["tokens"] += sum(lengths)
        counter["padded"] += sum(lengths) if padding_free else max(lengths) * len(lengths)
        return inner(examples)

    return collate


def classify_failure(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc)
    if "OutOfMemoryError" in name or "out of memory" in text.lower() or isinstance(exc, MemoryError):
        return f"{text or name}. {OOM_ADVICE}"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return (
            f"Disk full while writing {exc.filename or 'a checkpoint'}. Earlier checkpoints are untouched: free "
            "some space (or lower save_total_limit), then `tunewiz resume RUN` continues from the last one."
        )
    return f"{name}: {text}" if text else name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.trainer", description=__doc__.split("\n")[0])
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
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the record
            reason = classify_failure(exc)
            traceback.print_exc()
            try:
                runs.set_status(run_dir, "failed", failure_reason=reason)
                events.emit("status", status="failed", reason=reason)
            except Exception:  # noqa: BLE001
                traceback.print_exc()
            return 1
        finally:
            events.close()
            distributed.finish()


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
