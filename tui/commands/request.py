"""Arguments into a request: the one place a command's flags become a RunConfig (core.config).

Owns: UserError (a command-line mistake), the data flags of any command (apply_data_args, data_request),
the request of `train` (build_config), of `sweep` (sweep_request), of `fit` (fit_request) and of `probe`
(probe_request). Nothing here prints or starts anything.
"""

from __future__ import annotations

from tunewiz.core.config import RunConfig, apply_overrides
from tunewiz.core.data.dataset import absolute
from tunewiz.core.errors import TunewizError
from tunewiz.core.models.resolve import DEFAULT_MODEL


class UserError(TunewizError):
    """A command-line mistake: the message says what to type instead."""


def apply_data_args(cfg: RunConfig, ns) -> RunConfig:
    """The data flags of any command into the request: --data, --eval-data and the column mapping
    (--prompt-column, --answer-column, --instruction, --system-prompt, --as-text); a flag not given
    leaves the config's value (a re-run's mapping stays)."""
    if getattr(ns, "data", None):
        cfg.data.path = str(absolute(ns.data))
    if getattr(ns, "eval_data", None):
        cfg.data.eval_path = str(absolute(ns.eval_data))
    for flag, key in (
        ("prompt_column", "prompt_column"),
        ("answer_column", "answer_column"),
        ("instruction", "instruction"),
        ("system_prompt", "system_prompt"),
    ):
        value = getattr(ns, flag, None)
        if value is not None:
            setattr(cfg.data, key, value)
    if getattr(ns, "as_text", False):
        cfg.data.as_text = True
    return cfg


def data_request(ns) -> RunConfig:
    """A request holding only what the data flags say (lint, preview): its [data] reads the file."""
    return apply_data_args(RunConfig(), ns)


def build_config(ns) -> RunConfig:
    from tunewiz.core.planning import presets

    if ns.config:
        cfg = RunConfig.from_toml(ns.config)
        if ns.preset and ns.preset != cfg.preset:
            raise UserError("--preset cannot be combined with --config; use --set to change single fields")
    else:
        cfg = presets.build_config(ns.preset or "balanced")
    if ns.model is not None:  # --model "" is an empty id (said so), not the default
        cfg.model.id = ns.model
    apply_data_args(cfg, ns)
    if ns.method:
        cfg.model.method = ns.method
    if ns.name:
        cfg.name = ns.name
    if ns.epochs is not None:
        cfg.training.num_epochs = ns.epochs
    if ns.max_steps is not None:
        cfg.training.max_steps = ns.max_steps
    if ns.max_seq_len is not None:
        cfg.data.max_seq_len = ns.max_seq_len
    if ns.no_eval:
        cfg.evaluation.enabled = False
    apply_overrides(cfg, ns.set or [])
    return cfg.validate()


def sweep_request(ns) -> tuple[RunConfig, list[str]]:
    """`tunewiz sweep`'s base request (the balanced preset, which the sweep varies) and the --set overrides
    that all three runs share (--max-steps and --epochs among them)."""
    from tunewiz.core.planning import presets

    base = presets.build_config("balanced")
    base.model.id = ns.model or DEFAULT_MODEL
    apply_data_args(base, ns)
    if ns.method:
        base.model.method = ns.method
    if ns.max_seq_len is not None:
        base.data.max_seq_len = ns.max_seq_len
    if ns.no_eval:
        base.evaluation.enabled = False
    overrides = list(ns.set or [])
    if ns.max_steps is not None:
        overrides.append(f"training.max_steps={ns.max_steps}")
    if ns.epochs is not None:
        overrides.append(f"training.num_epochs={ns.epochs}")
    return base, overrides


def fit_request(ns, spec) -> RunConfig:
    """`tunewiz fit`'s request for the catalog model `spec` (core.models.catalog): the preset with the
    flags that change the memory a step takes; not validated (the planner says what does not fit)."""
    from tunewiz.core.models import catalog
    from tunewiz.core.planning import planner, presets

    cfg = presets.build_config(ns.preset)
    cfg.model.id = ns.model if catalog.find(ns.model) is None else planner.catalog_id(spec)
    cfg.model.method = ns.method
    cfg.data.max_seq_len = ns.seq_len
    if ns.batch:
        cfg.training.per_device_batch_size, cfg.training.auto_batch_split = ns.batch, False
    if ns.rank:
        cfg.training.lora_r, cfg.training.lora_alpha = ns.rank, planner.choose_lora_alpha(ns.rank).value
    if ns.dtype:
        cfg.model.dtype = ns.dtype
    cfg.training.gradient_checkpointing = ns.gradient_checkpointing
    if ns.data:
        apply_data_args(cfg, ns)
    return cfg


def probe_request(ns) -> RunConfig:
    """`tunewiz probe`'s request: the preset, the model and the data, with the batch held when --batch is given."""
    from tunewiz.core.planning import presets

    cfg = presets.build_config(ns.preset)
    cfg.model.id = ns.model
    cfg.model.method = ns.method
    apply_data_args(cfg, ns)
    if ns.max_seq_len is not None:
        cfg.data.max_seq_len = ns.max_seq_len
    if ns.batch is not None:
        cfg.training.per_device_batch_size, cfg.training.auto_batch_split = ns.batch, False
    return cfg.validate()
