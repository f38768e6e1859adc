"""Export a finished run as the model people will serve, and prove it behaves like the evaluated one.

Formats (``tunewiz export RUN --format ...``):

* ``merged``: the run's LoRA adapter merged into its base (``merge_and_unload``), saved as
  safetensors in the base's dtype with the tokenizer, chat template and a generation config whose
  end-of-sequence is the template's end-of-turn token, in ``RUN/export/merged/``; it loads with
  ``AutoModelForCausalLM.from_pretrained``.
* ``gguf`` (see :mod:`tunewiz.core.shipping.gguf_export`): the merged model converted by llama.cpp's own converter
  (and quantised by its quantizer: q8_0, q6_k, q5_k_m, q4_k_m, q4_0), with an Ollama Modelfile; checked
  by llama.cpp itself, with the chat template and end-of-generation tokens stored in the GGUF.

Every export is verified the same way: the held-out prompts the run was evaluated on (the same
split and limit as :mod:`tunewiz.core.judging.evaluate`) are answered greedily by the exported model and by the
adapter model (base + adapter, unmerged), and the record gets, under ``[artifacts.<format>]``:
the share of prompts whose answers agree token for token (``agreement``), the share of answers
that end with the end-of-turn token before the budget (``stop_rate``, with the adapter model's
as ``reference_stop_rate``), and ``stops_at_end_of_turn``: the exported model's configured
end-of-sequence includes the template's end-of-turn token, and it stops wherever the adapter
model did. A merged model in float32 must agree exactly; a quantised GGUF agrees at a rate. An
export that does not stop there, or disagrees badly, gets a ``warning`` (printed under its line).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunewiz.core.shipping.merged_export import ExportError

FORMATS = ("merged", "gguf")


def summary_lines(artifacts: dict[str, Any]) -> list[str]:
    """One line per export recorded in [artifacts] (and one more for its warning), for `tunewiz show`,
    the history and the evaluation screens.

    >>> summary_lines({"adapter": "/r/adapter", "merged": {"format": "merged", "path": "/r/export/merged",
    ...     "examples": 10, "agreement": 1.0, "token_agreement": 1.0, "stops_at_end_of_turn": True}})
    ['  export  merged: 100% identical on 10 held-out prompts, stops at end of turn  /r/export/merged']
    >>> summary_lines({"gguf_q4_0": {"format": "gguf", "type": "q4_0", "path": "/r/m.gguf", "examples": 4,
    ...     "agreement": 0.0, "token_agreement": 0.3, "stops_at_end_of_turn": False, "checked_by": "llama.cpp",
    ...     "warning": "does not stop at the end of turn"}})[1]
    '  WARNING does not stop at the end of turn'
    """
    out = []
    for e in artifacts.values():
        if not isinstance(e, dict) or "format" not in e:
            continue
        label = f"{e['format']} {e['type']}" if e.get("type") else e["format"]
        if "agreement" in e:
            check = f"{e['agreement']:.0%} identical on {e['examples']} held-out prompts"
            if e.get("token_agreement", 1.0) < 1.0:
                check += f" ({e['token_agreement']:.0%} of tokens)"
            check += ", stops at end of turn" if e.get("stops_at_end_of_turn") else ", DOES NOT STOP at end of turn"
            if e.get("checked_by"):
                check += f" ({e['checked_by']})"
        else:
            check = "not verified"
        out.append(f"  export  {label}: {check}  {e.get('path', '')}")
        if e.get("warning"):
            out.append(f"  WARNING {e['warning']}")
    return out


def export(run_dir: Path, fmt: str, quant: str = "q8_0", verify: bool = True) -> dict[str, Any]:
    """Export a run in `fmt` (one of FORMATS); returns what was recorded under [artifacts.<name>]."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the de-quantising and loading bars say nothing a user needs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # library deprecation notices
        if fmt == "merged":
            from tunewiz.core.shipping.merged_export import export_merged

            return export_merged(run_dir, verify=verify)
        from tunewiz.core.shipping import gguf_export

        return gguf_export.export_gguf(run_dir, quant=quant, verify=verify)
