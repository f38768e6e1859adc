"""The probe: a few real training steps at the dataset's longest sequence, before the real run.

It runs the trainer's own phases (:func:`tunewiz.core.training.trainer.setup` and
:func:`tunewiz.core.training.trainer.build`: the same model loading, LoRA setup, planner decisions,
SFTTrainer arguments and collator), fills every batch with the longest example, and measures:

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
from tunewiz.core.planning.memory import DataShape, Estimate, gib

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
        from tunewiz.core.planning.memory import CPU_LIBRARIES_BYTES

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
        from tunewiz.core.units import fmt_duration

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
    """Peak resident memory of this process over a block (:func:`tunewiz.core.planning.hardware.peak_rss_bytes`,
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
        from tunewiz.core.planning.hardware import peak_rss_bytes

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
    p.training.report_to = "none"  # a probe is not a run: nothing for a tracker
    return p


def probe(cfg: RunConfig, home_dir: Path, steps: int = 3, hw=None) -> ProbeResult:
    """Train `steps` steps of `cfg` at its data's longest sequence and compare with the estimate.

    The trainer's own phases (:func:`tunewiz.core.training.trainer.setup` and
    :func:`~tunewiz.core.training.trainer.build`) with the planner's decisions for a batch of the longest
    example: only the rows and the step count differ.
    """
    import dataclasses

    from tunewiz.core.planning import hardware, planner
    from tunewiz.core.training import distributed
    from tunewiz.core.training import trainer as tr

    _quiet_libraries()
    hw = hw or hardware.detect(home_dir)
    p = tr.setup(cfg, home_dir, distributed.NullEvents(), hw=hw, lint_first=False)
    longest, shape = longest_row(p.train_rows)
    pcfg = probe_config(cfg, steps)
    pplan = planner.plan(
        pcfg, hw, p.spec, shape, model_type=p.model_type, trained_only_available=tr.trained_only_available()
    )
    est = pplan.estimate
    if est is None:
        raise RuntimeError(f"{cfg.model.id}: no estimate for this architecture, so nothing to compare with")
    train_tokens = time_the_whole_run(est, p.plan.estimate)
    on_gpu = pplan.device == "cuda"
    result = ProbeResult(
        est,
        steps,
        pplan.per_device_batch,
        shape.longest,
        "torch.cuda.max_memory_allocated" if on_gpu else "peak RSS",
        train_tokens=train_tokens,
    )
    _measure(result, dataclasses.replace(p, cfg=pcfg, plan=pplan), longest, on_gpu)
    return result


def _quiet_libraries() -> None:
    """No progress bars or warnings from transformers and datasets (SFTTrainer's dataset preparation
    would print bars)."""
    from datasets.utils.logging import disable_progress_bar as datasets_quiet
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    datasets_quiet()


def longest_row(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], DataShape]:
    """The longest tokenised row, and the data shape of a run whose every row were that long.

    >>> row, shape = longest_row([{"input_ids": [1, 2], "labels": [-100, 2]}, {"input_ids": [1], "labels": [1]}])
    >>> shape.longest, shape.train_tokens, shape.trained_fraction
    (2, 4, 0.5)
    """
    longest = max(rows, key=lambda r: len(r["input_ids"]))
    seq_len = len(longest["input_ids"])
    trained = sum(1 for x in longest["labels"] if x != -100) / seq_len
    return longest, DataShape(seq_len, seq_len * len(rows), max(trained, 0.01), "the longest example", len(rows))


def time_the_whole_run(est: Estimate, full: Estimate | None) -> int:
    """The tokens the whole run trains (from its own estimate `full`), and `est`'s time for them at the
    probe's predicted speed (set in place; None without either figure)."""
    train_tokens = int(full.train_time_s * full.tokens_per_s) if full and full.train_time_s else 0
    est.train_time_s = train_tokens / est.tokens_per_s if est.tokens_per_s and train_tokens else None
    return train_tokens


def _step_timer(times: list[float], on_gpu: bool):
    """A TrainerCallback that appends each step's wall time to `times` (the GPU synchronised first)."""
    import torch
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if on_gpu:
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if on_gpu:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)

    return Timer()


def _measure(result: ProbeResult, run, longest: dict[str, Any], on_gpu: bool) -> None:
    """Train `run` (the probe's Prepared) on `longest` repeated, filling `result`'s memory and step times;
    an out-of-memory is kept in `result` with the changes that would fit."""
    import psutil
    import torch
    from tunewiz.core.planning.memory import fixes
    from tunewiz.core.training import trainer as tr

    gc.collect()
    result.baseline_mb = 0.0 if on_gpu else psutil.Process().memory_info().rss / MiB
    est = result.estimate
    times: list[float] = []
    model = trainer = None
    rows = [longest] * (result.batch * result.steps)
    with tempfile.TemporaryDirectory(prefix="tunewiz-probe-") as tmp, _PeakRss() as rss:
        try:
            if on_gpu:
                torch.cuda.reset_peak_memory_stats()
            trainer, model, _ = tr.build(
                run, Path(tmp), callbacks=[_step_timer(times, on_gpu)], train_rows=rows, with_eval=False
            )
            trainer.args.save_strategy = type(trainer.args.save_strategy)("no")
            trainable, _ = model.get_nb_trainable_parameters()
            trainer.train()
            est.breakdown.count_trainable(trainable, est.setup.optimizer)  # the real adapter size
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
            if not isinstance(exc, (torch.OutOfMemoryError, MemoryError)) and "out of memory" not in str(exc):
                raise
            result.oom = str(exc).splitlines()[0][:200]
            result.fixes = fixes(run.spec, est.setup, run.plan.budget_mb)
        finally:
            del trainer, model
            gc.collect()
            if on_gpu:
                result.measured_mb = torch.cuda.max_memory_allocated() / MiB
                torch.cuda.empty_cache()
    if not on_gpu:
        result.measured_mb = rss.peak / MiB
    result.step_times_s = times
