"""The GPU check (issue #13): speed, MFU and predicted vs measured memory of real training runs.

Run on one GPU from the repository root of an installed checkout (no network needed; about 8 minutes
on an H200, `--time-budget` keeps it under 10):

    python benchmarks/gpu_check.py --tokenizer DIR [--out results.json]

DIR holds the bundled SmolLM2 tokenizer's files (tokenizer.json, tokenizer_config.json,
chat_template.jinja); `--save-tokenizer DIR` writes them on a machine that has the bundled model.
Without `--tokenizer` the bundled model is resolved (converted once into the tunewiz home).

Every case trains a random-weight model of a catalog architecture (memory and speed do not depend on
the weights) through the real trainer process (`python -m tunewiz.core.training.trainer RUN_DIR`, started by
`core.launcher`), as the planner plans it for this machine, on synthetic chat rows rendered to the
case's length (a quarter of each row is the assistant's answer, the trained part):

- Qwen2.5-1.5B and Llama-3.1-8B shapes (catalog vocabularies, so the output layer is real-sized; the
  tokenizer's 49,152 ids all fall inside them) x LoRA and QLoRA x 1,024 and 2,048 tokens;
- with flash-attn installed, a pair on rows of mixed lengths (256-2,048 tokens): as planned
  (FlashAttention 2, padding-free batches) against the same run in a trainer that cannot see
  flash-attn (the plan a machine without it gets: SDPA, length-grouped batches). The planner has no
  switch for padding-free alone, so the pair compares the two plans, kernel included.

Per case: the plan's decisions; tokens/s over steps 2..N (from the step events' times, every step
the same tokens; the trainer's own figure over all steps beside it); MFU = tokens/s x
memory.flops_per_token (4N per token, no recompute) / the GPU's dense bf16 peak
(memory.gpu_peak_flops); peak memory predicted (the trainer's [estimate]) against
torch.cuda.max_memory_allocated (compared without the CUDA context the estimate adds),
max_memory_reserved, and NVML's used memory sampled by this script while the trainer runs (the
trainer's process where NVML lists processes, else the device's rise over its idle level; compared
with the whole estimate). A failing case (e.g. out of memory) prints its reason and the check goes
on. All figures go to --out as JSON (default: $OUT/gpu_check.json when $OUT is set, else
./gpu_check.json); `--work DIR` keeps the models, data and run directories (train.log) there.

`--smoke`: one tiny case on the CPU (the first of --models and --methods, default Qwen2.5-1.5B LoRA, cut to
2 layers of hidden size 256; 128 tokens, 2 steps) through the same code, to prove the script without a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "support_tickets.jsonl"
MiB = 2**20
MODELS = ("qwen2.5-1.5b", "llama3.1-8b")
METHODS = ("lora", "qlora")
SEQS = (1024, 2048)
ANSWER_SHARE = 0.25
SMOKE_SHAPE = {"hidden": 256, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate": 512, "head_dim": 0}
# Hides flash-attn from a trainer: importlib.util.find_spec() returns None for a name that sys.modules
# maps to None, which is how tunewiz.core.planning.hardware and transformers look for it.
HIDE_FLASH = """import sys
sys.modules["flash_attn"] = None
"""


@dataclasses.dataclass
class Case:
    model: str
    method: str
    seq: int
    mixed: bool = False
    """Rows of mixed lengths (the padding-free pair) instead of rows of `seq` tokens."""
    hide_flash: bool = False
    label: str = ""

    @property
    def name(self) -> str:
        return f"{self.model} {self.method} {self.seq}" + (f" {self.label}" if self.label else "")


# -- random models (built in a child process, so this one never holds a CUDA context) -------------


def build_model(spec_json: str, dest: str, tokenizer_dir: str) -> None:
    """A random-weight model of `spec`'s shapes with the tokenizer's special ids, saved to `dest`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from tunewiz.core.models.catalog import ModelSpec
    from tunewiz.core.models.loading import load_tokenizer

    spec = ModelSpec(**json.loads(spec_json))
    tok = load_tokenizer(tokenizer_dir)
    if len(tok) > spec.vocab:
        sys.exit(f"the tokenizer has {len(tok)} ids, more than {spec.key}'s vocabulary of {spec.vocab}")
    model_type = "qwen3" if spec.qk_norm else "qwen2" if spec.qkv_bias else "llama"
    config = AutoConfig.for_model(
        model_type, hidden_size=spec.hidden, num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads, intermediate_size=spec.intermediate, vocab_size=spec.vocab,
        tie_word_embeddings=spec.tied, head_dim=spec.hd, max_position_embeddings=8192,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(dest)
    tok.save_pretrained(dest)


def make_model(spec, dest: Path, tokenizer_dir: Path) -> float:
    """Build `spec` into `dest` in a child process; returns the seconds it took."""
    t0 = time.monotonic()
    spec_json = json.dumps(dataclasses.asdict(spec))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--build-model", spec_json, str(dest), str(tokenizer_dir)]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"building {spec.key} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return time.monotonic() - t0


# -- data -----------------------------------------------------------------------------------------


def word_streams() -> tuple[list[str], list[str]]:
    """The sample tickets' user and assistant words: the filler of the synthetic rows."""
    user, answer = [], []
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        for m in json.loads(line)["messages"]:
            if m["role"] == "user":
                user += m["content"].split()
            elif m["role"] == "assistant":
                answer += m["content"].split()
    return user, answer


def _take(words: list[str], start: int, n: int) -> str:
    return " ".join(words[(start + i) % len(words)] for i in range(n))


def _most_words(length, target: int, hi: int) -> int:
    """The most words n in [1, hi] with length(n) <= target (length grows with n)."""
    lo = 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if length(mid) <= target:
            lo = mid
        else:
            hi = mid - 1
    return lo


def make_rows(tok, lengths: list[int]) -> list[dict]:
    """Chat rows rendered (by the trainer's own renderer) to at most `lengths[i]` tokens each, about
    ANSWER_SHARE of them the assistant's answer; every row different."""
    from tunewiz.core.data import dataset as data

    user_words, answer_words = word_streams()
    system = "Summarise the support tickets below, then classify each one as JSON."
    rows = []
    for i, length in enumerate(lengths):
        want = max(8, int(length * ANSWER_SHARE))
        n_answer = _most_words(lambda n, i=i: len(tok(_take(answer_words, 7 * i, n))["input_ids"]), want, 2 * want)
        answer = _take(answer_words, 7 * i, n_answer)

        def messages(n: int, i: int = i, answer: str = answer) -> list[dict]:
            user = f"Ticket batch {i}: " + _take(user_words, 131 * i, n)
            return [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
                {"role": "assistant", "content": answer},
            ]

        n_user = _most_words(lambda n: len(data.render(tok, messages(n)).input_ids), length, 2 * length)
        rows.append({"messages": messages(n_user)})
    return rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# -- measuring ------------------------------------------------------------------------------------


class NvmlPeak:
    """NVML's used memory of GPU 0 (as CUDA numbers them), sampled in a thread while a trainer runs:
    the device's peak and, where NVML lists processes (not in every container), the trainer's."""

    def __init__(self) -> None:
        self.ok = False
        try:
            import pynvml

            pynvml.nvmlInit()
            index = 0
            visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
            if visible.split(",")[0].strip().isdigit():
                index = int(visible.split(",")[0])
            self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)
            self.ok = True
        except Exception:  # noqa: BLE001 - no NVML (the CPU smoke run): no figure
            pass

    def used(self) -> int:
        return int(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used)

    def process_used(self, pid: int) -> int | None:
        try:
            for p in self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle):
                if p.pid == pid and p.usedGpuMemory is not None:
                    return int(p.usedGpuMemory)
        except Exception:  # noqa: BLE001
            pass
        return None

    @contextmanager
    def watch(self, out: dict):
        """Sample until the block ends; fills out['nvml_device_rise_mb'] and out['nvml_process_peak_mb']."""
        if not self.ok:
            yield
            return
        idle = self.used()
        peak, proc_peak = idle, None
        done = threading.Event()

        def sample() -> None:
            nonlocal peak, proc_peak
            while not done.wait(0.1):
                peak = max(peak, self.used())
                pid = out.get("pid")
                used = self.process_used(pid) if pid else None
                if used is not None:
                    proc_peak = max(proc_peak or 0, used)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            out["nvml_idle_mb"] = round(idle / MiB, 1)
            out["nvml_device_rise_mb"] = round((peak - idle) / MiB, 1)
            if proc_peak is not None:
                out["nvml_process_peak_mb"] = round(proc_peak / MiB, 1)


def step_times(run_dir: Path) -> dict[int, float]:
    """When each optimizer step ended: the time of its step event (the loss it logs syncs the GPU)."""
    from tunewiz.core.bookkeeping.events import read_events

    events, _ = read_events(run_dir)
    return {int(e["step"]): float(e["t"]) for e in events if e.get("event") == "step" and "step" in e}


def steady_tokens_per_s(results: dict, times: dict[int, float]) -> float | None:
    """Tokens/s over steps 2..N: the first step (allocator warm-up, kernel selection) left out. Assumes
    every step trains the same tokens, which holds for rows of one length (mixed rows: approximate)."""
    steps = sorted(times)
    if len(steps) < 2 or not results.get("steps"):
        return None
    first, last = steps[0], steps[-1]
    tokens = results["train_tokens_seen"] * (last - first) / results["steps"]
    return tokens / max(times[last] - times[first], 1e-9)


@contextmanager
def env_for_trainer(hide_flash: bool, work: Path):
    """The environment launcher.start passes on: with `hide_flash`, a sitecustomize that hides flash-attn."""
    if not hide_flash:
        yield
        return
    shim = work / "hide-flash-attn"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(HIDE_FLASH, encoding="utf-8")
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(shim) + (os.pathsep + old if old else "")
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def stop_trainer(run_dir: Path, pid: int) -> None:
    """A case over its time: ask the trainer to stop (twice: now), then end it by its pid."""
    from tunewiz.core.training import launcher

    launcher.stop(run_dir, now=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if _reaped(pid):
            return
        time.sleep(0.5)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reaped(pid, block=True)


def _reaped(pid: int, block: bool = False) -> bool:
    try:
        done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
        return done == pid
    except ChildProcessError:
        return True


# -- one case -------------------------------------------------------------------------------------


def run_case(case: Case, model_dir: Path, data_path: Path, home: Path, steps: int,
             timeout: float, nvml: NvmlPeak, work: Path) -> dict[str, Any]:  # fmt: skip
    from tunewiz.core.bookkeeping import runs
    from tunewiz.core.models import catalog
    from tunewiz.core.planning import memory, presets
    from tunewiz.core.training import launcher

    cfg = presets.build_config("balanced")
    cfg.name = f"gpu-check-{case.model}-{case.method}-{case.seq}" + ("-mixed" if case.mixed else "")
    cfg.model.id, cfg.model.method = str(model_dir), case.method
    cfg.data.path, cfg.data.max_seq_len, cfg.data.eval_fraction = str(data_path), case.seq, 0.01
    cfg.training.max_steps, cfg.training.num_epochs, cfg.training.save_total_limit = steps, 1.0, 1
    cfg.evaluation.enabled = False
    run_dir = runs.create_run(cfg.validate(), home)
    out: dict[str, Any] = {"case": case.name, **dataclasses.asdict(case), "run_dir": str(run_dir)}
    t0 = time.monotonic()
    with nvml.watch(out):
        with env_for_trainer(case.hide_flash, work):
            pid = launcher.start(run_dir)
        out["pid"] = pid
        while not launcher.is_finished(run_dir):
            if time.monotonic() - t0 > timeout:
                stop_trainer(run_dir, pid)
                out["timed_out"] = True
                break
            time.sleep(0.5)
    _reaped(pid, block=not out.get("timed_out"))
    out["wall_s"] = round(time.monotonic() - t0, 1)
    doc = runs.read_record(run_dir).to_dict()  # the record as data: its tables as written
    out["status"] = "timed out" if out.get("timed_out") else doc["run"]["status"]
    for section in ("plan", "estimate", "results", "hardware", "versions"):
        out[section] = doc.get(section, {})
    out["data"] = {k: v for k, v in doc.get("data", {}).items() if k != "lint"}
    if out["status"] != "completed":
        last = max(step_times(run_dir), default=0)
        out["failure_reason"] = (
            f"still {doc['run']['status']} after {timeout:.0f}s (at step {last} of {steps}): stopped"
            if out.get("timed_out")
            else doc["run"].get("failure_reason") or f"status {doc['run']['status']}"
        )
        out["log_tail"] = runs.tail_lines(run_dir / runs.LOG, 25)
        return out

    r, est = out["results"], out["estimate"]
    times = step_times(run_dir)
    out["tokens_per_s_steady"] = steady_tokens_per_s(r, times)
    spec = catalog.from_dir(model_dir)
    flops = memory.flops_per_token(spec, memory.Setup(method=case.method, gradient_checkpointing=False))
    gpus = out["hardware"].get("gpus") or []
    if gpus and out["tokens_per_s_steady"]:
        peak = memory.gpu_peak_flops(str(gpus[0]["name"]))
        out.update(flops_per_token=flops, gpu_peak_flops=peak, mfu=out["tokens_per_s_steady"] * flops / peak)
    predicted = est.get("peak_memory_mb")
    if predicted:
        on_gpu = out["plan"].get("device") == "cuda"
        out["predicted_without_context_mb"] = predicted - (est.get("overhead_mb", 0) if on_gpu else 0)
        nv = out.get("nvml_process_peak_mb") or out.get("nvml_device_rise_mb")
        if nv:
            out["nvml_vs_estimate"] = round(nv / predicted - 1, 4)
        if r.get("peak_memory_reserved_mb"):
            out["reserved_vs_estimate_without_context"] = round(
                r["peak_memory_reserved_mb"] / out["predicted_without_context_mb"] - 1, 4
            )
    return out


# -- the table ------------------------------------------------------------------------------------

HEADER = (
    f"{'case':<36} {'plan':<42} {'tok/s':>7} {'(all)':>7} {'MFU':>6} {'pred':>6} {'alloc':>6} {'resv':>6}"
    f" {'nvml':>6} {'err a':>6} {'err n':>6}"
)


def gib(mb: float | None) -> str:
    return "-" if not mb else f"{mb / 1024:.1f}G"


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.0%}" if abs(x) >= 0.1 else f"{x:+.1%}"


def plan_text(p: dict) -> str:
    dt = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(p.get("dtype", ""), p.get("dtype", "?"))
    att = {"flash_attention_2": "fa2"}.get(p.get("attention", ""), p.get("attention", "?"))
    batching = "pf" if p.get("padding_free") else "grp" if p.get("group_by_length") else "rand"
    split = f"{p.get('per_device_batch_size', '?')}x{p.get('gradient_accumulation_steps', '?')}"
    gc = "gc" if p.get("gradient_checkpointing") else "no-gc"
    return f"{dt} {att} {batching} {split} {gc}"


def line(out: dict) -> str:
    if out["status"] != "completed":
        reason = str(out.get("failure_reason", "")).splitlines()[0][:160] if out.get("failure_reason") else ""
        plan = plan_text(out["plan"]) if out["plan"] else ""
        return f"{out['case']:<36} {plan:<42} {out['status'].upper()}: {reason}"
    r, e = out["results"], out["estimate"]
    steady = out.get("tokens_per_s_steady")
    mfu = "-" if out.get("mfu") is None else f"{out['mfu']:.1%}"
    nv = out.get("nvml_process_peak_mb") or out.get("nvml_device_rise_mb")
    return (
        f"{out['case']:<36} {plan_text(out['plan']):<42} {steady or 0:>7.0f} {r.get('tokens_per_s', 0):>7.0f}"
        f" {mfu:>6} {gib(e.get('peak_memory_mb')):>6} {gib(r.get('peak_memory_mb')):>6}"
        f" {gib(r.get('peak_memory_reserved_mb')):>6} {gib(nv):>6} {pct(r.get('peak_memory_vs_estimate')):>6}"
        f" {pct(out.get('nvml_vs_estimate')):>6}"
    )


LEGEND = """\
plan: dtype, attention (fa2 = FlashAttention 2), batching (pf = padding-free, grp = length-grouped),
  per-device batch x accumulation, gradient checkpointing. tok/s: non-padding tokens/s over
  steps 2..N; (all): the trainer's own figure, first step included. MFU: tok/s x 4N / dense bf16 peak.
pred: the trainer's estimate of peak GPU memory (CUDA context included); alloc / resv: torch's
  max_memory_allocated / max_memory_reserved; nvml: NVML's peak used memory while the trainer ran.
err a: alloc against pred without the CUDA context; err n: nvml against pred."""


# -- main -----------------------------------------------------------------------------------------


def default_out() -> Path:
    return Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else Path("gpu_check.json")


def tokenizer_dir(ns, home: Path) -> Path:
    if ns.tokenizer:
        return Path(ns.tokenizer).resolve()
    from tunewiz.core.models import resolve as models

    print("no --tokenizer: resolving the bundled model's (converted once into the tunewiz home)", flush=True)
    return Path(models.resolve(models.DEFAULT_MODEL, home).path)


def cases_for(ns, flash: bool) -> tuple[list[Case], list[str]]:
    if ns.smoke:
        return [Case(ns.models[0], ns.methods[0], 128, label="smoke")], []
    cases = [Case(m, meth, s) for s in ns.seqs for m in ns.models for meth in ns.methods]
    notes = []
    if ns.no_pair:
        notes.append("padding-free comparison not asked for (--no-pair)")
    elif flash:
        seq = max(ns.seqs)
        cases += [
            Case(MODELS[0], "lora", seq, mixed=True, label="mixed"),
            Case(MODELS[0], "lora", seq, mixed=True, hide_flash=True, label="mixed, no fa"),
        ]
    else:
        notes.append("flash-attn is not installed: padding-free comparison skipped")
    return cases, notes


class Check:
    """The cases in order, within the time budget; models and data made once, when a case needs them."""

    def __init__(self, ns, work: Path, tok_dir: Path) -> None:
        from tunewiz.core.models.loading import load_tokenizer
        from tunewiz.core.planning import hardware, presets

        self.t_start = time.monotonic()
        self.ns, self.work, self.tok_dir = ns, work, tok_dir
        self.tok = load_tokenizer(tok_dir)
        self.hw = hardware.detect(work)
        self.flash = self.hw.flash_attn and importlib.util.find_spec("flash_attn") is not None
        self.effective_batch = presets.get("balanced").effective_batch  # the planner keeps it; it splits it
        self.steps = 2 if ns.smoke else ns.steps
        self.nvml = NvmlPeak()
        self.models: dict[str, Path | str] = {}
        """A built model's folder, or why it could not be built."""
        self.durations: dict[str, float] = {}
        self.out_path = ns.out or default_out()
        gpus = ", ".join(f"{g.name} ({g.total_gb:.0f} GB, {g.free_gb:.0f} free)" for g in self.hw.gpus)
        self.report: dict[str, Any] = {
            "machine": gpus or self.hw.cpu_model,
            "flash_attn": self.flash,
            "args": {k: str(v) for k, v in vars(ns).items()},
            "cases": [],
            "skipped": [],
            "builds": {},
        }

    def elapsed(self) -> float:
        return time.monotonic() - self.t_start

    def save(self) -> None:
        self.report["elapsed_s"] = round(self.elapsed(), 1)
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self.out_path.write_text(json.dumps(self.report, indent=1, default=str) + "\n", encoding="utf-8")

    def skip(self, case: Case, why: str) -> None:
        self.report["skipped"].append({"case": case.name, "reason": why})
        print(f"{case.name:<36} SKIPPED ({why})", flush=True)

    def model_for(self, case: Case) -> Path | str:
        if case.model not in self.models:
            from tunewiz.core.models import catalog

            spec = catalog.BY_KEY[case.model]
            if self.ns.smoke:
                spec = dataclasses.replace(spec, **SMOKE_SHAPE)
            dest = self.work / f"random-{case.model}"
            try:
                secs = make_model(spec, dest, self.tok_dir)
                self.models[case.model] = dest
                self.report["builds"][case.model] = {"seconds": round(secs, 1), "params": spec.params}
                print(f"built a random {spec.label} in {secs:.0f}s", flush=True)
            except RuntimeError as exc:
                self.models[case.model] = f"its model could not be built: {str(exc)[-1500:]}"
                self.report["builds"][case.model] = {"error": str(exc)}
        return self.models[case.model]

    def data_for(self, case: Case) -> Path:
        """Rows for `steps` optimizer steps, plus one the trainer holds out (evaluation is off)."""
        path = self.work / f"rows-{case.seq}{'-mixed' if case.mixed else ''}.jsonl"
        if not path.exists():  # the same rows for every case of this length
            rng = random.Random(case.seq)
            n = self.steps * self.effective_batch + 1
            lengths = [rng.randint(case.seq // 8, case.seq) if case.mixed else case.seq for _ in range(n)]
            write_rows(path, make_rows(self.tok, lengths))
        return path

    def run(self, cases: list[Case]) -> None:
        printed_header = False
        for case in cases:
            # A case takes about as long as the longest one of its model so far (+ a build, the first time).
            expected = self.durations.get(case.model, 0.0) + (0.0 if case.model in self.models else 30.0)
            if self.elapsed() + expected > self.ns.time_budget:
                self.skip(case, f"time budget: {self.elapsed():.0f}s spent, a case takes ~{expected:.0f}s, "
                          f"budget {self.ns.time_budget:.0f}s")  # fmt: skip
                continue
            model = self.model_for(case)
            if isinstance(model, str):
                self.skip(case, model)
                continue
            data_path = self.data_for(case)
            # Past the budget a running case is stopped too: the whole check must end in time.
            timeout = min(self.ns.case_timeout, max(60.0, self.ns.time_budget + 45 - self.elapsed()))
            out = run_case(case, model, data_path, self.work / "home", self.steps, timeout,
                           self.nvml, self.work)  # fmt: skip
            self.durations[case.model] = max(self.durations.get(case.model, 0.0), out["wall_s"])
            self.report["cases"].append(out)
            if not printed_header:
                print(HEADER, flush=True)
                printed_header = True
            print(line(out), flush=True)
            self.save()

    def summary(self, notes: list[str]) -> None:
        self.report["notes"] = notes
        for note in notes:
            print(note)
        done = self.report["cases"]
        if done:
            v = self.report["versions"] = done[0].get("versions", {})
            print(LEGEND)
            peak = next((c["gpu_peak_flops"] for c in done if c.get("gpu_peak_flops")), None)
            if peak:
                print(f"dense bf16 peak used for MFU: {peak / 1e12:.0f} TFLOP/s (core.memory.gpu_peak_flops)")
            names = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets")
            print("versions: " + ", ".join(f"{k} {v[k]}" for k in names if k in v))
        failed = sum(c["status"] != "completed" for c in done)
        self.save()
        print(
            f"{len(done) - failed} completed, {failed} failed, {len(self.report['skipped'])} skipped "
            f"in {self.elapsed():.0f}s; figures in {self.out_path}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", help="folder with the bundled SmolLM2 tokenizer's files")
    parser.add_argument("--save-tokenizer", metavar="DIR", help="write the bundled tokenizer's files to DIR, exit")
    parser.add_argument("--out", type=Path, help="JSON file for every figure (default: $OUT/gpu_check.json)")
    parser.add_argument("--time-budget", type=float, default=540, help="seconds; no case starts that would end later")
    parser.add_argument("--case-timeout", type=float, default=240, help="seconds one case may take")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per case (the first is not timed)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seqs", nargs="+", type=int, default=list(SEQS))
    parser.add_argument("--no-pair", action="store_true", help="leave out the padding-free comparison")
    parser.add_argument("--home", type=Path, help="tunewiz home with the converted bundled model (for its tokenizer)")
    parser.add_argument("--work", type=Path, help="folder for models, data and runs, kept (default: a temporary one)")
    parser.add_argument("--smoke", action="store_true", help="one tiny case on the CPU: proves the code path")
    parser.add_argument("--build-model", nargs=3, help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.build_model:
        build_model(*ns.build_model)
        return

    from tunewiz.core.bookkeeping import runs
    from tunewiz.core.models.loading import load_tokenizer

    home = ns.home or runs.home()
    tok_dir = tokenizer_dir(ns, home)
    if ns.save_tokenizer:
        load_tokenizer(tok_dir).save_pretrained(ns.save_tokenizer)
        print(f"tokenizer files written to {ns.save_tokenizer}: {', '.join(os.listdir(ns.save_tokenizer))}")
        return
    work = (ns.work or Path(tempfile.mkdtemp(prefix="tunewiz-gpu-check-"))).resolve()  # trainers run in their run dir
    work.mkdir(parents=True, exist_ok=True)
    check = Check(ns, work, tok_dir)
    if not ns.smoke and not check.hw.gpus:
        sys.exit("no NVIDIA GPU found: this check is for a GPU machine (use --smoke to try it on the CPU)")
    cases, notes = cases_for(ns, check.flash)
    print(
        f"{check.report['machine']}; flash-attn {'installed' if check.flash else 'not installed'}; "
        f"{check.steps} steps per case; work folder {work}",
        flush=True,
    )
    try:
        check.run(cases)
    finally:
        check.summary(notes)
        if ns.work:
            print(f"models, data and runs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
