"""The probe: a few real training steps at the dataset's longest sequence, before the real run.

It loads the model exactly as the trainer does (:func:`tunewiz.core.trainer.load_model`,
the same LoRA setup, trl's SFTTrainer with the trainer's arguments and
collator), fills every batch with the longest example, and measures:

- peak memory: ``torch.cuda.max_memory_allocated`` on a GPU; on the CPU the
  process's peak resident memory (RSS, the kernel's high-water mark over the probe),
- the time of a step (the first one, which allocates optimizer states and warms
  caches, is left out when there are more),

then reports predicted against measured and the ETA corrected by the measured
speed. An out-of-memory is caught and reported in seconds, with the changes
that would make the run fit.
"""

from __future__ import annotations

import copy
import gc
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewiz.core.config import RunConfig
from tunewiz.core.memory import Estimate, gib

MiB = 2**20


@dataclass
class ProbeResult:
    estimate: Estimate
    steps: int
    batch: int
    seq_len: int
    memory_kind: str
    """What `measured_mb` is: peak RSS (CPU) or torch.cuda.max_memory_allocated (GPU)."""
    measured_mb: float = 0.0
    baseline_mb: float = 0.0
    """Memory before the model loaded (the Python process with its libraries; 0 on a GPU)."""
    step_times_s: list[float] = field(default_factory=list)
    train_tokens: int = 0
    oom: str = ""
    fixes: list[str] = field(default_factory=list)

    @property
    def predicted_mb(self) -> float:
        """The prediction comparable to `measured_mb` (on a GPU without the CUDA context it cannot see)."""
        b = self.estimate.breakdown
        return b.total - (b.overhead if self.memory_kind != "peak RSS" else 0.0)

    @property
    def predicted_model_mb(self) -> float:
        """What the model and its training add to the process once its libraries are imported."""
        from tunewiz.core.memory import CPU_LIBRARIES_BYTES

        b = self.estimate.breakdown
        return b.total - (CPU_LIBRARIES_BYTES / MiB if self.memory_kind == "peak RSS" else b.overhead)

    @property
    def measured_model_mb(self) -> float:
        return self.measured_mb - self.baseline_mb

    @property
    def memory_error(self) -> float:
        """measured / predicted - 1, on what training adds to the process."""
        return self.measured_model_mb / max(self.predicted_model_mb, 1e-9) - 1

    @property
    def step_time_s(self) -> float:
        times = self.step_times_s[1:] if len(self.step_times_s) > 1 else self.step_times_s
        return statistics.median(times) if times else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.batch * self.seq_len / self.step_time_s if self.step_time_s else 0.0

    @property
    def corrected_time_s(self) -> float | None:
        return self.train_tokens / self.tokens_per_s if self.tokens_per_s and self.train_tokens else None

    def to_dict(self) -> dict[str, Any]:
        """Flat numbers and strings (for run.toml or JSON)."""
        d: dict[str, Any] = {
            "steps": self.steps,
            "batch": self.batch,
            "seq_len": self.seq_len,
            "memory_kind": self.memory_kind,
            "predicted_mb": round(self.predicted_mb, 1),
            "measured_mb": round(self.measured_mb, 1),
            "baseline_mb": round(self.baseline_mb, 1),
            "memory_error": round(self.memory_error, 4),
            "step_time_s": round(self.step_time_s, 3),
            "tokens_per_s": round(self.tokens_per_s, 1),
            "predicted_tokens_per_s": round(self.estimate.tokens_per_s or 0.0, 1),
        }
        if self.estimate.train_time_s:
            d["predicted_time_s"] = round(self.estimate.train_time_s, 1)
        if self.corrected_time_s:
            d["corrected_time_s"] = round(self.corrected_time_s, 1)
        if self.oom:
            d["oom"] = self.oom
        return d

    def lines(self) -> list[str]:
        from tunewiz.core.events import fmt_duration

        if self.oom:
            out = [f"probe: OUT OF MEMORY at batch {self.batch} x {self.seq_len} tokens: {self.oom}"]
            out += [f"  would fit: {f}" for f in self.fixes]
            return out
        out = [
            f"probe: {len(self.step_times_s)} steps of batch {self.batch} x {self.seq_len} tokens "
            "(the longest example)",
            f"  memory  predicted {gib(self.predicted_mb)}, measured {gib(self.measured_mb)} ({self.memory_kind})",
            f"          of which training adds: predicted {gib(self.predicted_model_mb)}, "
            f"measured {gib(self.measured_model_mb)} ({self.memory_error:+.0%})",
            f"  speed   predicted {self.estimate.tokens_per_s or 0:.0f} tok/s, measured {self.tokens_per_s:.0f} tok/s "
            f"({self.step_time_s:.2f} s per step)",
        ]
        if self.corrected_time_s:
            out.append(
                f"  time    predicted {fmt_duration(self.estimate.train_time_s)}, "
                f"corrected by the probe {fmt_duration(self.corrected_time_s)}"
            )
        return out


class _PeakRss:
    """Peak resident memory of this process over a block (:func:`tunewiz.core.hardware.peak_rss_bytes`,
    whose high-water mark is reset on entry). No sampling thread: one would steal a core from
    torch's threads and slow the very steps being timed.
    """

    def __init__(self) -> None:
        self.peak = 0

    def __enter__(self) -> _PeakRss:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                fh.write("5")  # VmHWM := the current RSS
        except OSError:
            pass
        return self

    def __exit__(self, *exc) -> None:
        from tunewiz.core.hardware import peak_rss_bytes

        self.peak = peak_rss_bytes()


def probe_config(cfg: RunConfig, steps: int) -> RunConfig:
    """The run's config for a probe: same model, method, precision and batch; `steps` steps, no eval/saves."""
    p = copy.deepcopy(cfg)
    p.training.max_steps = steps
    p.training.gradient_accumulation_steps = 1  # memory per micro-batch is what matters; steps stay short
    p.training.logging_steps = 1
    p.training.eval_steps = 0
    p.training.save_steps = 0
    p.training.group_by_length = False
    p.evaluation.enabled = False
    return p


def probe(cfg: RunConfig, home_dir: Path, steps: int = 3, hw=None) -> ProbeResult:
    """Train `steps` steps of `cfg` at its data's longest sequence and compare with the estimate."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import TrainerCallback
    from transformers.utils import logging as hf_logging
    from trl import SFTTrainer
    from tunewiz.core import catalog, hardware, models
    from tunewiz.core import data as data_mod
    from tunewiz.core import trainer as tr
    from tunewiz.core.memory import OPTIMIZERS, Setup, estimate, fixes

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    from datasets.utils.logging import disable_progress_bar as datasets_quiet

    datasets_quiet()  # SFTTrainer's dataset preparation would print bars
    hw = hw or hardware.detect(home_dir)
    t = cfg.training
    threads = t.threads or hw.cpu_physical_cores
    torch.set_num_threads(threads)
    dtype_name, _ = tr.choose_dtype(cfg.model.dtype, hw)
    on_gpu = torch.cuda.is_available()

    resolved = models.resolve(cfg.model.id, home_dir)
    tok = tr.load_tokenizer(resolved.path, cfg)
    loaded = data_mod.load(cfg.data.path)
    if cfg.data.eval_path:
        train_ex = loaded.examples
    else:
        train_ex, _ = data_mod.split(loaded.examples, cfg.data.eval_fraction, cfg.data.split_seed)
    rows, stats = data_mod.tokenize_examples(tok, train_ex, cfg.data.max_seq_len)
    if not rows:
        raise data_mod.DataError(["no example has any trained token left after truncation; raise max_seq_len"])
    longest = max(rows, key=lambda r: len(r["input_ids"]))
    seq_len = len(longest["input_ids"])
    batch = t.per_device_batch_size
    trained = sum(1 for x in longest["labels"] if x != -100) / seq_len

    steps_per_epoch = -(-len(rows) // t.effective_batch)
    total_steps = t.max_steps if t.max_steps > 0 else int(steps_per_epoch * t.num_epochs + 0.999)
    train_tokens = int(stats["total_tokens"] * (t.num_epochs if t.max_steps < 0 else total_steps / steps_per_epoch))
    spec = catalog.from_dir(resolved.path)
    setup = Setup(
        method=cfg.model.method,
        dtype=dtype_name,
        lora_r=t.lora_r,
        target_modules=t.target_modules,
        batch=batch,
        seq_len=seq_len,
        gradient_checkpointing=t.gradient_checkpointing,
        trained_fraction=max(trained, 0.01) if t.lm_head_trained_only else 1.0,
        lora_dropout=t.lora_dropout,
        device="cuda" if on_gpu else "cpu",
    )
    est = estimate(spec, setup, hw=hw, threads=threads, train_tokens=train_tokens)
    result = ProbeResult(
        est,
        steps,
        batch,
        seq_len,
        "torch.cuda.max_memory_allocated" if on_gpu else "peak RSS",
        train_tokens=train_tokens,
    )

    import psutil

    gc.collect()
    result.baseline_mb = 0.0 if on_gpu else psutil.Process().memory_info().rss / MiB
    pcfg = probe_config(cfg, steps)
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if on_gpu:
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if on_gpu:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)

    model = trainer = None
    with tempfile.TemporaryDirectory(prefix="tunewiz-probe-") as tmp, _PeakRss() as rss:
        try:
            if on_gpu:
                torch.cuda.reset_peak_memory_stats()
            model = tr.load_model(resolved.path, pcfg, dtype_name)
            # The trainer's LoRA setup (core.trainer.train), unchanged.
            target = t.target_modules[0] if t.target_modules == ["all-linear"] else t.target_modules
            lora = LoraConfig(
                r=t.lora_r, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout, target_modules=target,
                task_type="CAUSAL_LM",
            )  # fmt: skip
            model = get_peft_model(model, lora)
            if t.gradient_checkpointing:
                model.enable_input_require_grads()
            trainable, _ = model.get_nb_trainable_parameters()
            if t.lm_head_trained_only:
                tr.score_only_trained_positions()
            args = tr.sft_args(pcfg, Path(tmp), dtype_name, has_eval=False)
            args.save_strategy = type(args.save_strategy)("no")
            trainer = SFTTrainer(
                model=model,
                args=args,
                train_dataset=Dataset.from_list([longest] * (batch * steps)),
                processing_class=tok,
                data_collator=tr._counting_collator(tok, {"tokens": 0, "padded": 0}),
            )
            from transformers.trainer_callback import PrinterCallback

            trainer.remove_callback(PrinterCallback)
            trainer.add_callback(Timer())
            trainer.train()
            est.breakdown.trainable = trainable * (8 + OPTIMIZERS[setup.optimizer]) / MiB  # the real adapter size
            est.breakdown.trainable_params = trainable
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
            if not isinstance(exc, (torch.OutOfMemoryError, MemoryError)) and "out of memory" not in str(exc):
                raise
            result.oom = str(exc).splitlines()[0][:200]
            avail = (hw.best_gpu.free_gb if on_gpu and hw.best_gpu else hw.ram_available_gb) * 1024
            result.fixes = fixes(spec, setup, avail * 0.88)
        finally:
            del trainer, model
            gc.collect()
            if on_gpu:
                result.measured_mb = torch.cuda.max_memory_allocated() / MiB
                torch.cuda.empty_cache()
    if not on_gpu:
        result.measured_mb = rss.peak / MiB
    result.step_times_s = times
    return result
