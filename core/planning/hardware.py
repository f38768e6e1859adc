"""What this machine has: GPUs (name, memory, compute capability, bf16), CPU, RAM, disk.

NVIDIA GPUs are read through NVML (nvidia-ml-py), which creates no CUDA context: the wizard and
every training rank would otherwise each hold a few hundred MB on every GPU for their whole life.
torch is asked only where NVML has nothing to say (ROCm, Apple's MPS). Works with no GPU and no
driver: the snapshot says so.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

GB = 1024**3


def peak_rss_bytes() -> int:
    """This process's peak resident memory: the kernel's high-water mark of its own address space.

    VmHWM from /proc/self/status, not ru_maxrss: Linux keeps that across exec, so a process started
    by a large one (a test runner, a wizard with torch loaded) would report its parent's size.
    Writing 5 to /proc/self/clear_refs resets VmHWM. Elsewhere ru_maxrss stands in.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


@dataclass
class GPU:
    index: int
    name: str
    total_gb: float
    free_gb: float
    compute_capability: str
    bf16: bool


@dataclass
class Hardware:
    gpus: list[GPU] = field(default_factory=list)
    mps: bool = False
    cpu_model: str = ""
    cpu_physical_cores: int = 1
    cpu_logical_cores: int = 1
    cpu_bf16: bool = False
    ram_total_gb: float = 0.0
    ram_available_gb: float = 0.0
    disk_free_gb: float = 0.0
    disk_path: str = ""
    platform: str = ""
    flash_attn: bool = False
    """flash-attn is installed (FlashAttention 2 kernels for Ampere+ GPUs)."""

    @property
    def device(self) -> str:
        """cuda | mps | cpu: what training will use (the planner's decision)."""
        from tunewiz.core.planning.planner import choose_device

        return choose_device(self).value

    @property
    def best_gpu(self) -> GPU | None:
        return max(self.gpus, key=lambda g: g.free_gb) if self.gpus else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["device"] = self.device
        d["gpus"] = [asdict(g) for g in self.gpus]
        return d

    def summary(self) -> list[str]:
        """Plain-language lines for the CLI and the wizard."""
        lines = []
        if self.gpus:
            for g in self.gpus:
                lines.append(
                    f"GPU {g.index}: {g.name}, {g.total_gb:.1f} GB ({g.free_gb:.1f} GB free), "
                    f"compute {g.compute_capability}, bf16 {'yes' if g.bf16 else 'no'}"
                )
        elif self.mps:
            lines.append("GPU: Apple Silicon (MPS), sharing system memory")
        else:
            lines.append("GPU: none found (no CUDA device) - training runs on the CPU")
        lines.append(
            f"CPU: {self.cpu_model or 'unknown'}, {self.cpu_physical_cores} physical / "
            f"{self.cpu_logical_cores} logical cores{', bf16' if self.cpu_bf16 else ''}"
        )
        lines.append(f"RAM: {self.ram_total_gb:.1f} GB ({self.ram_available_gb:.1f} GB available)")
        lines.append(f"Disk: {self.disk_free_gb:.1f} GB free at {self.disk_path}")
        return lines

    def advice(self) -> list[str]:
        """What the hardware means for fine-tuning (rules of thumb): the planner's advice (planner.advise)."""
        from tunewiz.core.planning.planner import advise

        return [d.reason for d in advise(self)]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def detect(disk_path: str | Path | None = None) -> Hardware:
    import psutil  # installed with accelerate

    hw = Hardware()
    hw.platform = f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"
    hw.cpu_model = _cpu_model()
    hw.cpu_logical_cores = os.cpu_count() or 1
    hw.cpu_physical_cores = psutil.cpu_count(logical=False) or hw.cpu_logical_cores
    flags = _cpu_flags()
    hw.cpu_bf16 = bool({"avx512_bf16", "amx_bf16"} & flags)
    vm = psutil.virtual_memory()
    hw.ram_total_gb = round(vm.total / GB, 1)
    hw.ram_available_gb = round(vm.available / GB, 1)
    probe = Path(disk_path) if disk_path else Path.home()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    hw.disk_path = str(probe)
    hw.disk_free_gb = round(shutil.disk_usage(probe).free / GB, 1)

    hw.flash_attn = importlib.util.find_spec("flash_attn") is not None
    nvml = nvml_gpus()
    if nvml is not None:
        hw.gpus = nvml
        return hw
    return _torch_gpus(hw)


def _visible(gpus: list[GPU], uuids: list[str]) -> list[GPU] | None:
    """The GPUs CUDA_VISIBLE_DEVICES leaves a process (by index or UUID), numbered as CUDA numbers them;
    None for an entry NVML's list cannot name (a MIG instance): then torch is asked instead."""
    spec = os.environ.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        return gpus
    out = []
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            break
        match = [g for g, u in zip(gpus, uuids, strict=True) if token == str(g.index) or u.startswith(token)]
        if not match:
            return None
        out.append(match[0])
    return [GPU(i, g.name, g.total_gb, g.free_gb, g.compute_capability, g.bf16) for i, g in enumerate(out)]


def nvml_gpus() -> list[GPU] | None:
    """NVIDIA GPUs through NVML, with no CUDA context; None when NVML is missing or has no driver."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return None
    try:
        gpus, uuids = [], []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            uuid = pynvml.nvmlDeviceGetUUID(h)
            try:
                if pynvml.nvmlDeviceGetMigMode(h)[0]:
                    return None  # MIG: the whole card's memory is not what a process gets; torch knows its slice
            except (pynvml.NVMLError, AttributeError):
                pass
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            gpus.append(
                GPU(
                    index=i,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    total_gb=round(mem.total / GB, 1),
                    free_gb=round(mem.free / GB, 1),
                    compute_capability=f"{major}.{minor}",
                    bf16=major >= 8,
                )
            )
            uuids.append(uuid.decode() if isinstance(uuid, bytes) else str(uuid))
        return _visible(gpus, uuids)
    except pynvml.NVMLError:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def _torch_gpus(hw: Hardware) -> Hardware:
    """ROCm GPUs or Apple's MPS through torch (NVML had none). Device properties only: asking for free
    memory would create a context on each device."""
    try:
        import torch
    except ImportError:
        return hw
    try:
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                total = round(props.total_memory / GB, 1)
                hw.gpus.append(GPU(i, props.name, total, total, f"{props.major}.{props.minor}", bf16=props.major >= 8))
        elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            hw.mps = True
    except RuntimeError:  # a broken driver is "no GPU", not a crash
        hw.gpus = []
    return hw
