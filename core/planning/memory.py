"""The arithmetic of a training step: peak memory by component, FLOPs and speed (the planner decides with it).

The estimate follows what the HF + PEFT stack keeps alive at the peak of a
training step (the start of the backward pass):

- **weights**: 2 or 4 bytes per parameter; QLoRA stores the block linear layers
  in NF4 with double quantisation (~0.52 bytes per parameter) and keeps the
  embeddings, the LM head and the norms in 16 bit - or in fp32 when PEFT's
  ``prepare_model_for_kbit_training`` upcasts them, which tunewiz's trainer does.
- **trainable**: LoRA matrices in fp32 (PEFT upcasts adapters) with their
  gradients and optimizer states (AdamW: two fp32 moments), or every weight for
  full fine-tuning.
- **activations**: what autograd saves per token and layer, counted from the
  operations of a Llama-style block (RMSNorm upcasts to fp32; a frozen linear
  layer keeps no input, an adapted one does; SDPA keeps q, k, v and its output,
  no seq^2 term; eager attention adds the seq^2 probabilities). With gradient
  checkpointing only each layer's input is kept, plus one layer recomputed.
- **logits**: batch x positions x vocabulary, in the model dtype, its fp32
  upcast, the fp32 log-softmax kept for backward and the fp32 gradient. With
  128k-256k vocabularies this is the largest term at long sequences.
- **overhead**: the CUDA context and allocator slack on a GPU; on the CPU the
  Python process with torch, transformers, peft and trl imported.

Published peaks (LLaMA-Factory, Qwen) are checked in tests/test_memory.py.
Sizes are in MiB (2**20 bytes); the record keeps them under [estimate].
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from tunewiz.core.models.catalog import FUSED, ModelSpec

MiB = 2**20
GiB = 2**30
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
NF4_BYTES = 0.52  # 4-bit NF4 with double quantisation, per quantised parameter (4 bits + scales)
METHODS = ("lora", "qlora", "full")
OPTIMIZERS = {"adamw": 8, "adamw_8bit": 2, "sgd": 0}  # optimizer state bytes per fp32 trainable parameter
# CUDA context (~0.5 GiB with torch's kernels loaded) plus allocator slack; not in max_memory_allocated.
GPU_OVERHEAD_BYTES = 0.75e9
# A training process on the CPU, measured with the probe on this machine (peak RSS, VmHWM):
# Python with torch, transformers, peft, trl and datasets imported is ~530 MiB; the Trainer's own state
# (accelerate, the dataset, optimizer bookkeeping) adds ~270 MiB beyond the counted components.
CPU_LIBRARIES_BYTES = 530 * MiB
CPU_TRAINER_STATE_BYTES = 270 * MiB
CPU_OVERHEAD_BYTES = CPU_LIBRARIES_BYTES + CPU_TRAINER_STATE_BYTES
# glibc keeps freed blocks in per-thread arenas: measured peaks of a forward + backward on the CPU run
# 10-23% above the counted activations and logits (SmolLM2-135M, batch 1-4 x 128 tokens).
CPU_ALLOCATOR_SLACK = 1.15
# Effective training throughput of one physical x86 core in fp32, measured on this project's 2-core CI
# machine (AMD EPYC, AVX2): SmolLM2-135M LoRA, ~140 tok/s at 4N FLOPs per token.
CPU_FLOPS_PER_CORE = 38e9
# Dense bf16/fp16 tensor throughput from the vendors' spec sheets (TFLOP/s), by a name fragment.
# These are peaks, not measurements: the time estimate assumes GPU_UTILISATION of them until a probe
# measures the real rate on the machine.
GPU_PEAK_TFLOPS = (
    ("h200", 989.0),
    ("h100 pcie", 756.0),
    ("h100", 989.0),  # SXM (NVIDIA H100 80GB HBM3) and NVL
    ("a100", 312.0),
    ("l40s", 362.0),
    ("l40", 181.0),
    ("rtx 6000 ada", 364.0),
    ("a6000", 155.0),
    ("4090", 165.0),
    ("4080", 97.5),
    ("3090", 71.0),
    ("a10", 125.0),
    ("l4", 121.0),
    ("v100", 125.0),
    ("t4", 65.0),
)
GPU_UTILISATION = 0.3  # typical model-FLOP utilisation of HF + PEFT LoRA training on one GPU
QLORA_SLOWDOWN = 0.7  # de-quantising every weight in forward and backward costs ~30% of throughput


@dataclass
class Setup:
    """What is trained and how: everything the peak memory depends on besides the model."""

    method: str = "lora"
    """lora | qlora | full."""
    dtype: str = "bfloat16"
    """float32 | bfloat16 | float16: the weights' and activations' precision."""
    lora_r: int = 16
    target_modules: list[str] | tuple[str, ...] = ("all-linear",)
    batch: int = 1
    """Sequences per forward pass (per-device batch)."""
    seq_len: int = 512
    """Tokens per sequence in the largest batch (the dataset's longest, after truncation)."""
    gradient_checkpointing: bool = False
    optimizer: str = "adamw"
    """adamw | adamw_8bit | sgd."""
    trained_fraction: float = 1.0
    """Share of positions projected through the LM head (tunewiz scores only the assistant tokens)."""
    lora_dropout: float = 0.0
    device: str = "cuda"
    """cuda | mps | cpu: on the CPU the estimate is of the process's resident memory (RSS)."""
    kbit_upcast: bool = True
    """QLoRA: PEFT's prepare_model_for_kbit_training casts the 16-bit embeddings, head and norms to fp32."""
    attention: str = ""
    """sdpa | eager; empty: what the model uses (Gemma 2 needs eager)."""
    shards: int = 1
    """FSDP: the processes the weights, gradients and optimizer states are split over (1: a full copy each)."""

    def problems(self) -> list[str]:
        p = []
        if self.method not in METHODS:
            p.append(f"method = {self.method!r}: use one of {', '.join(METHODS)}")
        if self.dtype not in BYTES:
            p.append(f"dtype = {self.dtype!r}: use one of {', '.join(BYTES)}")
        if self.optimizer not in OPTIMIZERS:
            p.append(f"optimizer = {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        for name in ("lora_r", "batch", "seq_len"):
            if getattr(self, name) < 1:
                p.append(f"{name} = {getattr(self, name)}: must be at least 1")
        if not 0 < self.trained_fraction <= 1:
            p.append(f"trained_fraction = {self.trained_fraction}: use a share in (0, 1]")
        return p


@dataclass
class Breakdown:
    """Peak memory by component, in MiB."""

    weights: float
    trainable: float
    activations: float
    logits: float
    overhead: float
    trainable_params: int
    device: str

    @property
    def total(self) -> float:
        return self.weights + self.trainable + self.activations + self.logits + self.overhead

    def count_trainable(self, params: int, optimizer: str = "adamw") -> None:
        """Use PEFT's real count of adapter parameters: fp32 weights + gradients + optimizer states."""
        self.trainable = params * (8 + OPTIMIZERS[optimizer]) / MiB
        self.trainable_params = params

    def lines(self) -> list[str]:
        where = "host RAM (RSS)" if self.device == "cpu" else "GPU memory"
        rows = [
            ("weights", self.weights),
            (f"trainable ({self.trainable_params / 1e6:.1f}M params + grads + optimizer)", self.trainable),
            ("activations", self.activations),
            ("logits (+ fp32 upcast and gradient)", self.logits),
            ("CUDA context / allocator" if self.device != "cpu" else "Python + libraries", self.overhead),
        ]
        width = max(len(r[0]) for r in rows) + 2
        out = [f"{label:<{width}}{gib(v):>10}" for label, v in rows]
        out.append("-" * (width + 10))
        out.append(f"{'peak ' + where:<{width}}{gib(self.total):>10}")
        return out


@dataclass
class Estimate:
    """A breakdown plus the expected speed and time; `to_dict` is the record's flat [estimate]."""

    model: str
    setup: Setup
    breakdown: Breakdown
    tokens_per_s: float | None = None
    train_time_s: float | None = None
    speed_source: str = ""
    source: str = ""
    """Who made the estimate from what (the record keeps it beside the numbers)."""

    @property
    def peak_memory_mb(self) -> float:
        return round(self.breakdown.total, 1)

    def to_dict(self) -> dict[str, Any]:
        b = self.breakdown
        d: dict[str, Any] = {
            "model": self.model,
            "method": self.setup.method,
            "dtype": self.setup.dtype,
            "estimator": "breakdown-v2",
            "device": b.device,
            "batch": self.setup.batch,
            "seq_len": self.setup.seq_len,
            "gradient_checkpointing": self.setup.gradient_checkpointing,
            "weights_mb": round(b.weights, 1),
            "trainable_mb": round(b.trainable, 1),
            "activations_mb": round(b.activations, 1),
            "logits_mb": round(b.logits, 1),
            "overhead_mb": round(b.overhead, 1),
            "peak_memory_mb": self.peak_memory_mb,
        }
        if self.tokens_per_s:
            d["tokens_per_s"] = round(self.tokens_per_s, 1)
            d["speed_source"] = self.speed_source
        if self.train_time_s:
            d["train_time_s"] = round(self.train_time_s, 1)
        if self.source:
            d["source"] = self.source
        return d


def gib(mb: float) -> str:
    """'1.23 GiB' for sizes from 1 GiB up, '512 MiB' below."""
    return f"{mb / 1024:.2f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


# -- memory -----------------------------------------------------------------------------


def targets(spec: ModelSpec, target_modules) -> set[str]:
    """The block linear layers that get adapters, by the names in `spec.linear_shapes()`.

    >>> from tunewiz.core.models.catalog import BY_KEY
    >>> sorted(targets(BY_KEY["phi3-mini"], ["q_proj", "v_proj"]))
    ['qkv_proj']
    """
    shapes = spec.linear_shapes()
    wanted = set(target_modules or ())
    if not wanted or wanted & {"all-linear", "all"}:
        return set(shapes)
    out = {n for n in shapes if n in wanted}
    for fused, parts in FUSED.items():
        if fused in shapes and wanted & set(parts):
            out.add(fused)
        if fused in wanted:
            out.update(p for p in parts if p in shapes)
    return out


def lora_params(spec: ModelSpec, r: int, target_modules) -> int:
    """Trainable LoRA parameters: r x (in + out) per adapted linear layer, in every block.

    >>> from tunewiz.core.models.catalog import BY_KEY
    >>> lora_params(BY_KEY["llama3.1-8b"], 16, ["all-linear"])  # 0.52% of 8.03B
    41943040
    >>> lora_params(BY_KEY["llama3.1-8b"], 16, ["q_proj", "k_proj", "v_proj", "o_proj"])  # k, v are 4x narrower (GQA)
    13631488
    """
    shapes = spec.linear_shapes()
    return spec.layers * sum(r * (shapes[n][0] + shapes[n][1]) for n in targets(spec, target_modules))


def layer_activation_bytes(spec: ModelSpec, s: Setup) -> float:
    """Bytes autograd keeps per token for one decoder block, without checkpointing."""
    b = BYTES[s.dtype]
    h, inter = spec.hidden, spec.intermediate
    full = s.method == "full"
    adapted = targets(spec, s.target_modules)

    def keeps_input(*names: str) -> bool:  # a frozen linear layer needs no input for backward
        return full or any(n in adapted or FUSED.get(n, ()) and set(FUSED[n]) & adapted for n in names)

    qkv = ("qkv_proj", "q_proj", "k_proj", "v_proj")
    norms = spec.norms_per_layer * (4 * h + b * h)  # RMSNorm: fp32 copy of its input + normalised output
    attn = (h if keeps_input(*qkv) else 0) + 2 * spec.q_dim + 2 * spec.kv_dim  # SDPA keeps q, k, v and output
    attn += spec.q_dim if keeps_input("o_proj") else 0
    mlp = (h if keeps_input("gate_up_proj", "gate_proj", "up_proj") else 0) + 3 * inter  # act in/out, up out
    mlp += inter if keeps_input("down_proj") else 0
    total = norms + (attn + mlp) * b
    if s.method != "full" and b < 4 and s.device == "cpu":
        # No autocast on the CPU: PEFT casts each adapted layer's 16-bit input to its fp32 adapter
        # weights, and that fp32 copy is what lora_A keeps for backward.
        shapes = spec.linear_shapes()
        total += sum(shapes[n][0] for n in adapted) * 4
    if s.lora_dropout > 0:  # dropout copies each adapted layer's input and keeps a mask
        shapes = spec.linear_shapes()
        total += sum(shapes[n][0] for n in adapted) * (b + 1)
    if (s.attention or spec.attention) == "eager":  # the seq x seq probabilities: fp32 softmax + its cast
        total += spec.heads * s.seq_len * (4 + b)
    return total


def logits_bytes_per_entry(dtype: str) -> int:
    """Bytes per logit at the loss: the logit, its fp32 upcast, the fp32 log-softmax and its gradient.

    >>> logits_bytes_per_entry("bfloat16"), logits_bytes_per_entry("float32")
    (14, 12)
    """
    b = BYTES[dtype]
    return b + (4 if b < 4 else 0) + 4 + 4


def breakdown(spec: ModelSpec, s: Setup) -> Breakdown:
    """Peak memory of one training step, by component."""
    problems = s.problems()
    if problems:
        raise ValueError("; ".join(problems))
    b = BYTES[s.dtype]
    params = spec.params
    if s.method == "qlora":
        rest = params - spec.quantized_params  # embeddings, LM head, norms, biases
        weights = spec.quantized_params * NF4_BYTES + rest * (4 if s.kbit_upcast else b)
    else:
        weights = params * b
    opt = OPTIMIZERS[s.optimizer]
    if s.method == "full":
        n_train = params
        states = 2 * b if s.optimizer == "adamw" else opt  # torch AdamW keeps its moments in the weights' dtype
        trainable = params * (b + states)  # gradients in the weights' dtype + optimizer states
    else:
        n_train = lora_params(spec, s.lora_r, s.target_modules)
        trainable = n_train * (4 + 4 + opt)  # fp32 adapter weights + gradients + optimizer states
    if s.shards > 1:
        # FSDP: each GPU keeps 1/shards of everything, plus the block being computed and the one
        # prefetched, gathered whole.
        block = (spec.layer_linear_params + spec.layer_other_params) * b
        weights = weights / s.shards + 2 * block
        trainable = trainable / s.shards
    tokens = s.batch * s.seq_len
    per_layer = layer_activation_bytes(spec, s)
    if s.gradient_checkpointing:
        # Each block's input is kept; backward recomputes one block at a time.
        acts = tokens * (spec.layers * spec.hidden * b + per_layer)
    else:
        acts = tokens * spec.layers * per_layer
    acts += tokens * spec.hidden * (4 + 2 * b)  # final norm, and the gradient flowing back into the blocks
    logits = tokens * s.trained_fraction * spec.vocab * logits_bytes_per_entry(s.dtype)
    if s.device == "cpu":
        acts, logits = acts * CPU_ALLOCATOR_SLACK, logits * CPU_ALLOCATOR_SLACK
    overhead = CPU_OVERHEAD_BYTES if s.device == "cpu" else GPU_OVERHEAD_BYTES
    return Breakdown(weights / MiB, trainable / MiB, acts / MiB, logits / MiB, overhead / MiB, int(n_train), s.device)


# -- speed and time ---------------------------------------------------------------------


def flops_per_token(spec: ModelSpec, s: Setup) -> float:
    """Training FLOPs per token: forward 2N, backward 2N (input grads) + 2N more for weight grads in
    full fine-tuning, + 2N with gradient checkpointing (the forward again)."""
    n = spec.params
    f = 4 * n + (2 * n if s.method == "full" else 0) + (2 * n if s.gradient_checkpointing else 0)
    return f


def gpu_peak_flops(name: str) -> float:
    n = name.lower()
    for frag, tflops in GPU_PEAK_TFLOPS:
        if frag in n:
            return tflops * 1e12
    return 50e12  # an unknown card: a mid-range guess, flagged as such by `speed_source`


def tokens_per_s(spec: ModelSpec, s: Setup, hw=None, threads: int | None = None) -> tuple[float, str]:
    """Expected training tokens per second on this hardware, and where the figure comes from."""
    f = flops_per_token(spec, s)
    gpu = getattr(hw, "best_gpu", None) if hw is not None else None
    if s.device == "cpu" or gpu is None:
        cores = threads or getattr(hw, "cpu_physical_cores", 1) or 1
        tps = CPU_FLOPS_PER_CORE * cores / f
        if s.method == "qlora":
            tps *= QLORA_SLOWDOWN / 2  # bitsandbytes de-quantises on the CPU without fused kernels
        return tps, f"cpu: {cores} cores x {CPU_FLOPS_PER_CORE / 1e9:.0f} GFLOP/s measured per core"
    peak = gpu_peak_flops(gpu.name)
    tps = peak * GPU_UTILISATION / f
    if s.method == "qlora":
        tps *= QLORA_SLOWDOWN
    return tps, f"gpu: spec-sheet {peak / 1e12:.0f} TFLOP/s x {GPU_UTILISATION:.0%} assumed utilisation (unmeasured)"


def estimate(
    spec: ModelSpec,
    setup: Setup,
    *,
    hw=None,
    threads: int | None = None,
    train_tokens: int = 0,
    trainable_params: int | None = None,
) -> Estimate:
    """Peak memory breakdown, tokens per second and training time for `train_tokens` tokens."""
    bd = breakdown(spec, setup)
    if trainable_params is not None and setup.method != "full":  # the real count from PEFT, when known
        bd.count_trainable(trainable_params, setup.optimizer)
    tps, source = tokens_per_s(spec, setup, hw, threads)
    return Estimate(spec.key, setup, bd, tps, train_tokens / tps if train_tokens else None, source)


def fixes(spec: ModelSpec, s: Setup, budget_mb: float) -> list[str]:
    """Single changes that make the setup fit, in the order to try them (same effective batch first)."""
    tries: list[tuple[str, Setup]] = []
    if s.batch > 1:
        tries.append((f"per-device batch 1 (x{s.batch} more gradient accumulation, same effective batch)",
                      replace(s, batch=1)))  # fmt: skip
    if not s.gradient_checkpointing:
        tries.append(("gradient checkpointing on (~20% slower)", replace(s, gradient_checkpointing=True)))
        tries.append(("gradient checkpointing and batch 1", replace(s, gradient_checkpointing=True, batch=1)))
    if s.method != "qlora":
        tries.append(("method qlora (4-bit base)", replace(s, method="qlora")))
        tries.append(
            ("qlora, checkpointing, batch 1", replace(s, method="qlora", gradient_checkpointing=True, batch=1))
        )
    for n in (s.seq_len // 2, s.seq_len // 4):
        if n >= 64:
            tries.append((f"max_seq_len {n}", replace(s, seq_len=n, gradient_checkpointing=True, batch=1)))
    out = []
    for label, t in tries:
        peak = breakdown(spec, t).total
        if peak <= budget_mb:
            out.append(f"{label}: {gib(peak)}")
    if not out:
        out.append("a smaller model: nothing short of that fits this budget")
    return out


# -- the data's shape (the planner's input) -------------------------------------------------

# Characters per token of chat text with a ~50k-150k BPE vocabulary, and the chat template's tokens per
# message (role header and end marker). Checked on the sample data with SmolLM2's tokenizer: within 25%
# of the tokenized totals (English prose ~4 chars per token, JSON and numbers ~2.5).
CHARS_PER_TOKEN = 3.5
TEMPLATE_TOKENS_PER_MESSAGE = 8


@dataclass
class DataShape:
    """What the estimate needs to know about the data: its longest example, its size, what is trained."""

    longest: int
    """Tokens of the longest example, after truncation to max_seq_len."""
    train_tokens: int
    """Tokens of one epoch of the training rows."""
    trained_fraction: float = 1.0
    """Share of tokens that are assistant answers (what the LM head scores)."""
    source: str = ""
    rows: int = 0
    """Training rows (turns max_steps into tokens)."""


def approx_data_shape(examples, max_seq_len: int, eval_fraction: float = 0.0) -> DataShape:
    """A data shape from the text alone (no tokenizer): characters / CHARS_PER_TOKEN + template tokens.

    >>> from types import SimpleNamespace
    >>> turns = [{"role": "user", "content": "x" * 70}, {"role": "assistant", "content": "y" * 35}]
    >>> ex = SimpleNamespace(messages=turns)
    >>> s = approx_data_shape([ex] * 10, 512, eval_fraction=0.1)
    >>> s.longest, s.train_tokens, round(s.trained_fraction, 2)
    (46, 414, 0.39)
    >>> s.rows
    9
    """
    lengths, trained, total = [], 0.0, 0.0
    for ex in examples:
        n = 0.0
        for m in ex.messages:
            t = len(m.get("content") or "") / CHARS_PER_TOKEN + TEMPLATE_TOKENS_PER_MESSAGE
            n += t
            trained += t if m.get("role") == "assistant" else 0.0
        total += n
        lengths.append(min(int(n), max_seq_len))
    if not lengths:
        return DataShape(1, 0, 1.0, "no examples")
    train_rows = len(lengths) - int(round(len(lengths) * eval_fraction))
    return DataShape(
        max(lengths),
        int(sum(lengths) * train_rows / len(lengths)),
        min(max(trained / max(total, 1.0), 0.01), 1.0),
        f"approximate: characters / {CHARS_PER_TOKEN} + {TEMPLATE_TOKENS_PER_MESSAGE} tokens per message",
        train_rows,
    )


def run_tokens(cfg, shape: DataShape) -> int:
    """Tokens the run trains on: epochs x one epoch, or max_steps x effective batch x the mean row."""
    t = cfg.training
    if t.max_steps and t.max_steps > 0 and shape.rows:
        return int(t.max_steps * t.effective_batch * shape.train_tokens / shape.rows)  # HF ignores epochs then
    return int(shape.train_tokens * t.num_epochs)
