"""The typed run configuration, and its round trip through TOML.

A run.toml is both the record of a run and a config: the sections that
describe *what to run* ([model], [data], [preset], [training], [evaluation])
are read back by :func:`RunConfig.from_dict`; everything else a record holds
(status, results, hardware, ...) is ignored when the file is used as a config.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewiz.core.errors import TunewizError
from tunewiz.core.toml import tomllib

METHODS = ("lora", "qlora")
DTYPES = ("auto", "float32", "bfloat16", "float16")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
REPORT_TO = ("none", "tensorboard", "wandb", "mlflow", "trackio")
"""Experiment trackers the Trainer can report to; `none` (the default) sends nothing anywhere."""


class ConfigError(TunewizError, ValueError):
    """One or more problems in a run configuration, each saying where and what to do."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s){where}:\n{lines}")


@dataclass
class ModelConfig:
    id: str = "bundled:smollm2-135m-instruct"
    """`bundled:NAME`, a local Hugging Face model directory, or a hub id (`org/name`)."""
    method: str = "lora"
    """lora: 16/32-bit base + LoRA adapters; qlora: 4-bit NF4 base (bitsandbytes) + LoRA."""
    dtype: str = "auto"
    """Compute dtype. auto: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    trust_remote_code: bool = False
    """Run Python code shipped with a hub model. Off unless you trust the model's author."""


@dataclass
class DataConfig:
    path: str = ""
    """Training data: JSONL or JSON array, chat `messages` or Alpaca rows."""
    eval_path: str = ""
    """Separate held-out file; empty: hold out `eval_fraction` of `path`."""
    eval_fraction: float = 0.1
    """Share of rows held out for evaluation when there is no eval file (10-20% is usual)."""
    split_seed: int = 42
    """Seed of the train/eval split: the same seed and file give the same split."""
    max_seq_len: int = 512
    """tokens per example; longer examples are cut at the end. Counted after the chat template."""
    prompt_column: str = ""
    """For a table (CSV / TSV, Parquet, JSONL with keys of its own, a datasets folder): the column that makes
    the user's turn, or a template naming columns, e.g. "Review: {text}". Empty: the file is chat data."""
    answer_column: str = ""
    """For a table: the column the model learns to answer with (a label, a category, an answer)."""
    instruction: str = ""
    """For a table: text put before every prompt, e.g. "Classify the intent of this banking message."."""
    system_prompt: str = ""
    """For a table: a system prompt for every row (it is also chat's default system prompt)."""
    as_text: bool = False
    """Train a table's 'text' column as plain text, every token, ignoring its other columns: the explicit
    choice a table needs when it has no prompt and answer columns."""


@dataclass
class TrainingConfig:
    lora_r: int = 16
    """the adapters' capacity: 8-16 suits most tasks, 64 only hard targets"""
    lora_alpha: int = 32
    """the adapters' scale: 2 x rank (it follows the rank until you set it)"""
    lora_dropout: float = 0.0
    """0 lets PEFT skip a dropout copy in every adapted layer (1.4x faster on CPU, measured)."""
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])
    """Which linear layers get adapters; all-linear is the robust default."""
    learning_rate: float = 2e-4
    """step size of each update: 1e-4 to 5e-4 suits LoRA; too high and the loss jumps"""
    num_epochs: float = 3.0
    """passes over the training rows (1.5 is allowed). 1-5 is the usual range."""
    max_steps: int = -1
    """-1 trains all the epochs; N stops after N optimizer steps (a quick trial)"""
    per_device_batch_size: int = 4
    """examples per step on each device: fewer needs less memory"""
    gradient_accumulation_steps: int = 2
    """steps summed into one update: effective batch = batch x this. With several processes, x processes
    too."""
    auto_batch_split: bool = True
    """Let the plan split the effective batch for this machine (more per device on a big GPU, fewer when
    memory is short; the effective batch stays). Setting per_device_batch_size or
    gradient_accumulation_steps yourself turns it off: the split is kept as you gave it (made smaller only
    when memory needs it, keeping the effective batch)."""
    lr_scheduler: str = "cosine"
    """how the learning rate falls over the run: cosine (smooth), linear, constant, constant_with_warmup"""
    warmup_ratio: float = 0.05
    """share of the steps over which the learning rate climbs to its value (0.03-0.1 is usual)"""
    weight_decay: float = 0.0
    """pull of the adapter weights toward zero each step; 0 is usual for LoRA, 0.01-0.1 regularises"""
    max_grad_norm: float = 1.0
    """gradients longer than this are scaled down (clipping): a bad batch cannot blow up the weights"""
    gradient_checkpointing: bool = False
    """~60% less activation memory for ~20% more time; on when memory is tight."""
    seed: int = 42
    """seed of the weights' initialisation and the batch order: the same seed repeats a run"""
    logging_steps: int = 1
    """a training-loss point every N steps (events.jsonl, the live plot)"""
    eval_steps: int = 0
    """Evaluate the held-out loss every N steps; 0: once per epoch."""
    save_steps: int = 0
    """Checkpoint every N steps; 0: once per epoch. A stop always saves one."""
    save_total_limit: int = 2
    """Checkpoints kept on disk (the newest ones)."""
    threads: int = 0
    """CPU threads for torch; 0: one per physical core."""
    dataloader_workers: int = -1
    """Processes that collate batches; -1: chosen by the plan (a few on a GPU, none on the CPU)."""
    group_by_length: bool = True
    """Batch examples of similar length together: less compute wasted on padding."""
    lm_head_trained_only: bool = True
    """Project only the trained (assistant) positions through the output layer, not every token."""
    processes: int = 1
    """Data-parallel training processes (DDP through `accelerate launch`): one per GPU; on CPU, gloo."""
    fsdp: bool = False
    """Shard weights, gradients and optimizer states over the processes (FSDP 2) instead of a full copy
    per GPU (DDP): for a model that does not fit one GPU. GPUs only; needs processes >= 2."""
    allow_over_memory: bool = False
    """Start a run whose planned peak memory is over what this machine has (refused otherwise, with what to
    change): it will likely fail out of memory, or swap until it crawls. For when you know the estimate
    is wrong for your setup."""
    report_to: str = "none"
    """none keeps everything on this machine; or tensorboard, wandb, mlflow, trackio. tensorboard writes
    event files in RUN_DIR/tensorboard; each other tracker as its own package and environment variables
    configure it. Nothing leaves the machine unless you choose a tracker that sends it."""

    @property
    def effective_batch(self) -> int:
        return self.per_device_batch_size * self.gradient_accumulation_steps * self.processes


@dataclass
class EvaluationConfig:
    enabled: bool = True
    """Compare base and fine-tuned models on the held-out rows when training ends."""
    max_examples: int = 200
    """held-out rows both models answer when training ends. Every one, up to this: at 60 answers an 80%
    result reads 68-88%, at 200 about 74-85%."""
    max_new_tokens: int = 0
    """Generation budget; 0: the longest expected answer plus a margin."""


@dataclass
class NotifyConfig:
    command: list[str] = field(default_factory=list)
    """A program run once when the run ends (completed, stopped, failed or crashed), as a list of
    arguments, e.g. ["notify-send", "tunewiz"]; a string is split like a shell would, but no shell runs
    it. The run's id, status and result come in TUNEWIZ_* environment variables (README: Notifications).
    Empty: nothing runs."""
    pass_env: list[str] = field(default_factory=list)
    """Names of environment variables the program also gets from the training process, e.g.
    ["SLACK_WEBHOOK_URL"]. Without them it gets only the TUNEWIZ_* variables and what a program needs to
    run and reach your desktop (PATH, HOME, USER, LANG, DISPLAY, DBUS_SESSION_BUS_ADDRESS, ...): never
    your tokens and keys (HF_TOKEN, AWS_*, ...) unless you name them here."""


@dataclass
class RunConfig:
    name: str = ""
    preset: str = "balanced"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)

    # -- validation -------------------------------------------------------
    def problems(self) -> list[str]:
        """Every problem with the config, as sentences naming the field."""
        p: list[str] = []
        m, d, t, e = self.model, self.data, self.training, self.evaluation
        if not m.id.strip():
            p.append("[model] id is empty: give `bundled:smollm2-135m-instruct`, a model directory or a hub id")
        if m.method not in METHODS:
            p.append(f"[model] method = {m.method!r}: use one of {', '.join(METHODS)}")
        if m.dtype not in DTYPES:
            p.append(f"[model] dtype = {m.dtype!r}: use one of {', '.join(DTYPES)}")
        if not d.path:
            p.append("[data] path is empty: give a JSONL/JSON file of examples")
        if not 0.0 < d.eval_fraction < 0.9 and not d.eval_path:
            p.append(f"[data] eval_fraction = {d.eval_fraction}: use a share between 0 and 0.9, e.g. 0.1")
        if bool(d.prompt_column.strip()) != bool(d.answer_column.strip()):
            p.append(
                "[data] prompt_column and answer_column go together: give both (--prompt-column TEXT_COLUMN "
                "--answer-column LABEL_COLUMN), or neither for chat data"
            )
        if d.as_text and d.prompt_column:
            p.append("[data] as_text = true trains plain text: it cannot be combined with a prompt and answer column")
        if d.max_seq_len < 16:
            p.append(f"[data] max_seq_len = {d.max_seq_len}: use at least 16 tokens (512 fits most chat examples)")
        for name in (
            "lora_r",
            "lora_alpha",
            "per_device_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
            "processes",
        ):
            if getattr(t, name) < 1:
                p.append(f"[training] {name} = {getattr(t, name)}: must be at least 1")
        if not 0 < t.learning_rate < 1:
            p.append(f"[training] learning_rate = {t.learning_rate}: typical LoRA values are 1e-4 to 5e-4")
        if t.num_epochs <= 0 and t.max_steps <= 0:
            p.append("[training] num_epochs must be > 0 (or set max_steps)")
        if t.max_steps == 0 or t.max_steps < -1:
            p.append(f"[training] max_steps = {t.max_steps}: use -1 (run num_epochs) or a positive step count")
        if not 0 <= t.lora_dropout < 1:
            p.append(f"[training] lora_dropout = {t.lora_dropout}: use a value in [0, 1)")
        if not 0 <= t.warmup_ratio < 1:
            p.append(f"[training] warmup_ratio = {t.warmup_ratio}: use a value in [0, 1), e.g. 0.05")
        if t.lr_scheduler not in SCHEDULERS:
            p.append(f"[training] lr_scheduler = {t.lr_scheduler!r}: use one of {', '.join(SCHEDULERS)}")
        if not t.target_modules:
            p.append('[training] target_modules is empty: use ["all-linear"]')
        for name in ("eval_steps", "save_steps", "threads"):
            if getattr(t, name) < 0:
                p.append(f"[training] {name} = {getattr(t, name)}: must be 0 or more")
        if t.dataloader_workers < -1:
            p.append(
                f"[training] dataloader_workers = {t.dataloader_workers}: use 0 or more, or -1 to let the plan choose"
            )
        if t.fsdp and t.processes < 2:
            p.append(
                "[training] fsdp = true shards the model over several processes: set processes to the number "
                "of GPUs (2 or more), or fsdp = false"
            )
        if t.fsdp and m.method == "qlora":
            p.append("[training] fsdp = true with method = qlora is not supported: use method = lora (FSDP shards it)")
        if t.processes > 64:
            p.append(f"[training] processes = {t.processes}: one process per GPU; at most 64 here")
        if t.save_total_limit < 1:
            p.append("[training] save_total_limit must be at least 1 (a stop or resume needs a checkpoint)")
        if t.report_to not in REPORT_TO:
            p.append(
                f"[training] report_to = {t.report_to!r}: use one of {', '.join(REPORT_TO)} "
                "(none keeps everything on this machine)"
            )
        if any(not a.strip() for a in self.notify.command):
            p.append(f"[notify] command has an empty argument: give the program and its arguments, e.g. {EXAMPLE_ARGV}")
        p += self._range_problems()
        if e.max_examples < 1:
            p.append("[evaluation] max_examples must be at least 1")
        if e.max_new_tokens < 0:
            p.append("[evaluation] max_new_tokens must be 0 (automatic) or more")
        return p

    def _range_problems(self) -> list[str]:
        """NaN, Inf and values past any sane bound: a NaN weight decay trains a NaN adapter, a rank of
        100,000 asks for hundreds of GiB, a billion epochs for millions of hours."""
        p = []
        for section, cls in _SECTIONS.items():
            obj = getattr(self, section)
            for f in dataclasses.fields(cls):
                value = getattr(obj, f.name)
                if isinstance(value, float) and not math.isfinite(value):
                    p.append(f"[{section}] {f.name} = {value}: must be a finite number")
        t = self.training
        for name, low, high in UPPER_BOUNDS:
            value = getattr(t, name)
            if isinstance(value, (int, float)) and math.isfinite(value) and not low <= value <= high:
                least = f"from {low:g} to" if math.isfinite(low) else "at most"
                p.append(f"[training] {name} = {value:g}: use a value {least} {high:g}")
        return p

    def validate_data(self, source: str = "") -> RunConfig:
        """validate() for a request that only reads data (lint, preview): the [data] mapping's problems."""
        problems = [p for p in self.problems() if p.startswith("[data]") and "path is empty" not in p]
        if problems:
            raise ConfigError(problems, source)
        return self

    def validate(self, source: str = "") -> RunConfig:
        problems = self.problems()
        if problems:
            raise ConfigError(problems, source)
        return self

    # -- dict / TOML -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Sections as they appear in run.toml."""
        return {
            "model": dataclasses.asdict(self.model),
            "data": _when_set(self.data, MAPPING_KEYS),
            "preset": {"name": self.preset},
            "training": _when_set(self.training, ("allow_over_memory",)),
            "evaluation": dataclasses.asdict(self.evaluation),
            # only when set: a record without [notify] reads back the same, and one section less to compare
            **({"notify": dataclasses.asdict(self.notify)} if self.notify.command else {}),
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any], source: str = "", strict: bool = True) -> RunConfig:
        """Build from run.toml-shaped sections. Unknown keys are errors when `strict`,
        except the keys a run record adds to these sections (see RECORD_ONLY_KEYS)."""
        problems: list[str] = []
        sections: dict[str, Any] = {}
        for section, klass in _SECTIONS.items():
            raw = doc.get(section, {})
            if not isinstance(raw, dict):
                problems.append(f"[{section}] must be a table")
                continue
            sections[section] = _build(klass, section, raw, problems, strict)
            if section == "training" and "auto_batch_split" not in raw and SPLIT_KEYS & set(raw):
                sections[section].auto_batch_split = False  # a split written by hand is kept as written
        preset = doc.get("preset", {})
        preset_name = preset.get("name", "balanced") if isinstance(preset, dict) else preset
        if not isinstance(preset_name, str):
            problems.append(f"[preset] name = {preset_name!r}: give conservative, balanced or aggressive")
        run = doc.get("run", {}) if isinstance(doc.get("run", {}), dict) else {}
        if not isinstance(run.get("name", ""), str):
            problems.append(f'[run] name = {run["name"]!r}: a run\'s name is text, e.g. "support-tickets"')
        if problems:
            raise ConfigError(problems, source)
        from tunewiz.core.models.catalog import canonical_id

        sections["model"].id = canonical_id(sections["model"].id)  # `id = "qwen2.5-0.5b"` written by hand
        return cls(name=str(run.get("name", "")), preset=str(preset_name), **sections)

    @classmethod
    def from_toml(cls, path: str | Path) -> RunConfig:
        path = Path(path)
        doc = _read_toml(path)
        cfg = cls.from_dict(doc, source=str(path))
        # Relative data paths in a config file are relative to that file.
        for attr in ("path", "eval_path"):
            value = getattr(cfg.data, attr)
            if value:
                expanded = Path(value).expanduser()
                if not expanded.is_absolute():
                    expanded = (path.parent / expanded).resolve()
                setattr(cfg.data, attr, str(expanded))
        return cfg


def _read_toml(path: Path) -> dict:
    """The TOML document at `path`, or a ConfigError naming the file and what to do: a missing file, a
    directory, an unreadable file, text that is not UTF-8 (UTF-16, a binary file) and bad TOML are each one
    problem, never a traceback. A UTF-8 byte-order mark (Notepad writes one) is accepted."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"no such file: {path}"], str(path)) from None
    except IsADirectoryError:
        raise ConfigError(
            ["a directory, not a file: --config takes a TOML file (a run's run.toml)"], str(path)
        ) from None
    except OSError as exc:
        raise ConfigError([f"cannot read it: {exc.strerror or exc}"], str(path)) from None
    problem = not_text(raw)
    if problem:
        raise ConfigError([problem], str(path))
    try:
        return tomllib.loads(raw.decode("utf-8-sig"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], str(path)) from None


def not_text(raw: bytes) -> str | None:
    """What is wrong with a config file's bytes that are not UTF-8 text, and what to do; None when they are.

    >>> not_text("[training]\\nlearning_rate = 1e-4\\n".encode("utf-8-sig")) is None
    True
    >>> not_text("[training]\\n".encode("utf-16"))
    'saved as UTF-16, not UTF-8: save it again as UTF-8 (iconv -f UTF-16 -t UTF-8 FILE > run.toml)'
    >>> not_text(b"\\x89PNG\\r\\n")
    "not a text file (byte 0 is not UTF-8): --config takes a TOML file saved as UTF-8 (a run's run.toml)"
    """
    head = raw[:200]
    # UTF-16 without a byte-order mark decodes as UTF-8 (every other byte NUL): TOML would only say
    # "illegal character", so say what the file is.
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or head.count(0) * 3 >= len(head) > 0:
        return "saved as UTF-16, not UTF-8: save it again as UTF-8 (iconv -f UTF-16 -t UTF-8 FILE > run.toml)"
    try:
        raw.decode("utf-8-sig")
        bad = raw.index(0) if 0 in raw else None
        what = "is NUL"
    except UnicodeDecodeError as exc:
        bad, what = exc.start, "is not UTF-8"
    if bad is None:
        return None
    return f"not a text file (byte {bad} {what}): --config takes a TOML file saved as UTF-8 (a run's run.toml)"


UPPER_BOUNDS = (
    ("weight_decay", 0.0, 1.0),
    ("max_grad_norm", 0.0, 1e4),
    ("num_epochs", -math.inf, 1000.0),
    ("lora_r", -math.inf, 4096),
    ("lora_alpha", -math.inf, 65536),
    ("per_device_batch_size", -math.inf, 65536),
    ("gradient_accumulation_steps", -math.inf, 65536),
    ("threads", -math.inf, 4096),
    ("dataloader_workers", -math.inf, 256),
    ("max_steps", -math.inf, 10**8),
    ("eval_steps", -math.inf, 10**8),
    ("save_steps", -math.inf, 10**8),
    ("save_total_limit", -math.inf, 10**4),
)
"""(setting, lowest, highest) for the [training] numbers: wider than any real run, narrow enough that a
typo (an extra zero or three) is caught at submit instead of as an allocator error. A lowest of -inf:
problems() already says what the least is."""


@functools.cache
def setting_help() -> dict[str, str]:
    """'section.name' -> the setting's help: the docstring under its field in this file (one place, read
    back with ast: the CLI's `tunewiz settings`, the wizard's field hints and the docs say the same).

    >>> setting_help()["training.learning_rate"].split(":")[0]
    'step size of each update'
    """
    import ast
    import inspect
    import sys

    tree = ast.parse(inspect.getsource(sys.modules[__name__]))
    names = {klass.__name__: section for section, klass in _SECTIONS.items()}
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in names:
            body = node.body
            for field_node, doc in zip(body, body[1:], strict=False):
                if (
                    isinstance(field_node, ast.AnnAssign)
                    and isinstance(field_node.target, ast.Name)
                    and isinstance(doc, ast.Expr)
                    and isinstance(doc.value, ast.Constant)
                    and isinstance(doc.value.value, str)
                ):
                    out[f"{names[node.name]}.{field_node.target.id}"] = " ".join(doc.value.value.split())
    return out


def hint(key: str) -> str:
    """A setting's help in one line (its first sentence), for a field's hint: 'training.lora_r' or a bare
    [training] name ('lora_r').

    >>> hint("lora_r")
    "the adapters' capacity: 8-16 suits most tasks, 64 only hard targets"
    >>> hint("data.max_seq_len")
    'tokens per example; longer examples are cut at the end'
    """
    text = setting_help().get(key if "." in key else f"training.{key}", "")
    return text.split(". ")[0].rstrip(".")


def valid_values(section: str, name: str) -> str:
    """What a setting takes, in a few words ('cosine, linear, ...', 'at most 4096', 'true or false').

    >>> valid_values("training", "lr_scheduler"), valid_values("training", "lora_r"), valid_values("model", "id")
    ('cosine, linear, constant, constant_with_warmup', '1 to 4096', 'text')
    """
    choices = {
        ("model", "method"): METHODS,
        ("model", "dtype"): DTYPES,
        ("training", "lr_scheduler"): SCHEDULERS,
        ("training", "report_to"): REPORT_TO,
    }.get((section, name))
    if choices:
        return ", ".join(choices)
    ranges = {
        "learning_rate": "between 0 and 1",
        "lora_dropout": "0 to below 1",
        "warmup_ratio": "0 to below 1",
        "eval_fraction": "between 0 and 0.9",
        "max_seq_len": "16 or more",
        "max_examples": "1 or more",
        "max_new_tokens": "0 (automatic) or more",
    }
    if name in ranges:
        return ranges[name]
    default = getattr(_SECTIONS[section](), name)
    bound = next(((lo, hi) for n, lo, hi in UPPER_BOUNDS if n == name and section == "training"), None)
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, list):
        return "a list of text"
    if bound is not None:
        low = {"lora_r": 1, "lora_alpha": 1, "per_device_batch_size": 1, "gradient_accumulation_steps": 1}.get(
            name, bound[0]
        )
        return f"{low:g} to {bound[1]:g}" if math.isfinite(low) else f"at most {bound[1]:g}"
    if isinstance(default, float):
        return "a finite number"
    if isinstance(default, int):
        return "a whole number"
    return "text"


def _when_set(section: Any, optional: tuple[str, ...]) -> dict[str, Any]:
    """A section as a record writes it: the `optional` settings only when set, so a record of a run that
    does not use them reads as records always have."""
    return {k: v for k, v in dataclasses.asdict(section).items() if v or k not in optional}


MAPPING_KEYS = ("prompt_column", "answer_column", "instruction", "system_prompt", "as_text")
"""[data] settings of a table's column mapping (core.data.columns); written into a record only when set."""

SPLIT_KEYS = {"per_device_batch_size", "gradient_accumulation_steps"}
"""Setting either of these yourself fixes the batch split (auto_batch_split = false)."""

# Keys that a run record writes into config sections (facts about the run, not
# settings); a config read from a record ignores them.
RECORD_ONLY_KEYS: dict[str, set[str]] = {
    "model": {"source", "resolved_path", "revision", "effective_dtype", "parameters", "trainable_parameters"},
    "data": {
        "sha256",
        "eval_sha256",
        "format",
        "formats",
        "train_rows",
        "eval_rows",
        "dropped_rows",
        "truncated_rows",
        "trained_tokens",
        "total_tokens",
        "lint",
    },
    "training": {"effective_batch", "total_steps", "reasons"},
    "evaluation": set(),
    "notify": set(),
}

_SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "training": TrainingConfig,
    "evaluation": EvaluationConfig,
    "notify": NotifyConfig,
}

ARGV_KEYS = {("notify", "command")}
"""Lists of program arguments: a string given for one is split like a shell splits words (shlex), not at commas."""
EXAMPLE_ARGV = '["notify-send", "tunewiz"]'


def tracking_problem(report_to: str) -> str | None:
    """What stops `report_to` here (its package is not installed), as a sentence that says what to do; None
    when nothing does. Checked at submit, so a run does not fail at its first step for it.

    >>> tracking_problem("none") is None
    True
    """
    import importlib.util

    if report_to not in REPORT_TO or report_to == "none":
        return None
    if importlib.util.find_spec(report_to) is None:
        return (
            f"[training] report_to = {report_to!r}, but the {report_to} package is not installed here: "
            f'pip install {report_to} (or set report_to = "none")'
        )
    return None


def notify_problem(command: list[str]) -> str | None:
    """What stops `[notify] command` here (its program is not found), as a sentence that says what to do.

    >>> notify_problem([]) is None
    True
    >>> notify_problem(["no-such-program-xyz"])
    "[notify] command: no program 'no-such-program-xyz' on PATH: give its full path, or install it"
    """
    import os
    import shutil

    if not command:
        return None
    program = command[0]
    if os.sep in program:
        found = os.path.isfile(program) and os.access(program, os.X_OK)
    else:
        found = shutil.which(program) is not None
    if not found:
        where = "is not an executable file" if os.sep in program else "on PATH"
        what = f"{program!r} {where}" if os.sep in program else f"no program {program!r} {where}"
        return f"[notify] command: {what}: give its full path, or install it"
    return None


def _build(klass: type, section: str, raw: dict[str, Any], problems: list[str], strict: bool) -> Any:
    fields = {f.name: f for f in dataclasses.fields(klass)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            if strict and key not in RECORD_ONLY_KEYS.get(section, set()):
                problems.append(f"[{section}] unknown key {key!r}; {_suggest(str(key), list(fields))}")
            continue
        default = fields[key].default
        if default is dataclasses.MISSING:
            default = fields[key].default_factory()  # type: ignore[misc]
        try:
            if (section, key) in ARGV_KEYS and isinstance(value, str):
                value = split_argv(value)
            kwargs[key] = coerce(value, default)
        except (TypeError, ValueError):
            like = EXAMPLE_ARGV if (section, key) in ARGV_KEYS else repr(default)
            problems.append(f"[{section}] {key} = {value!r}: expected {type(default).__name__} like {like}")
    return klass(**kwargs)


# What other tools (transformers' TrainingArguments, TRL's SFTConfig, PEFT's LoraConfig, Axolotl) call
# a setting, for the "did you mean" of a name tunewiz spells otherwise.
ALIASES = {
    "lr": "learning_rate",
    "epochs": "num_epochs",
    "num_train_epochs": "num_epochs",
    "batch_size": "per_device_batch_size",
    "micro_batch_size": "per_device_batch_size",
    "per_device_train_batch_size": "per_device_batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "r": "lora_r",
    "rank": "lora_r",
    "alpha": "lora_alpha",
    "max_length": "max_seq_len",
    "max_seq_length": "max_seq_len",
    "sequence_len": "max_seq_len",
    "seq_len": "max_seq_len",
    "lr_scheduler_type": "lr_scheduler",
    "warmup": "warmup_ratio",
}


def _close(name: str, known: list[str]) -> list[str]:
    """The known name another tool's name stands for (ALIASES), else the closest to a misspelt one, if
    any is close (difflib's ratio >= 0.75).

    >>> _close("training.lora_rr", ["training.lora_r", "training.lora_alpha", "data.path"])
    ['training.lora_r']
    >>> _close("training.lr", ["training.lora_r", "training.learning_rate"]), _close("lr", ["lora_r", "learning_rate"])
    (['training.learning_rate'], ['learning_rate'])
    """
    alias = ALIASES.get(name.rsplit(".", 1)[-1])
    named = [k for k in known if alias and k.rsplit(".", 1)[-1] == alias]
    return named[:1] or difflib.get_close_matches(name, known, n=1, cutoff=0.75)


def _suggest(name: str, known: list[str]) -> str:
    """'did you mean X?' when a known name is close, else every known name.

    >>> _suggest("max_seq_length", ["path", "max_seq_len"])
    'did you mean max_seq_len?'
    >>> _suggest("zzz", ["path", "max_seq_len"])
    'known keys: path, max_seq_len'
    """
    close = _close(name, known)
    return f"did you mean {close[0]}?" if close else f"known keys: {', '.join(known)}"


def split_argv(text: str) -> list[str]:
    """A command line as its words, the way a shell splits them (no shell runs it).

    >>> split_argv("notify-send 'run ended'")
    ['notify-send', 'run ended']
    """
    try:
        return shlex.split(text)
    except ValueError:  # an unclosed quote: one problem sentence, not a traceback
        raise ValueError(text) from None


def coerce(value: Any, like: Any) -> Any:
    """Convert `value` (from TOML or a `key=value` string) to the type of `like`."""
    if isinstance(like, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ValueError(value)
    if isinstance(like, int):
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return int(value)
    if isinstance(like, float):
        if isinstance(value, bool):
            raise ValueError(value)
        return float(value)
    if isinstance(like, list):
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ValueError(value)
    if isinstance(value, (dict, list)):
        raise ValueError(value)
    return str(value)


def apply_overrides(cfg: RunConfig, overrides: list[str]) -> RunConfig:
    """Apply `section.key=value` (or bare `key=value`, looked up in every section).

    >>> c = apply_overrides(RunConfig(), ["learning_rate=1e-4", "data.max_seq_len=256"])
    >>> c.training.learning_rate, c.data.max_seq_len
    (0.0001, 256)
    """
    problems: list[str] = []
    for item in overrides:
        if "=" not in item:
            problems.append(f"override {item!r}: write it as key=value, e.g. learning_rate=1e-4")
            continue
        key, value = (s.strip() for s in item.split("=", 1))
        if "." in key:
            section, name = key.split(".", 1)
            targets = [section] if section in _SECTIONS else []
        else:
            section, name = "", key
            targets = [s for s, k in _SECTIONS.items() if name in {f.name for f in dataclasses.fields(k)}]
        obj = None
        if len(targets) == 1 and name in {f.name for f in dataclasses.fields(_SECTIONS[targets[0]])}:
            obj = getattr(cfg, targets[0])
        if name == "effective_batch":
            problems.append(
                "effective_batch is derived: set per_device_batch_size, gradient_accumulation_steps and "
                "processes (effective batch = their product)"
            )
            continue
        if obj is None:
            known = [f"{s}.{f.name}" for s, k in _SECTIONS.items() for f in dataclasses.fields(k)]
            # A bare name is compared with the bare names too: `lora_rr` -> training.lora_r.
            bare = {f.name: f"{s}.{f.name}" for s, k in _SECTIONS.items() for f in dataclasses.fields(k)}
            close = _close(key, known) or [bare[n] for n in _close(key, list(bare))]
            hint = f"did you mean {close[0]}?" if close else f"known settings: {', '.join(known)}"
            problems.append(f"unknown setting {key!r}; {hint}")
            continue
        try:
            if (targets[0], name) in ARGV_KEYS:
                value = split_argv(value)  # type: ignore[assignment]
            setattr(obj, name, coerce(value, getattr(obj, name)))
            if name in SPLIT_KEYS and obj is cfg.training:
                cfg.training.auto_batch_split = False  # the split you give is the split that runs
        except (TypeError, ValueError):
            problems.append(f"override {item!r}: expected {type(getattr(obj, name)).__name__}")
    if problems:
        raise ConfigError(problems, "command-line overrides")
    return cfg
