"""The training process's memory: what it uses, and how the CPU trainer keeps it steady.

The figures (:func:`memory_mb`, :func:`peak_memory_mb`, :func:`gpu_memory_figures`) go into the step
events and [results]; on a GPU they are torch's allocator's, on the CPU the resident size. The tuning
(:func:`steady_cpu_memory` before the model is loaded, :func:`release_freed_memory` between steps)
keeps a CPU run's resident size where the estimate puts it (core.planning.memory).
"""

from __future__ import annotations

import os

KERNEL_CACHE_ENV = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")
"""oneDNN's primitive cache and PyTorch's ideep cache (the bf16 matmuls on the CPU), 1024 entries each."""
KERNEL_CACHE_CAPACITY = 128

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD_BYTES = 1 << 20


def memory_mb() -> float:
    """Memory in use now: allocated on the GPU, resident on the CPU."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    import psutil

    return round(psutil.Process().memory_info().rss / 2**20, 1)


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    from tunewiz.core.planning.hardware import peak_rss_bytes

    return round(peak_rss_bytes() / 2**20, 1)


def gpu_memory_figures() -> dict[str, float]:
    """On a GPU, beside max_memory_allocated: what torch's allocator reserved at its peak and what NVML
    sees used on this process's GPU now (the CUDA context included); nothing on other devices."""
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return {}
    out = {"peak_memory_reserved_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1)}
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            index = torch.cuda.current_device()
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            if visible:
                index = int(visible.split(",")[index])
            used = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).used
            out["nvml_used_mb"] = round(used / 2**20, 1)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - a figure for the record, never a reason to fail the run
        pass
    return out


def _libc():
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def steady_cpu_memory() -> bool:
    """Keep the CPU trainer's resident size where the estimate puts it, step after step.

    1. Every CPU tensor of 1 MiB or more gets its own mapping, returned to the kernel when freed.
       glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), after which
       activations of each new batch shape come from its heap arenas, and the blocks freed there are
       kept: measured here, the resident size grew by 0.6-1.1 GiB over one to three epochs of the
       sample data while one step needs far less. A fixed threshold (mallopt) stops that; it costs a
       mapping and page faults per large tensor, small against CPU steps of seconds.
    2. The bf16 matmuls' kernel caches hold at most KERNEL_CACHE_CAPACITY entries. oneDNN and ideep
       keep a compiled kernel and its buffers per input shape (1024 of each by default), and with
       length grouping nearly every batch brings a new sequence length: the heap grew ~19 MiB a step
       through the first epoch of the sample tickets (benchmarks/RESULTS.md, session 6). The caches
       read their capacity from the environment at their first use, which is after this call; a
       value the user set is kept.
    True when the mmap threshold is set (glibc only).
    """
    for name in KERNEL_CACHE_ENV:
        os.environ.setdefault(name, str(KERNEL_CACHE_CAPACITY))
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def release_freed_memory() -> None:
    """Hand the heap's freed small blocks back to the kernel (glibc's malloc_trim) between steps."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
