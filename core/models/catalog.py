"""The small models people fine-tune, with the architecture numbers the memory estimate needs.

Every entry's numbers are those of the model's published ``config.json`` on the
Hugging Face hub (hidden size, layers, attention / key-value heads, head size,
MLP width, vocabulary, tied embeddings). ``published_params`` is the size the
model card states; tests/test_catalog.py recomputes the parameter count from
the architecture and checks it against that size within 2%, so a typo in a
width or a layer count cannot go unnoticed.

A model that is not in the catalog is described from its own config.json
(:func:`from_config`), so the estimator works for any local or cached model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewiz.core.errors import TunewizError

# Linear layers of one decoder block, by their usual PEFT target names.
ATTN_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")
LINEAR_MODULES = ATTN_MODULES + MLP_MODULES
# Fused projections some architectures use, and the unfused names they stand for.
FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


@dataclass(frozen=True)
class ModelSpec:
    """One model's identity and the architecture numbers the estimate needs."""

    key: str
    """Short name used on the command line (`tunewiz fit --model qwen2.5-1.5b`)."""
    hub_id: str
    license: str
    published_params: float
    """Parameter count the model card states (the check for the numbers below)."""
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool
    head_dim: int = 0
    """0: hidden // heads (the config leaves it out)."""
    qkv_bias: bool = False
    """Qwen2 / Qwen2.5 put a bias on the q, k and v projections."""
    qk_norm: bool = False
    """Qwen3 normalises each head's query and key (two head_dim vectors per layer)."""
    norms_per_layer: int = 2
    """RMSNorms per block: 2 for Llama-style, 4 for Gemma 2 (pre and post norms)."""
    fused: bool = False
    """Phi-3 keeps q/k/v in one qkv_proj and gate/up in one gate_up_proj."""
    attention: str = "sdpa"
    """sdpa: memory-efficient attention (no seq^2 term); eager: the attention matrix is kept."""
    context: int = 0
    bundled: str = ""
    """`bundled:NAME` when the model ships with tunewiz."""

    @property
    def hd(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def q_dim(self) -> int:
        return self.heads * self.hd

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.hd

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one block, by its PEFT target name."""
        h, i = self.hidden, self.intermediate
        if self.fused:
            return {
                "qkv_proj": (h, self.q_dim + 2 * self.kv_dim),
                "o_proj": (self.q_dim, h),
                "gate_up_proj": (h, 2 * i),
                "down_proj": (i, h),
            }
        return {
            "q_proj": (h, self.q_dim),
            "k_proj": (h, self.kv_dim),
            "v_proj": (h, self.kv_dim),
            "o_proj": (self.q_dim, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tied else self.vocab * self.hidden

    @property
    def layer_linear_params(self) -> int:
        """Weights of one block's linear layers (what QLoRA quantises)."""
        return sum(a * b for a, b in self.linear_shapes().values())

    @property
    def layer_other_params(self) -> int:
        """Biases and norm weights of one block (kept in 16 or 32 bit)."""
        n = self.norms_per_layer * self.hidden
        if self.qkv_bias:
            n += self.q_dim + 2 * self.kv_dim
        if self.qk_norm:
            n += 2 * self.hd
        return n

    @property
    def quantized_params(self) -> int:
        return self.layers * self.layer_linear_params

    @property
    def params(self) -> int:
        """Total parameters computed from the architecture (tied embeddings counted once)."""
        blocks = self.layers * (self.layer_linear_params + self.layer_other_params)
        return self.embedding_params + self.lm_head_params + blocks + self.hidden  # + final norm

    @property
    def label(self) -> str:
        return (
            f"{self.key} ({self.params / 1e9:.2f}B)" if self.params >= 1e9 else f"{self.key} ({self.params / 1e6:.0f}M)"
        )


def _m(key, hub_id, lic, published, h, n, heads, kv, inter, vocab, tied, **kw) -> ModelSpec:
    return ModelSpec(key, hub_id, lic, published, h, n, heads, kv, inter, vocab, tied, **kw)


# Numbers from each model's config.json on the hub; published sizes from the model cards.
MODELS: tuple[ModelSpec, ...] = (
    _m("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0", 134.5e6,
       576, 30, 9, 3, 1536, 49152, True, context=8192, bundled="bundled:smollm2-135m-instruct"),
    _m("smollm2-360m", "HuggingFaceTB/SmolLM2-360M-Instruct", "apache-2.0", 361.8e6,
       960, 32, 15, 5, 2560, 49152, True, context=8192),
    _m("smollm2-1.7b", "HuggingFaceTB/SmolLM2-1.7B-Instruct", "apache-2.0", 1.711e9,
       2048, 24, 32, 32, 8192, 49152, True, context=8192),
    _m("qwen2.5-0.5b", "Qwen/Qwen2.5-0.5B-Instruct", "apache-2.0", 0.494e9,
       896, 24, 14, 2, 4864, 151936, True, qkv_bias=True, context=32768),
    _m("qwen2.5-1.5b", "Qwen/Qwen2.5-1.5B-Instruct", "apache-2.0", 1.544e9,
       1536, 28, 12, 2, 8960, 151936, True, qkv_bias=True, context=32768),
    _m("qwen2.5-3b", "Qwen/Qwen2.5-3B-Instruct", "qwen-research", 3.086e9,
       2048, 36, 16, 2, 11008, 151936, True, qkv_bias=True, context=32768),
    _m("qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct", "apache-2.0", 7.616e9,
       3584, 28, 28, 4, 18944, 152064, False, qkv_bias=True, context=32768),
    _m("qwen3-0.6b", "Qwen/Qwen3-0.6B", "apache-2.0", 0.596e9,
       1024, 28, 16, 8, 3072, 151936, True, head_dim=128, qk_norm=True, context=40960),
    _m("qwen3-1.7b", "Qwen/Qwen3-1.7B", "apache-2.0", 1.72e9,
       2048, 28, 16, 8, 6144, 151936, True, head_dim=128, qk_norm=True, context=40960),
    _m("qwen3-4b", "Qwen/Qwen3-4B", "apache-2.0", 4.02e9,
       2560, 36, 32, 8, 9728, 151936, True, head_dim=128, qk_norm=True, context=40960),
    _m("qwen3-8b", "Qwen/Qwen3-8B", "apache-2.0", 8.19e9,
       4096, 36, 32, 8, 12288, 151936, False, head_dim=128, qk_norm=True, context=40960),
    _m("llama3.2-1b", "meta-llama/Llama-3.2-1B-Instruct", "llama3.2", 1.236e9,
       2048, 16, 32, 8, 8192, 128256, True, head_dim=64, context=131072),
    _m("llama3.2-3b", "meta-llama/Llama-3.2-3B-Instruct", "llama3.2", 3.213e9,
       3072, 28, 24, 8, 8192, 128256, True, head_dim=128, context=131072),
    _m("llama3.1-8b", "meta-llama/Llama-3.1-8B-Instruct", "llama3.1", 8.03e9,
       4096, 32, 32, 8, 14336, 128256, False, context=131072),
    _m("mistral-7b", "mistralai/Mistral-7B-Instruct-v0.3", "apache-2.0", 7.248e9,
       4096, 32, 32, 8, 14336, 32768, False, context=32768),
    _m("phi3-mini", "microsoft/Phi-3-mini-4k-instruct", "mit", 3.821e9,
       3072, 32, 32, 32, 8192, 32064, False, fused=True, context=4096),
    _m("phi3.5-mini", "microsoft/Phi-3.5-mini-instruct", "mit", 3.821e9,
       3072, 32, 32, 32, 8192, 32064, False, fused=True, context=131072),
    # Gemma 2 soft-caps attention logits, which needs eager attention (HF's advice for training).
    _m("gemma2-2b", "google/gemma-2-2b-it", "gemma", 2.614e9,
       2304, 26, 8, 4, 9216, 256000, True, head_dim=256, norms_per_layer=4, attention="eager", context=8192),
    _m("gemma2-9b", "google/gemma-2-9b-it", "gemma", 9.242e9,
       3584, 42, 16, 8, 14336, 256000, True, head_dim=256, norms_per_layer=4, attention="eager", context=8192),
)  # fmt: skip

BY_KEY = {m.key: m for m in MODELS}


class CatalogError(TunewizError, ValueError):
    """A model could not be described; the message says what to give instead."""


def find(name: str) -> ModelSpec | None:
    """A catalog entry by key, hub id (any case) or `bundled:` id; None when unknown.

    >>> find("Qwen/Qwen2.5-7B-Instruct").key
    'qwen2.5-7b'
    >>> find("bundled:smollm2-135m-instruct").hidden
    576
    """
    n = name.strip().lower()
    for m in MODELS:
        if n in (m.key, m.hub_id.lower(), m.bundled) or n == m.hub_id.lower().split("/")[-1]:
            return m
    return None


def canonical_id(name: str) -> str:
    """The model id a run records for what a person typed: a catalog name as `recommend` and the model
    step print it ('qwen2.5-0.5b', 'smollm2-135m') becomes the id training loads (its hub id, or
    `bundled:` for the bundled model); anything else (a directory here, a hub id) stays as typed.

    >>> canonical_id("qwen2.5-0.5b"), canonical_id("smollm2-135m"), canonical_id("someone/their-model")
    ('Qwen/Qwen2.5-0.5B-Instruct', 'bundled:smollm2-135m-instruct', 'someone/their-model')
    """
    name = name.strip()
    spec = None if Path(name).expanduser().exists() else BY_KEY.get(name.lower())
    return (spec.bundled or spec.hub_id) if spec is not None else name


def _get(cfg: dict[str, Any], *names: str, default: Any = None) -> Any:
    for n in names:
        if cfg.get(n) is not None:
            return cfg[n]
    return default


def from_config(cfg: dict[str, Any], key: str = "", source: str = "config.json") -> ModelSpec:
    """Describe a model from its config.json (a dict); every missing field is reported at once."""
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else None
    cfg = {**cfg, **(text or {})}
    needed = {
        "hidden_size": ("hidden_size", "n_embd", "d_model"),
        "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers"),
        "num_attention_heads": ("num_attention_heads", "n_head"),
        "intermediate_size": ("intermediate_size", "ffn_dim", "n_inner"),
        "vocab_size": ("vocab_size",),
    }
    got = {k: _get(cfg, *names) for k, names in needed.items()}
    missing = [k for k, v in got.items() if not isinstance(v, int)]
    if missing:
        raise CatalogError(
            f"{source}: no integer {', '.join(missing)}; tunewiz cannot estimate this architecture. "
            "Give a decoder-only causal LM (Llama, Qwen, Mistral, Phi-3, Gemma style) or pick a catalog model."
        )
    mtype = str(cfg.get("model_type", ""))
    heads = got["num_attention_heads"]
    return ModelSpec(
        key=key or str(cfg.get("_name_or_path") or mtype or "model"),
        hub_id=str(cfg.get("_name_or_path", "")),
        license="",
        published_params=0.0,
        hidden=got["hidden_size"],
        layers=got["num_hidden_layers"],
        heads=heads,
        kv_heads=int(_get(cfg, "num_key_value_heads", default=heads)),
        intermediate=got["intermediate_size"],
        vocab=got["vocab_size"],
        tied=bool(cfg.get("tie_word_embeddings", True)),
        head_dim=int(cfg.get("head_dim") or 0),
        qkv_bias=mtype == "qwen2" or bool(cfg.get("attention_bias", False)),
        qk_norm=mtype == "qwen3",
        norms_per_layer=4 if mtype.startswith("gemma2") or mtype.startswith("gemma3") else 2,
        fused=mtype == "phi3",
        attention="eager" if mtype.startswith("gemma2") else "sdpa",
        context=int(cfg.get("max_position_embeddings") or 0),
    )


def from_dir(path: str | Path) -> ModelSpec:
    """Describe a local model directory from its config.json."""
    p = Path(path) / "config.json"
    try:
        cfg = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CatalogError(f"{p} not found: give a model directory that holds config.json") from None
    except json.JSONDecodeError as exc:
        raise CatalogError(f"{p}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    return from_config(cfg, key=Path(path).name, source=str(p))


def lookup(name: str) -> ModelSpec:
    """A catalog entry, else a local directory's config.json; an actionable error otherwise."""
    spec = find(name)
    if spec is not None:
        return spec
    if Path(name).expanduser().is_dir():
        return from_dir(Path(name).expanduser())
    raise CatalogError(
        f"unknown model {name!r}: not in the catalog and not a directory with a config.json. "
        f"Catalog models: {', '.join(BY_KEY)}"
    )
