"""A finished run's model, judged and shipped: `tunewiz eval` (base vs fine-tuned on the held-out rows)
and `tunewiz export` (merged or GGUF with an Ollama Modelfile, checked against the adapter model).
"""

from __future__ import annotations

from pathlib import Path

from tunewiz.core.bookkeeping import runs
from tunewiz.tui.record_text import comparison_table


def cmd_eval(ns) -> int:
    from tunewiz.core.judging.evaluate import evaluate_run

    run_dir = runs.find_run(runs.home(ns.home), ns.run)
    print(f"evaluating {run_dir.name}: base vs fine-tuned on the held-out rows ...", flush=True)
    summary = evaluate_run(run_dir)
    print(comparison_table(summary))
    return 0


def cmd_export(ns) -> int:
    from tunewiz.core.shipping.export import export

    run_dir = runs.find_run(runs.home(ns.home), ns.run)
    what = f"gguf ({ns.type})" if ns.format == "gguf" else ns.format
    print(f"exporting {run_dir.name} as {what}, then checking it against the adapter model ...", flush=True)
    entry = export(run_dir, ns.format, quant=ns.type, verify=not ns.no_verify)  # ExportError: a TunewizError
    print(f"  written: {entry['path']}")
    if entry.get("modelfile"):
        print(f"  Ollama:  cd {Path(entry['modelfile']).parent} && ollama create NAME -f Modelfile")
        if entry.get("modelfile_note"):
            print(f"  note:    {entry['modelfile_note']}")
    elif entry.get("modelfile_note"):
        print(f"  no Modelfile: {entry['modelfile_note']}")
    if "agreement" in entry:
        print(
            f"  greedy answers identical to the adapter model's on {entry['agreement']:.0%} of "
            f"{entry['examples']} held-out prompts ({entry['token_agreement']:.0%} of tokens)"
        )
        stops = "yes" if entry["stops_at_end_of_turn"] else "NO"
        print(
            f"  stops at the end-of-turn token ({', '.join(entry['end_tokens'])}): {stops} "
            f"({entry['stop_rate']:.0%} of answers end there; adapter model: {entry['reference_stop_rate']:.0%})"
        )
        if entry.get("warning"):
            print(f"  WARNING {entry['warning']}")
    return 0
