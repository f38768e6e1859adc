"""The planner: every training decision, made once, with its reason.

    plan(request, hardware, model architecture, data shape) -> Plan

A pure function (no torch, no I/O): the trainer, the probe, every wizard screen that shows a figure,
``tunewiz fit``, ``tunewiz recommend`` and ``tunewiz train --dry-run`` call it, and nothing else
decides the device and placement per rank, the precision, the attention kernel, padding-free or
length-grouped batches, the batch split, gradient checkpointing, the optimizer, loader workers,
threads, DDP or FSDP, or the memory and time estimate. So a figure the wizard shows is the figure
the trainer records, and a test can plan for any machine without having it.

The request is the user's [training] / [model] as given (after preset and overrides); the plan is
what this machine will do with it. A run record keeps both apart, so a re-run repeats the request
and plans again for the machine it runs on.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Any

from tunewiz.core.config import TrainingConfig
from tunewiz.core.models.catalog import ModelSpec
from tunewiz.core.planning import memory

HEADROOM = 0.12
"""Share of the memory left free: allocator fragmentation, other processes, a longer batch than seen."""
CPU_MAX_PER_DEVICE = 4
"""On the CPU small batches are faster per token (they stay in cache): measured 146 tok/s at batch 4
against 102 at batch 8 for SmolLM2-135M on 2 cores."""
GPU_MAX_PER_DEVICE = 16
"""The most sequences one forward pass gets on a GPU, however much memory is free."""
MPS_GPU_SHARE = 0.75
"""macOS lets the GPU wire about 75% of unified memory by default (iogpu.wired_limit_mb)."""


OOM_ADVICE = (
    "Out of memory. Try, in this order: a smaller per_device_batch_size with more "
    "gradient_accumulation_steps (same effective batch), gradient_checkpointing = true, "
    "method = qlora, a shorter max_seq_len, or a smaller model."
)

QLORA_NEEDS_CUDA = "QLoRA needs bitsandbytes' 4-bit kernels, which do not run on Apple's MPS: use method = lora"

FSDP_NEEDS_GPUS = (
    "training.fsdp = true needs GPUs (accelerate shards over GPUs, not CPU processes): "
    "set fsdp = false to train data-parallel on this machine"
)


@dataclass(frozen=True)
class Decision:
    value: Any
    reason: str


@dataclass
class Plan:
    """What the training will do on this machine, each decision with its reason."""

    device: str
    """cuda | mps | cpu."""
    placement: list[str]
    """Where each rank's model lives: cuda:0, cuda:1 ... (one GPU per rank), mps, or cpu."""
    processes: int
    parallelism: str
    """single | ddp | fsdp."""
    dtype: str
    """The weights' and activations' precision (float32 | bfloat16 | float16)."""
    mixed_precision: str
    """What the Trainer's autocast does: bf16 | fp16 | no (the CPU trains in the weights' dtype)."""
    attention: str
    padding_free: bool
    group_by_length: bool
    per_device_batch: int
    accumulation: int
    gradient_checkpointing: bool
    optimizer: str
    workers: int
    threads: int
    score_trained_only: bool
    """Only assistant positions go through the output layer (needs trl's hook; see core.trainer)."""
    seq_len: int
    """Tokens of the longest example the memory is planned for."""
    reasons: dict[str, str] = field(default_factory=dict)
    estimate: memory.Estimate | None = None
    available_mb: float = 0.0
    budget_mb: float = 0.0
    problems: list[str] = field(default_factory=list)
    """Why the request cannot run on this machine at all (each with what to do); empty when it can."""
    memory_advice: str = ""
    """When the peak is over the budget: by how much, and the single changes that would fit."""

    @property
    def effective_batch(self) -> int:
        return self.per_device_batch * self.accumulation * self.processes

    @property
    def peak_mb(self) -> float | None:
        return self.estimate.peak_memory_mb if self.estimate else None

    @property
    def fits(self) -> bool | None:
        """True when it can run here within the memory budget; None when the model cannot be described."""
        if self.estimate is None:
            return None
        return self.estimate.peak_memory_mb <= self.budget_mb and not self.problems

    def memory_line(self) -> str:
        """'peak 1.23 GiB, fits' - the one figure every screen and command shows."""
        if self.estimate is None:
            return "peak ? (unknown model)"
        return f"peak {memory.gib(self.estimate.peak_memory_mb)}, " + ("fits" if self.fits else "too big")

    def to_record(self) -> dict[str, Any]:
        """The run record's [plan]: the decisions, flat, and [plan.reasons]."""
        return {
            "device": self.device,
            "placement": list(self.placement),
            "processes": self.processes,
            "parallelism": self.parallelism,
            "dtype": self.dtype,
            "mixed_precision": self.mixed_precision,
            "attention": self.attention,
            "padding_free": self.padding_free,
            "group_by_length": self.group_by_length,
            "per_device_batch_size": self.per_device_batch,
            "gradient_accumulation_steps": self.accumulation,
            "effective_batch": self.effective_batch,
            "gradient_checkpointing": self.gradient_checkpointing,
            "optimizer": self.optimizer,
            "dataloader_workers": self.workers,
            "threads": self.threads,
            "score_trained_only": self.score_trained_only,
            "seq_len": self.seq_len,
            "budget_mb": round(self.budget_mb, 1),
            "reasons": dict(self.reasons),
        }

    def lines(self) -> list[str]:
        """The plan for people: one line per decision with its reason, then the memory and time."""
        from tunewiz.core.units import fmt_duration

        out = [f"plan for this machine ({self.device}, {self.processes} process{'es' if self.processes > 1 else ''})"]
        width = max(len(k) for k in self.reasons) + 2 if self.reasons else 10
        out += [f"  {k:<{width}}{v}" for k, v in self.reasons.items()]
        if self.estimate is not None:
            out.append("")
            out += ["  " + line for line in self.estimate.breakdown.lines()]
            where = "RAM" if self.device == "cpu" else ("unified memory" if self.device == "mps" else "GPU memory")
            verdict = "fits" if self.fits else "does NOT fit"
            out.append(
                f"  {verdict}: budget {memory.gib(self.budget_mb)} of {memory.gib(self.available_mb)} {where} "
                f"({HEADROOM:.0%} kept free)"
            )
            e = self.estimate
            if e.train_time_s:
                speed = f"~{e.tokens_per_s:,.0f} tok/s ({e.speed_source})"
                out.append(f"  training ~{fmt_duration(e.train_time_s)} at {speed}")
        out += [f"  problem: {p}" for p in self.problems]
        if self.memory_advice:
            out.append(f"  memory: {self.memory_advice}")
        return out


# -- single decisions ----------------------------------------------------------------------------


def choose_device(hw) -> Decision:
    if getattr(hw, "gpus", None):
        return Decision("cuda", f"{len(hw.gpus)} GPU(s): {', '.join(sorted({g.name for g in hw.gpus}))}")
    if getattr(hw, "mps", False):
        return Decision("mps", "Apple Silicon GPU (MPS), sharing the system's unified memory")
    return Decision("cpu", "no GPU found: training runs on the CPU")


def choose_dtype(requested: str, hw) -> Decision:
    """The training precision for this hardware."""
    if requested != "auto":
        return Decision(requested, "set in the config")
    gpus = getattr(hw, "gpus", None) or []
    if gpus:
        if all(g.bf16 for g in gpus):
            return Decision("bfloat16", f"{gpus[0].name} supports bf16 natively")
        return Decision("float16", f"{gpus[0].name} has no bf16 (pre-Ampere): fp16 mixed precision")
    if getattr(hw, "mps", False):
        return Decision("float32", "MPS: full precision (16-bit autocast on MPS depends on the macOS version)")
    if getattr(hw, "cpu_bf16", False):
        return Decision("bfloat16", "this CPU has native bf16 instructions")
    return Decision("float32", "CPU without native bf16: full precision is fastest and exact")


def choose_attention(hw, dtype: str, device: str, model_type: str = "") -> Decision:
    """FlashAttention 2 where installed and supported, else PyTorch's SDPA."""
    if model_type.startswith("gemma2"):
        return Decision("eager", "Gemma 2's attention soft-capping needs the eager kernel")
    if device != "cuda":
        return Decision("sdpa", "PyTorch's fused attention (FlashAttention needs an NVIDIA GPU)")
    gpu = hw.gpus[0]
    major = int(str(gpu.compute_capability or "0").split(".")[0] or 0)
    if not getattr(hw, "flash_attn", False):
        return Decision("sdpa", "PyTorch's fused attention (flash-attn is not installed: pip install flash-attn)")
    if major < 8 or dtype not in ("bfloat16", "float16"):
        return Decision(
            "sdpa", f"PyTorch's fused attention (FlashAttention 2 needs an Ampere+ GPU in 16 bit; {gpu.name})"
        )
    return Decision("flash_attention_2", f"flash-attn is installed and {gpu.name} supports it")


def choose_padding_free(attention: str, batch: int) -> Decision:
    """A batch as one row of concatenated examples, only where the kernel keeps examples apart
    (FlashAttention's varlen path reads their boundaries from position_ids)."""
    if attention not in ("flash_attention_2", "flash_attention_3"):
        return Decision(
            False,
            "off: length-grouped batches instead; packing without FlashAttention's per-example "
            "boundaries would let examples attend to each other",
        )
    if batch < 2:
        return Decision(False, "off: one example per batch has no padding to remove")
    return Decision(True, f"on: {attention} keeps each example's attention to itself: one row, no padding")


def choose_optimizer(device: str) -> Decision:
    if device == "mps":
        return Decision("adamw_torch", "AdamW (torch's fused kernel is for CUDA and the CPU)")
    if device == "cuda":
        return Decision("adamw_torch_fused", "fused AdamW: one kernel per step for all adapter weights")
    return Decision("adamw_torch_fused", "fused AdamW (torch has a fused CPU kernel too; transformers' default)")


def choose_workers(requested: int, device: str, cores: int, processes: int) -> Decision:
    """Loader processes. The rows are tokenised before training: loading a batch is collation only."""
    if requested >= 0:
        return Decision(requested, f"{requested}: set in the config")
    if device == "cuda":
        n = max(0, min(4, cores // max(processes, 1) - 1))
        return Decision(n, f"{n}: collate the next batches while the GPU computes")
    return Decision(0, "0: every core trains; a loader process would take cores from it")


def choose_threads(requested: int, device: str, cores: int, processes: int) -> Decision:
    if requested:
        return Decision(requested, f"{requested}: set in the config")
    share = processes if device == "cpu" else 1  # CPU ranks share the cores; GPU ranks hardly use them
    n = max(1, cores // share)
    return Decision(n, f"{n}: one per physical core" + (f" / {processes} processes" if share > 1 else ""))


def choose_parallelism(t, device: str, gpus: int) -> tuple[Decision, list[str]]:
    n = max(t.processes, 1)
    problems = []
    if t.fsdp and device != "cuda":
        problems.append(FSDP_NEEDS_GPUS)
    if device == "cuda" and n > gpus:
        problems.append(f"processes = {n} but this machine has {gpus} GPU(s): use one process per GPU")
    if device == "mps" and n > 1:
        problems.append("processes > 1 needs several GPUs; Apple Silicon has one: set processes = 1")
    if t.fsdp:
        return Decision(
            "fsdp", f"FSDP 2 over {n} GPUs: each holds 1/{n} of the weights, gradients and optimizer states"
        ), problems
    if n > 1:
        return Decision("ddp", f"DDP over {n} processes: each holds a full copy and 1/{n} of every batch"), problems
    return Decision("single", "one process"), problems


def choose_gpu(hw, busy: Collection[str] = ()) -> Decision:
    """The GPU a one-process run trains on: of the GPUs no other run on this machine is using
    (`busy`: their placements, 'cuda:1'), the one with the most free memory (the lowest number on a
    tie); when every GPU is in use, the one with the most free memory anyway (the run shares it).

    >>> from tunewiz.core.planning.hardware import GPU, Hardware
    >>> hw = Hardware(gpus=[GPU(0, "A", 80, 20, "9.0", True), GPU(1, "A", 80, 79, "9.0", True)])
    >>> choose_gpu(hw).value, choose_gpu(hw, busy={"cuda:1"}).value
    (1, 0)
    """
    free = [g for g in hw.gpus if f"cuda:{g.index}" not in busy]
    g = max(free or hw.gpus, key=lambda g: (g.free_gb, -g.index))
    if len(hw.gpus) == 1:
        return Decision(g.index, f"cuda:{g.index}")
    if not free:
        return Decision(g.index, f"cuda:{g.index}: every GPU is in use by another run; this one has the most free")
    taken = sorted(d.partition(":")[2] for d in busy if d.startswith("cuda:"))
    others = f" of those not in use (GPU {', '.join(taken)} trains another run)" if taken else ""
    return Decision(g.index, f"cuda:{g.index}: the most free memory ({g.free_gb:.1f} GB){others}")


def placement(device: str, processes: int, gpu: int = 0) -> list[str]:
    """Where each rank's model lives: rank i on GPU i (QLoRA included: every rank on GPU 0 would OOM);
    one process on GPU `gpu` (:func:`choose_gpu`)."""
    if device == "cuda":
        return [f"cuda:{gpu}"] if processes == 1 else [f"cuda:{i}" for i in range(processes)]
    return [device] * processes


def memory_available(hw, device: str, processes: int = 1, places: Collection[str] = ()) -> float:
    """MiB a rank can use now: the free memory of the smallest GPU a rank gets (`places`: the plan's
    placement; default the first GPUs), the share of unified memory the GPU may wire on Apple Silicon,
    or available RAM (shared by the CPU ranks)."""
    if device == "cuda":
        wanted = set(places)
        chosen = [g for g in hw.gpus if f"cuda:{g.index}" in wanted] or hw.gpus[: max(processes, 1)]
        return min(g.free_gb for g in chosen) * 1024
    if device == "mps":
        return min(hw.ram_available_gb, hw.ram_total_gb * MPS_GPU_SHARE) * 1024
    return hw.ram_available_gb * 1024 / max(processes, 1)


def split_batch(effective_batch: int, max_per_device: int) -> tuple[int, int]:
    """(per-device batch, accumulation): the largest per-device batch <= max_per_device that divides the
    effective batch.

    >>> split_batch(8, 4)
    (4, 2)
    >>> split_batch(16, 3)
    (2, 8)
    """
    per_device = max(1, min(effective_batch, max_per_device))
    while effective_batch % per_device:
        per_device -= 1
    return per_device, effective_batch // per_device


def choose_request_split(effective_batch: int) -> Decision:
    """The (per-device batch, accumulation) a preset writes into its request: the CPU's split (at most
    CPU_MAX_PER_DEVICE), a starting point :func:`choose_split` re-splits for the machine.

    >>> choose_request_split(16).value
    (4, 4)
    """
    per, acc = split_batch(effective_batch, CPU_MAX_PER_DEVICE)
    return Decision(
        (per, acc),
        f"{per} x {acc}: up to {CPU_MAX_PER_DEVICE} per device (the CPU's split); the plan re-splits it here",
    )


def choose_lora_alpha(rank: int) -> Decision:
    """LoRA alpha for rank `rank`: 2 x rank, in every preset and wherever the rank changes and alpha
    was not set.

    >>> choose_lora_alpha(16)
    Decision(value=32, reason='2 x rank 16: the usual LoRA scale; it follows the rank until you set it')
    """
    return Decision(2 * rank, f"2 x rank {rank}: the usual LoRA scale; it follows the rank until you set it")


def preset_request(p) -> TrainingConfig:
    """A preset's training request (core.planning.presets.training_for): its rank, learning rate and
    epochs, alpha by :func:`choose_lora_alpha`, its effective batch split by :func:`choose_request_split`."""
    per_device, accum = choose_request_split(p.effective_batch).value
    return TrainingConfig(
        lora_r=p.lora_r,
        lora_alpha=choose_lora_alpha(p.lora_r).value,
        learning_rate=p.learning_rate,
        num_epochs=float(p.num_epochs),
        per_device_batch_size=per_device,
        gradient_accumulation_steps=accum,
    )


# -- serving a finished model (evaluation, chat) ---------------------------------------------------


def choose_serving_device(hw) -> Decision:
    """Where a finished run's model answers on this machine (the comparison, chat): the training
    device for one process, on a GPU box the GPU with the most free memory (not its CPU)."""
    where = choose_device(hw)
    if where.value != "cuda":
        return Decision(where.value, where.reason)
    gpu = choose_gpu(hw)
    return Decision(placement("cuda", 1, gpu.value)[0], gpu.reason)


def choose_serving_dtype(device: str, train_dtype: str) -> Decision:
    """The precision a finished model answers in (the comparison, chat) on `device` (cpu, cuda:0 ...):
    on the CPU float32, where 16-bit answers change with how rows are batched (benchmarks/eval_speed.py,
    40 SST-2-like rows: 29 of 40 bf16 answers batched equal one-row-at-a-time, 40 of 40 in float32) and
    which a CPU serves in; on a GPU the precision it trained in.

    >>> choose_serving_dtype("cpu", "bfloat16").value, choose_serving_dtype("cuda:0", "bfloat16").value
    ('float32', 'bfloat16')
    """
    if device.split(":")[0] == "cpu" and train_dtype != "float32":
        return Decision(
            "float32", f"on the CPU {train_dtype} answers change with batching; float32 is what it serves in"
        )
    return Decision(train_dtype, "the precision it trained in on this device")


def choose_serving(hw, requested_dtype: str) -> tuple[Decision, Decision]:
    """(device, dtype) a finished run whose [model] asked for `requested_dtype` answers in on `hw`."""
    device = choose_serving_device(hw)
    trained = choose_dtype(requested_dtype, hw).value
    return device, choose_serving_dtype(device.value, trained)


# -- what the hardware means (the hardware step, `tunewiz hardware`) ------------------------------


def advise(hw) -> list[Decision]:
    """What this machine means for fine-tuning, one rule of thumb per topic (models, precision, disk):
    each Decision's value is the topic, its reason the advice."""
    out = [Decision("models", _model_size_advice(hw))]
    if choose_dtype("auto", hw).value == "float16":
        out.append(Decision("precision", "This GPU has no bf16: training uses fp16 mixed precision."))
    if hw.disk_free_gb < 10:
        out.append(
            Decision("disk", f"Only {hw.disk_free_gb:.1f} GB of disk free: checkpoints and merged models need room.")
        )
    return out


def _model_size_advice(hw) -> str:
    """The models the GPU with the most free memory suits, by its size."""
    gpus = getattr(hw, "gpus", None) or []
    if not gpus:
        return (
            "No GPU: CPU training suits only very small models (like the bundled SmolLM2-135M) and quick experiments."
        )
    g = max(gpus, key=lambda g: g.free_gb)
    # Cards report a little under their nominal size (a 24 GB card ~23.6 GiB).
    if g.total_gb >= 22:
        return "24 GB+: 13B models with LoRA in 16-bit, larger ones with QLoRA."
    if g.total_gb >= 15:
        return "16 GB: 7B models comfortably, 13B with QLoRA."
    if g.total_gb >= 7.5:
        return "8 GB: QLoRA (4-bit) on models up to about 7B."
    return f"{g.total_gb:.0f} GB GPU: stick to models of 1-3B parameters with QLoRA."


# -- the plan ------------------------------------------------------------------------------------


def plan(
    cfg,
    hw,
    spec: ModelSpec | None = None,
    shape: memory.DataShape | None = None,
    *,
    model_type: str = "",
    trained_only_available: bool = True,
    headroom: float = HEADROOM,
    busy: Collection[str] = (),
) -> Plan:
    """Every decision for training `cfg` (the request) on `hw` (a hardware description), for a model
    of architecture `spec` and data of `shape` (None: the worst case, every example max_seq_len long).

    `trained_only_available`: whether the installed trl lets the output layer see only the trained
    positions (the trainer checks; elsewhere it is assumed). `busy`: the devices other runs on this
    machine train on ('cuda:0'): a one-process run goes to a GPU none of them uses.
    """
    t, m = cfg.training, cfg.model
    spec = spec if spec is not None else catalog_spec(m.id)
    dev, processes, par, places, problems = choose_where(cfg, hw, busy)
    device, cores = dev.value, getattr(hw, "cpu_physical_cores", 1) or 1
    dt = choose_dtype(m.dtype, hw)
    mixed = choose_mixed_precision(dt.value, device)
    att = choose_attention(hw, dt.value, device, model_type)
    opt = choose_optimizer(device)
    wk = choose_workers(getattr(t, "dataloader_workers", -1), device, cores, processes)
    th = choose_threads(t.threads, device, cores, processes)
    trained = choose_score_trained_only(t.lm_head_trained_only, trained_only_available)
    reasons = {
        "device": f"{device}: {dev.reason}",
        "parallelism": par.reason,
        "placement": places.reason,
        "dtype": f"{dt.value}: {dt.reason}",
        "mixed_precision": f"{mixed.value}: {mixed.reason}",
        "attention": f"{att.value}: {att.reason}",
        "optimizer": f"{opt.value}: {opt.reason}",
        "dataloader_workers": wk.reason,
        "threads": th.reason,
        "score_trained_only": f"{trained.value}: {trained.reason}",
        "lora_dropout": f"{t.lora_dropout}: {choose_lora_dropout(t.lora_dropout).reason}",
    }
    seq_len = max(min(shape.longest, cfg.data.max_seq_len) if shape else cfg.data.max_seq_len, 1)
    avail = memory_available(hw, device, processes, places.value)
    budget = avail * (1 - headroom)
    setup = memory_setup(cfg, device, dt.value, att.value, processes, seq_len, shape, trained.value)
    per, acc, gc, gc_reason, batch_reason = choose_batch(t, device, spec, setup, budget)
    setup = replace(setup, batch=per, gradient_checkpointing=gc)
    pf = choose_padding_free(att.value, per)
    grouped = choose_group_by_length(t.group_by_length, pf.value)
    reasons["gradient_checkpointing"] = f"{gc}: {gc_reason}"
    reasons["batch"] = batch_line(per, acc, processes, batch_reason)
    reasons["padding_free"] = pf.reason
    reasons["group_by_length"] = f"{grouped.value}: {grouped.reason}"
    est, memory_advice = estimate_run(cfg, hw, spec, setup, shape, processes, th.value, budget)
    return Plan(
        device=device,
        placement=places.value,
        processes=processes,
        parallelism=par.value,
        dtype=dt.value,
        mixed_precision=mixed.value,
        attention=att.value,
        padding_free=pf.value,
        group_by_length=grouped.value,
        per_device_batch=per,
        accumulation=acc,
        gradient_checkpointing=gc,
        optimizer=opt.value,
        workers=wk.value,
        threads=th.value,
        score_trained_only=trained.value,
        seq_len=seq_len,
        reasons=reasons,
        estimate=est,
        available_mb=avail,
        budget_mb=budget,
        problems=problems,
        memory_advice=memory_advice,
    )


def catalog_spec(model_id: str) -> ModelSpec | None:
    """The architecture of a catalog model named by `model_id`; None for a model the catalog does not know."""
    from tunewiz.core.models import catalog

    try:
        return catalog.lookup(model_id)
    except catalog.CatalogError:
        return None


def choose_where(cfg, hw, busy: Collection[str] = ()) -> tuple[Decision, int, Decision, Decision, list[str]]:
    """(device, processes, parallelism, placement, problems): where the request trains on this machine,
    and why it cannot (a request the machine has no kernels or GPUs for)."""
    dev = choose_device(hw)
    processes, par, problems = choose_processes(cfg.training, dev.value, hw)
    places = choose_placement(hw, dev.value, processes, busy)
    if cfg.model.method == "qlora" and dev.value == "mps":
        problems.append(QLORA_NEEDS_CUDA)
    return dev, processes, par, places, problems


def choose_processes(t, device: str, hw) -> tuple[int, Decision, list[str]]:
    """(processes, parallelism, problems): the request's processes and :func:`choose_parallelism`, planned
    for the GPUs there are when it asks for more (and the problem says so)."""
    processes = max(t.processes, 1)
    par, problems = choose_parallelism(t, device, len(getattr(hw, "gpus", []) or []))
    if device == "cuda" and processes > len(hw.gpus):
        processes = len(hw.gpus)
        par = Decision(par.value if processes > 1 else "single", f"{processes} process(es): one per GPU here")
    return processes, par, problems


def choose_placement(hw, device: str, processes: int, busy: Collection[str] = ()) -> Decision:
    """Where each rank's model lives (the value: one device per rank): one process on the GPU
    :func:`choose_gpu` picks, several one GPU each (:func:`placement`).

    >>> choose_placement(None, "cpu", 2)
    Decision(value=['cpu', 'cpu'], reason='cpu, cpu')
    """
    if device == "cuda" and processes == 1:
        gpu = choose_gpu(hw, busy)
        return Decision(placement(device, 1, gpu.value), gpu.reason)
    places = placement(device, processes)
    return Decision(places, ", ".join(places) + (" (one GPU per rank)" if processes > 1 and device == "cuda" else ""))


def choose_mixed_precision(dtype: str, device: str) -> Decision:
    """The Trainer's autocast: bf16 or fp16 on a GPU training in 16 bit, else no.

    >>> choose_mixed_precision("bfloat16", "cuda").value, choose_mixed_precision("bfloat16", "cpu").value
    ('bf16', 'no')
    """
    mixed = {"bfloat16": "bf16", "float16": "fp16"}.get(dtype, "no") if device == "cuda" else "no"
    return Decision(mixed, "autocast on the GPU" if mixed != "no" else "the weights are trained in their own dtype")


def choose_score_trained_only(requested: bool, available: bool) -> Decision:
    """Whether only the trained (assistant) positions go through the output layer: as requested, where
    the installed trl has the hook for it."""
    if requested and not available:
        return Decision(False, "this trl has no hook for it; every position goes through the output layer")
    if requested:
        return Decision(True, "only assistant positions go through the output layer")
    return Decision(False, "every position (set in the config)")


def choose_lora_dropout(dropout: float) -> Decision:
    """The request's LoRA dropout, and what it costs."""
    return Decision(
        dropout, "no dropout lets PEFT skip a copy per adapted layer" if dropout == 0 else "set in the config"
    )


def choose_group_by_length(requested: bool, padding_free: bool) -> Decision:
    """Length-grouped batches, as requested, except where padding-free batches leave no padding to save."""
    grouped = requested and not padding_free
    if grouped:
        return Decision(True, "batches of similar lengths pad less")
    if padding_free:
        return Decision(False, "padding-free batches have no padding to save")
    return Decision(False, "random batches (set in the config)")


def memory_setup(
    cfg, device: str, dtype: str, attention: str, processes: int, seq_len: int, shape, trained_only: bool
) -> memory.Setup:
    """What the memory arithmetic needs of the request and the decisions made so far (the batch as asked)."""
    t, m = cfg.training, cfg.model
    return memory.Setup(
        method=m.method,
        dtype=dtype,
        lora_r=t.lora_r,
        target_modules=tuple(t.target_modules),
        batch=t.per_device_batch_size,
        seq_len=seq_len,
        gradient_checkpointing=t.gradient_checkpointing,
        trained_fraction=shape.trained_fraction if shape and trained_only else 1.0,
        lora_dropout=t.lora_dropout,
        device=device,
        attention="eager" if attention == "eager" else "",
        shards=processes if t.fsdp else 1,
    )


def choose_batch(
    t, device: str, spec: ModelSpec | None, setup: memory.Setup, budget: float
) -> tuple[int, int, bool, str, str]:
    """(per-device batch, accumulation, checkpointing, checkpointing reason, batch reason): the split
    :func:`choose_split` makes, then made to fit the budget (:func:`_fit_batch`) when the model is known."""
    per, acc, split_reason = choose_split(t, device, spec, setup, budget)
    if spec is None:
        gc = t.gradient_checkpointing
        gc_reason = "set in the config" if gc else "off: no estimate for this model; turn it on if memory runs out"
        return per, acc, gc, gc_reason, f"{split_reason} (no estimate for this model)"
    return _fit_batch(
        spec, setup, budget, replace(t, per_device_batch_size=per, gradient_accumulation_steps=acc), split_reason
    )


def batch_line(per: int, acc: int, processes: int, why: str) -> str:
    """The batch's reason, with nanoGPT's arithmetic.

    >>> batch_line(4, 2, 1, "as set in the config")
    '4 per device x 2 accumulation x 1 process = 8 sequences per step; as set in the config'
    """
    return (
        f"{per} per device x {acc} accumulation x {processes} process{'es' if processes > 1 else ''} "
        f"= {per * acc * processes} sequences per step; {why}"
    )


def estimate_run(
    cfg, hw, spec: ModelSpec | None, setup: memory.Setup, shape, processes: int, threads: int, budget: float
) -> tuple[memory.Estimate | None, str]:
    """(estimate, memory advice) of the planned run: its peak memory and time, and when the peak is over
    the budget, by how much and the single changes that would fit. (None, '') for an unknown model."""
    if spec is None:
        return None, ""
    device = setup.device
    tokens = memory.run_tokens(cfg, shape) // processes if shape else 0
    est = memory.estimate(spec, setup, hw=hw if device == "cuda" else None, threads=threads, train_tokens=tokens)
    if device == "mps":  # no measured speed model for Apple GPUs: no time rather than a guess
        est.tokens_per_s, est.train_time_s, est.speed_source = None, None, ""
    est.source = f"planner; data: {shape.source if shape else f'worst case, every example {setup.seq_len} tokens'}"
    if est.peak_memory_mb <= budget:
        return est, ""
    where = "RAM" if device == "cpu" else "GPU memory"
    fixes = memory.fixes(spec, setup, budget)
    advice = (
        f"needs {memory.gib(est.peak_memory_mb)} per process, {memory.gib(budget)} of {where} is the budget: "
        + "; ".join(fixes)
    )
    return est, advice


def choose_split(t, device: str, spec: ModelSpec | None, setup: memory.Setup, budget: float) -> tuple[int, int, str]:
    """(per-device batch, accumulation, reason) before memory is considered: the request's split when
    it was given (auto_batch_split off), else the largest per-device share of the effective batch that
    the device runs fastest with: at most 4 on the CPU and MPS (cache), on a GPU the largest (up to 16)
    that fits the budget without gradient checkpointing."""
    per, acc = t.per_device_batch_size, t.gradient_accumulation_steps
    if not getattr(t, "auto_batch_split", True):
        return per, acc, "as set in the config"
    total = per * acc
    if device != "cuda":
        best, accumulation = split_batch(total, CPU_MAX_PER_DEVICE)
        why = (
            f"up to {CPU_MAX_PER_DEVICE} per device on the {'CPU' if device == 'cpu' else 'MPS GPU'} (faster per token)"
        )
        return best, accumulation, why
    capped = [d for d in range(total, 0, -1) if total % d == 0 and d <= GPU_MAX_PER_DEVICE]
    if spec is not None:
        for d in capped:
            if memory.breakdown(spec, replace(setup, batch=d, gradient_checkpointing=False)).total <= budget:
                return (
                    d,
                    total // d,
                    "the largest per-device share of the effective batch that fits without checkpointing",
                )
    return capped[0], total // capped[0], f"up to {GPU_MAX_PER_DEVICE} per device"


def _fit_batch(
    spec: ModelSpec, setup: memory.Setup, budget: float, t, asked: str = "as asked"
) -> tuple[int, int, bool, str, str]:
    """(per-device batch, accumulation, checkpointing, checkpointing reason, batch reason).

    The split `t` carries when it fits. Otherwise, in the order that costs least: gradient checkpointing
    (~20% slower), then a smaller per-device batch with more accumulation (same effective batch).
    """
    per, acc = t.per_device_batch_size, t.gradient_accumulation_steps

    def peak(batch: int, gc: bool) -> float:
        return memory.breakdown(spec, replace(setup, batch=batch, gradient_checkpointing=gc)).total

    if t.gradient_checkpointing:
        gc_reason = "set in the config (saves activation memory for ~20% more time)"
        if peak(per, True) <= budget:
            return per, acc, True, gc_reason, asked
    else:
        without = peak(per, False)
        if without <= budget:
            return per, acc, False, f"off: {memory.gib(without)} fits without it (~20% faster)", asked
        with_gc = peak(per, True)
        if with_gc <= budget:
            return (
                per,
                acc,
                True,
                (
                    f"on: {memory.gib(without)} without it would not fit {memory.gib(budget)}; "
                    f"with it {memory.gib(with_gc)}"
                ),
                asked,
            )
        gc_reason = f"on: {memory.gib(without)} does not fit {memory.gib(budget)} even in a smaller batch without it"
    total = per * acc
    for smaller in range(per - 1, 0, -1):
        if total % smaller == 0 and peak(smaller, True) <= budget:
            return (
                smaller,
                total // smaller,
                True,
                gc_reason,
                (
                    f"{per} per device does not fit {memory.gib(budget)}: {smaller} x {total // smaller} keeps the "
                    "effective batch"
                ),
            )
    return per, acc, True, gc_reason, "does not fit even at 1 per device with checkpointing (see the problem)"


@dataclass
class Choice:
    """A catalog model and method planned for this machine (a row of the model step, `tunewiz recommend`)."""

    spec: ModelSpec
    method: str
    plan: Plan
    batches: dict[str, tuple[int, int, bool]] = field(default_factory=dict)
    """Per preset: (per-device batch, gradient accumulation, gradient checkpointing) as planned."""

    @property
    def peak_mb(self) -> float:
        return self.plan.peak_mb or 0.0

    @property
    def fits(self) -> bool:
        return bool(self.plan.fits)

    @property
    def tokens_per_s(self) -> float:
        return (self.plan.estimate.tokens_per_s if self.plan.estimate else 0.0) or 0.0

    @property
    def time_s(self) -> float | None:
        return self.plan.estimate.train_time_s if self.plan.estimate else None


def recommend(
    cfg,
    hw,
    shape: memory.DataShape | None = None,
    methods=("lora", "qlora"),
    models=None,
    presets=False,
    busy: Collection[str] = (),
):
    """Catalog models x methods planned for this machine with `cfg`'s preset and data, ranked. On a GPU
    what fits first, larger models first (the most capable model that fits), LoRA before QLoRA; on the
    CPU what fits first, fastest first. `presets`: plan the three presets too (Choice.batches). `busy`:
    as for :func:`plan`."""
    import copy

    from tunewiz.core.models import catalog
    from tunewiz.core.planning import preset_table

    out = []
    for spec in models or catalog.MODELS:
        for method in methods:
            c = copy.deepcopy(cfg)
            c.model.id, c.model.method = catalog_id(spec), method
            choice = Choice(spec, method, plan(c, hw, spec, shape, busy=busy))
            if presets:
                for name, preset in preset_table.PRESETS.items():
                    pc = copy.deepcopy(c)
                    pc.training = preset_request(preset)
                    pp = plan(pc, hw, spec, shape, busy=busy)
                    if pp.fits:
                        choice.batches[name] = (pp.per_device_batch, pp.accumulation, pp.gradient_checkpointing)
            out.append(choice)
    if choose_device(hw).value != "cpu":  # GPUs (and MPS, which has no speed model): the most capable first
        out.sort(key=lambda r: (not r.fits, -r.spec.params, r.method != "lora"))
    else:
        out.sort(key=lambda r: (not r.fits, -r.tokens_per_s))
    return out


def catalog_id(spec: ModelSpec) -> str:
    """The id a run config names a catalog model by: `bundled:NAME` when it ships with tunewiz, else its hub id."""
    return spec.bundled or spec.hub_id
