"""GGUF export (llama.cpp, Ollama) of a run's merged model, with an Ollama Modelfile, checked by llama.cpp itself.

Everything here is llama.cpp's own code, through ``llama-cpp-python`` (``pip install 'tunewiz[gguf]'``;
pip builds it from source, and caches the build):

* **Converter**: llama.cpp's ``convert_hf_to_gguf.py`` with its ``conversion/`` package and gguf-py,
  from the llama.cpp source that the installed llama-cpp-python vendors (its source distribution),
  run in a subprocess. The script puts its own gguf-py first on its ``sys.path``, so it runs with the
  gguf-py of the same llama.cpp commit as the library, and the ``gguf`` distribution installed here
  (which transformers reads GGUF files with) is never replaced. Where the source comes from, in order
  (:func:`converter_source`): ``$TUNEWIZ_LLAMA_CPP`` (a llama.cpp checkout); the cache
  ``${XDG_CACHE_HOME:-~/.cache}/tunewiz/llama.cpp-<llama-cpp-python version>/``; else fetched once into
  that cache with ``pip download --no-binary :all: --no-deps llama-cpp-python==<version>`` (pip's own
  cache serves it when pip built the installed copy; otherwise it needs the network once), of which
  only the converter, ``conversion/`` and ``gguf-py/gguf`` are kept (about 2 MB).
* **Types**: f16, bf16 and f32 are written by the converter; q8_0, the K-quants q6_k, q5_k_m and q4_k_m,
  and q4_0 by llama.cpp's quantizer (``llama_model_quantize``, the library ``llama-quantize`` runs), in a
  subprocess, from a lossless conversion of the merged model (f32, bf16 or f16: its own dtype).
* **Check**: the GGUF is loaded by llama.cpp (``llama_cpp.Llama``); each held-out prompt is rendered with
  the chat template stored in the GGUF (llama-cpp-python's Jinja2 chat formatter, the one its chat
  completion uses for a GGUF template) and tokenised by llama.cpp from the GGUF's vocabulary, so the
  template, the tokenizer and the weights a server loads are all in the test; answers are greedy and end
  at llama.cpp's end-of-generation tokens (what llama-server and Ollama stop at), within the budget the
  adapter model had. They are compared token for token with the adapter model's greedy answers
  (:func:`tunewiz.core.shipping.merged_export.agreement`); an export that does not stop where the adapter model
  does, or agrees on fewer than :data:`POOR_TOKEN_AGREEMENT` of the tokens, gets a ``warning`` in its
  ``[artifacts]`` entry, which the evaluation screen and ``tunewiz show`` print.

The Modelfile's TEMPLATE is recovered from the chat template and checked against it (:mod:`core.ollama`):
by Go's own text/template, as Ollama runs it, where Go is installed; by tunewiz's renderer of the Go
template subset it uses otherwise. ``modelfile_checked_by`` in the record says which.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from tunewiz.core.bookkeeping import runs
from tunewiz.core.models import loading as modeling
from tunewiz.core.shipping import merged_export, ollama

CONVERTED = ("f16", "bf16", "f32")
"""Types llama.cpp's converter writes itself."""
QUANTIZED = {
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
}
"""Types llama.cpp's quantizer makes from a lossless conversion (the llama_ftype it is given)."""
GGUF_TYPES = (*CONVERTED, *QUANTIZED)
LOSSLESS = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
POOR_TOKEN_AGREEMENT = 0.5
"""Below this share of the adapter model's answer tokens reproduced, an export is flagged."""
INSTALL_HINT = (
    "GGUF export needs llama.cpp through llama-cpp-python: pip install 'tunewiz[gguf]' "
    "(pip builds llama.cpp from source: a few minutes the first time, cached after)"
)
GGUF_NAME = "model.gguf"
_KEEP = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/gguf/", "LICENSE")


def llama_cpp_version() -> str | None:
    import importlib.metadata as md

    try:
        return md.version("llama_cpp_python")
    except md.PackageNotFoundError:
        return None


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None and llama_cpp_version() is not None


def converter_source() -> Path:
    """The llama.cpp source directory whose convert_hf_to_gguf.py runs (see the module docstring)."""
    env = os.environ.get("TUNEWIZ_LLAMA_CPP")
    if env:
        src = Path(env).expanduser()
        if not (src / "convert_hf_to_gguf.py").is_file() or not (src / "gguf-py" / "gguf").is_dir():
            raise merged_export.ExportError(
                f"TUNEWIZ_LLAMA_CPP={env} is not a llama.cpp source tree (no convert_hf_to_gguf.py and gguf-py/)"
            )
        return src
    version = llama_cpp_version()
    if version is None:
        raise merged_export.ExportError(INSTALL_HINT)
    src = runs.cache_dir() / f"llama.cpp-{version}"
    if (src / "convert_hf_to_gguf.py").is_file():
        return src
    return _fetch(version, src)


def _fetch(version: str, src: Path) -> Path:
    """Extract llama.cpp's converter from the llama-cpp-python `version` source distribution into `src`."""
    src.parent.mkdir(parents=True, exist_ok=True)
    download = src.parent / "downloads"
    name = f"llama_cpp_python-{version}.tar.gz"
    cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "--quiet"]
    cmd += ["-d", str(download), f"llama-cpp-python=={version}"]
    if not (download / name).is_file():  # put there by hand, it is used as it is
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
        if proc.returncode != 0 or not (download / name).is_file():
            said = (proc.stderr or proc.stdout).strip().splitlines()
            raise merged_export.ExportError(
                f"llama.cpp's converter comes from the llama-cpp-python {version} source, which could not be "
                f"fetched ({said[-1] if said else f'pip exit {proc.returncode}'}). With a network, run once: "
                f"{' '.join(cmd[2:])} (or copy {name} into {download}) and try again; "
                "or set TUNEWIZ_LLAMA_CPP to a llama.cpp checkout"
            )
    sdists = [download / name]
    partial = src.with_name(src.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(sdists[0], "r|gz") as tar:  # one pass: a gzip stream is slow to seek back in
        for member in tar:
            top, _, rest = member.name.partition("/")
            if rest == ".git/modules/vendor/llama.cpp/HEAD":
                partial.mkdir(parents=True, exist_ok=True)
                (partial / "LLAMA_CPP_COMMIT").write_bytes(tar.extractfile(member).read())
                continue
            inner = rest.removeprefix("vendor/llama.cpp/")
            if inner == rest or not member.isfile() or not inner.startswith(_KEEP):
                continue
            target = partial / inner
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    (download / name).unlink()
    if not (partial / "convert_hf_to_gguf.py").is_file():
        raise merged_export.ExportError(f"the llama-cpp-python {version} source has no convert_hf_to_gguf.py")
    merged_export.replace_dir(partial, src)
    return src


def converter_version(src: Path) -> str:
    """Which llama.cpp the converter is, for the record."""
    commit = src / "LLAMA_CPP_COMMIT"
    if commit.is_file():
        return f"llama.cpp {commit.read_text().strip()[:9]} (llama-cpp-python {llama_cpp_version()} source)"
    return f"llama.cpp source at {src}"


def convert(model_dir: Path, out_file: Path, outtype: str, log_file: Path) -> Path:
    """Run llama.cpp's converter on a Hugging Face model directory; its output goes to `log_file`.
    Returns the llama.cpp source it ran from."""
    src = converter_source()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    env.pop("NO_LOCAL_GGUF", None)  # the converter's own gguf-py, never the installed one
    cmd = [sys.executable, str(src / "convert_hf_to_gguf.py"), str(model_dir), "--outfile", str(out_file)]
    cmd += ["--outtype", outtype]
    with open(log_file, "wb") as log:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0 or not out_file.is_file():
        tail = "\n".join(runs.tail_lines(log_file, 15))
        raise merged_export.ExportError(
            f"llama.cpp's converter failed (exit {proc.returncode}); see {log_file}:\n{tail}"
        )
    return src


def quantize(src: Path, dst: Path, quant: str, log_file: Path) -> None:
    """llama.cpp's quantizer (llama_model_quantize) from `src` to `dst`, in a subprocess (llama.cpp aborts
    the process on some errors), logging to `log_file`."""
    cmd = [sys.executable, "-m", "tunewiz.core.shipping.gguf_export", str(src), str(dst), quant]
    with open(log_file, "wb") as log:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not dst.is_file():
        tail = "\n".join(runs.tail_lines(log_file, 15))
        raise merged_export.ExportError(
            f"llama.cpp's quantizer failed (exit {proc.returncode}); see {log_file}:\n{tail}"
        )


def _quantize_main(src: str, dst: str, quant: str) -> int:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTIZED[quant])
    return int(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), params))


def export_gguf(run_dir: Path, quant: str = "q8_0", verify: bool = True) -> dict[str, Any]:
    """RUN/export/gguf-<quant>/{model.gguf, Modelfile}, checked by llama.cpp; recorded as [artifacts.gguf_<quant>]."""
    quant = quant.lower()
    if quant not in GGUF_TYPES:
        raise merged_export.ExportError(f"unknown GGUF type {quant!r}: use one of {', '.join(GGUF_TYPES)}")
    if not available():
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
    entry: dict[str, Any] = {"format": "gguf", "type": quant}
    if quant in QUANTIZED:
        source_type = LOSSLESS.get(dtype_name, "f16")
        whole = tmp / f"model-{source_type}.gguf"
        src = convert(merged, whole, source_type, tmp / "convert.log")
        quantize(whole, tmp / GGUF_NAME, quant, tmp / "quantize.log")
        whole.unlink()
        entry["quantized_from"] = source_type
        fallback = re.search(r"(\d+) of (\d+) tensor\(s\) required fallback", (tmp / "quantize.log").read_text())
        if fallback:  # rows not a multiple of the type's block (256 for K-quants): llama.cpp picks another type
            entry["quantize_note"] = (
                f"llama.cpp quantised {fallback[1]} of {fallback[2]} tensors to another type "
                f"(rows not a multiple of {quant}'s block; see quantize.log)"
            )
    else:
        src = convert(merged, tmp / GGUF_NAME, quant, tmp / "convert.log")
    entry["converter"] = converter_version(src)
    entry["llama_cpp_python"] = llama_cpp_version()

    tok = modeling.load_tokenizer(rm.base_path, rm.cfg.model.trust_remote_code)
    gen = json.loads((merged / "generation_config.json").read_text(encoding="utf-8"))
    eos = gen.get("eos_token_id", tok.eos_token_id)
    stops = ollama.stop_tokens(tok, eos if isinstance(eos, list) else [eos])
    try:
        template, system, note = ollama.modelfile_parts(tok)
        text = ollama.modelfile(GGUF_NAME, template, stops, note, system)
        (tmp / "Modelfile").write_text(text, encoding="utf-8")
        entry["modelfile"] = str(out_dir / "Modelfile")
        entry["modelfile_template_matches"] = True
        entry["modelfile_checked_by"] = ollama.template_checker()
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
        entry.update(verify_llama_cpp(rm, out_dir / GGUF_NAME))
    entry["seconds"] = round(time.time() - t0, 1)
    runs.update_record(run_dir, lambda rec: rec.artifacts.update({f"gguf_{quant}": entry}))
    return entry


def verify_llama_cpp(rm: merged_export.RunModel, gguf_file: Path) -> dict[str, Any]:
    """The held-out comparison (see the module docstring), with llama.cpp answering from `gguf_file`."""
    tok = modeling.load_tokenizer(rm.base_path, rm.cfg.model.trust_remote_code)
    held = merged_export.held_out(rm, tok)
    # De-quantised export vs the adapter model in float32: the comparison measures the export, not a dtype.
    reference, ref_stop = merged_export.reference_answers(rm, tok, "float32", held)
    run_prompts = [
        tok(tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True), add_special_tokens=False)[
            "input_ids"
        ]
        for p in held.prompts
    ]
    got = llama_cpp_answers(gguf_file, held.prompts, held.max_new_tokens, max(map(len, run_prompts)))
    answers, eog = got["answers"], got["eog"]
    stats = merged_export.agreement(reference, answers, ref_stop)
    stats["stop_rate"] = merged_export.agreement(answers, answers, eog)["stop_rate"]
    stats["stops_at_end_of_turn"] = merged_export.stops_verdict(reference, answers, ref_stop, eog)
    stats["end_tokens"] = got["eog_text"]
    stats["max_new_tokens"] = held.max_new_tokens
    stats["checked_by"] = "llama.cpp"
    stats["chat_template"] = "gguf" if got["template"] else "missing"
    stats["prompts_identical"] = round(
        sum(a == b for a, b in zip(got["prompts"], run_prompts, strict=True)) / len(run_prompts), 4
    )
    problems = []
    if not got["template"]:
        problems.append("the GGUF carries no chat template")
    elif stats["prompts_identical"] < 1:
        problems.append(
            f"llama.cpp builds {1 - stats['prompts_identical']:.0%} of the held-out prompts differently "
            "(the GGUF's chat template or tokenizer)"
        )
    if not stats["stops_at_end_of_turn"]:
        problems.append(
            f"does not stop at the end of turn ({stats['stop_rate']:.0%} of answers end there, "
            f"the adapter model's {stats['reference_stop_rate']:.0%})"
        )
    if stats["token_agreement"] < POOR_TOKEN_AGREEMENT:
        problems.append(f"answers differ from the adapter model's ({stats['token_agreement']:.0%} of tokens agree)")
    if problems:
        stats["warning"] = ", and ".join(problems)
    return stats


def llama_cpp_answers(gguf_file: Path, prompts: list[list[dict]], max_new_tokens: int, longest: int) -> dict:
    """Greedy answers by llama.cpp to chat `prompts`, rendered with the GGUF's chat template.

    Returns {answers (token ids, each cut after its first end-of-generation token), prompts (the prompt
    token ids llama.cpp built), eog (the GGUF's end-of-generation token ids), eog_text, template (bool)}.
    """
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    n_ctx = ((longest + max_new_tokens + 64) // 256 + 1) * 256
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    llm = llama_cpp.Llama(
        str(gguf_file), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, seed=0, verbose=False
    )
    try:
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        eog = [t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)]
        ends = set(eog)
        eog_text = [llm.detokenize([t], special=True).decode("utf-8", "replace") for t in eog]
        template = llm.metadata.get("tokenizer.chat_template", "")

        def text_of(token: int) -> str:
            return llm.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""

        formatter = None
        if template:
            formatter = Jinja2ChatFormatter(template, text_of(llm.token_eos()), text_of(llm.token_bos()))
        answers, built = [], []
        for conv in prompts:
            if formatter is not None:
                ids = llm.tokenize(formatter(messages=conv).prompt.encode("utf-8"), add_bos=False, special=True)
            else:  # no template: the comparison still measures the weights, and the entry says what is missing
                text = "".join(f"{m['role']}: {m['content']}\n" for m in conv) + "assistant: "
                ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
            built.append(list(ids))
            llm.reset()
            out: list[int] = []
            for t in llm.generate(ids, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
                out.append(int(t))
                if t in ends or len(out) >= max_new_tokens or llm.n_tokens >= n_ctx - 1:
                    break
            answers.append(out)
    finally:
        llm.close()
    return {"answers": answers, "prompts": built, "eog": eog, "eog_text": eog_text, "template": bool(template)}


if (
    __name__ == "__main__"
):  # llama.cpp's quantizer, in its own process: python -m tunewiz.core.shipping.gguf_export SRC DST TYPE
    sys.exit(_quantize_main(*sys.argv[1:4]))
