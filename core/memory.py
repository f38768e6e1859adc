"""First-order memory and time estimates for a run (recorded under [estimate]).

Deliberately simple until the estimator with a full breakdown lands: weights,
LoRA parameters with gradients and AdamW states, logits for the trained
positions, and activations per layer. The record keeps the prediction next to
the measured peak and time, so its error is visible on every run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
NF4_BYTES = 0.52  # 4-bit NF4 with double quantisation, per quantised parameter
# Effective training throughput of one physical x86 core in fp32, measured on this
# project's 2-core CI machine (AMD EPYC, AVX2): SmolLM2-135M LoRA, ~140 tok/s at 4N FLOPs per token.
CPU_FLOPS_PER_CORE = 38e9


@dataclass
class Estimate:
    weights_mb: float
    adapter_states_mb: float
    activations_mb: float
    logits_mb: float
    peak_memory_mb: float
    tokens_per_s: float | None
    train_time_s: float | None
    method: str = "first-order"

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def estimate(
    *,
    total_params: int,
    trainable_params: int,
    embedding_params: int,
    hidden: int,
    layers: int,
    vocab: int,
    method: str,
    dtype: str,
    batch: int,
    seq_len: int,
    trained_fraction: float,
    gradient_checkpointing: bool,
    train_tokens: int,
    device: str,
    physical_cores: int,
) -> Estimate:
    mb = 2**20
    b = BYTES.get(dtype, 4)
    if method == "qlora":
        weights = (total_params - embedding_params) * NF4_BYTES + embedding_params * 2
    else:
        weights = total_params * b
    adapter = trainable_params * (4 + 4 + 8)  # fp32 weights + grads + AdamW moments
    per_token_layer = hidden * (4 if gradient_checkpointing else 34) * b / 2  # ~34 saved values per hidden unit
    activations = batch * seq_len * layers * per_token_layer
    logits = batch * seq_len * max(trained_fraction, 0.05) * vocab * 4 * 2  # fp32 logits + their gradient
    peak = weights + adapter + activations + logits
    tps = time_s = None
    if device == "cpu":
        tps = CPU_FLOPS_PER_CORE * physical_cores / (4 * total_params)
        time_s = train_tokens / tps
    return Estimate(
        round(weights / mb, 1),
        round(adapter / mb, 1),
        round(activations / mb, 1),
        round(logits / mb, 1),
        round(peak / mb, 1),
        round(tps, 1) if tps else None,
        round(time_s, 1) if time_s else None,
    )
