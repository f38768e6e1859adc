"""Hardware snapshot and the advice it gives, on this (GPU-less) machine and with fake GPUs."""

from __future__ import annotations

import json

import pytest
from tunewiz.core.planning import hardware
from tunewiz.core.planning.hardware import GPU, Hardware


def _gpu(total_gb: float, bf16: bool = True, index: int = 0, free_gb: float | None = None) -> GPU:
    return GPU(index, "Fake GPU", total_gb, total_gb if free_gb is None else free_gb, "8.6" if bf16 else "7.5", bf16)


def _hw(*gpus: GPU, disk_free_gb: float = 500.0) -> Hardware:
    return Hardware(gpus=list(gpus), disk_free_gb=disk_free_gb, disk_path="/data")


@pytest.fixture(scope="module")
def detected() -> Hardware:
    return hardware.detect()


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


needs_no_gpu = pytest.mark.skipif(_has_cuda(), reason="this machine has a CUDA device")


@needs_no_gpu
def test_detect_without_a_gpu(detected):
    assert detected.gpus == []
    assert detected.device in ("cpu", "mps")
    if not detected.mps:
        assert detected.device == "cpu"
    assert detected.best_gpu is None


def test_detect_reports_cpu_ram_and_disk(detected, tmp_path):
    assert detected.cpu_logical_cores >= 1
    assert 1 <= detected.cpu_physical_cores <= detected.cpu_logical_cores
    assert detected.ram_total_gb > 0
    assert 0 <= detected.ram_available_gb <= detected.ram_total_gb
    assert detected.disk_free_gb >= 0
    assert detected.platform


def test_detect_disk_path_walks_up_to_an_existing_directory(tmp_path):
    hw = hardware.detect(tmp_path / "not" / "yet" / "created")
    assert hw.disk_path == str(tmp_path)


@needs_no_gpu
def test_summary_and_advice_without_a_gpu(detected):
    if detected.mps:
        pytest.skip("Apple Silicon")
    summary = "\n".join(detected.summary())
    assert "no CUDA device" in summary
    assert "CPU:" in summary and "RAM:" in summary and "Disk:" in summary
    assert "CPU" in detected.advice()[0]


def test_to_dict_is_json_serialisable(detected):
    d = json.loads(json.dumps(detected.to_dict()))
    assert d["device"] == detected.device
    assert d["cpu_logical_cores"] == detected.cpu_logical_cores
    d = _hw(_gpu(8.0)).to_dict()
    assert d["device"] == "cuda" and d["gpus"][0]["total_gb"] == 8.0


def test_no_gpu_advice():
    hw = _hw()
    assert hw.device == "cpu"
    advice = hw.advice()
    assert len(advice) == 1
    assert "No GPU" in advice[0] and "CPU" in advice[0]
    assert any("no CUDA device" in line for line in hw.summary())


def test_fake_8gb_gpu_gets_the_qlora_advice():
    hw = _hw(_gpu(8.0))
    assert hw.device == "cuda"
    assert hw.advice() == ["8 GB: QLoRA (4-bit) on models up to about 7B."]
    summary = hw.summary()
    assert summary[0] == "GPU 0: Fake GPU, 8.0 GB (8.0 GB free), compute 8.6, bf16 yes"


@pytest.mark.parametrize(
    "total_gb, fragment",
    [(80.0, "24 GB+"), (24.0, "24 GB+"), (16.0, "16 GB"), (8.0, "8 GB: QLoRA"), (6.0, "6 GB GPU: stick to models")],
)
def test_advice_by_gpu_memory(total_gb, fragment):
    assert _hw(_gpu(total_gb)).advice()[0].startswith(fragment)


@pytest.mark.parametrize("total_gb, fragment", [(7.8, "8 GB: QLoRA"), (15.6, "16 GB"), (23.6, "24 GB+")])
def test_advice_for_the_memory_real_cards_report(total_gb, fragment):
    assert _hw(_gpu(total_gb)).advice()[0].startswith(fragment)


def test_best_gpu_is_the_one_with_most_free_memory():
    a, b = _gpu(24.0, index=0, free_gb=2.0), _gpu(16.0, index=1, free_gb=15.0)
    hw = _hw(a, b)
    assert hw.best_gpu is b
    assert hw.advice()[0].startswith("16 GB")
    assert len(hw.summary()) == 2 + 3  # one line per GPU, then CPU, RAM, disk


def test_gpu_without_bf16_mentions_fp16():
    advice = _hw(_gpu(16.0, bf16=False)).advice()
    assert any("fp16" in line for line in advice)
    assert not any("fp16" in line for line in _hw(_gpu(16.0)).advice())


def test_low_disk_is_mentioned():
    assert any("disk free" in line for line in _hw(disk_free_gb=3.2).advice())
    assert not any("disk free" in line for line in _hw(disk_free_gb=50).advice())


def test_mps_summary():
    hw = Hardware(mps=True, disk_free_gb=100)
    assert hw.device == "mps"
    assert "Apple Silicon" in hw.summary()[0]


FAKE_NVML = """
import sys, types

class NVMLError(Exception):
    pass

class Mem:
    def __init__(self, total, free):
        self.total, self.free = total, free

GiB = 2**30
DEVICES = [("NVIDIA H100 80GB HBM3", 80 * GiB, 60 * GiB, (9, 0), "GPU-aaaa"),
           ("Tesla T4", 15 * GiB, 15 * GiB, (7, 5), "GPU-bbbb")]
m = types.ModuleType("pynvml")
m.NVMLError = NVMLError
m.nvmlInit = lambda: None
m.nvmlShutdown = lambda: None
m.nvmlDeviceGetCount = lambda: len(DEVICES)
m.nvmlDeviceGetHandleByIndex = lambda i: i
m.nvmlDeviceGetName = lambda h: DEVICES[h][0].encode()
m.nvmlDeviceGetUUID = lambda h: DEVICES[h][4]
m.nvmlDeviceGetMemoryInfo = lambda h: Mem(DEVICES[h][1], DEVICES[h][2])
m.nvmlDeviceGetCudaComputeCapability = lambda h: DEVICES[h][3]
sys.modules["pynvml"] = m
"""


def _detect_with_fake_nvml(env: dict[str, str] | None = None) -> dict:
    """hardware.detect() in a fresh process whose NVML is a fake at the library boundary (pynvml)."""
    import os
    import subprocess
    import sys

    code = FAKE_NVML + (
        "import json\nfrom tunewiz.core.planning import hardware\nhw = hardware.detect()\n"
        "torch_loaded = 'torch' in sys.modules\n"
        "import torch\n"
        "print(json.dumps({'gpus': [g.__dict__ for g in hw.gpus], 'torch_loaded': torch_loaded,"
        " 'cuda_initialized': torch.cuda.is_initialized()}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, **(env or {})}
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_gpus_come_from_nvml_without_a_cuda_context():
    got = _detect_with_fake_nvml()
    assert [(g["name"], g["total_gb"], g["free_gb"], g["compute_capability"], g["bf16"]) for g in got["gpus"]] == [
        ("NVIDIA H100 80GB HBM3", 80.0, 60.0, "9.0", True),
        ("Tesla T4", 15.0, 15.0, "7.5", False),
    ]
    assert not got["torch_loaded"]  # torch is not even imported when NVML answers
    assert not got["cuda_initialized"]


def test_nvml_gpus_follow_cuda_visible_devices():
    got = _detect_with_fake_nvml({"CUDA_VISIBLE_DEVICES": "1"})
    assert [(g["index"], g["name"]) for g in got["gpus"]] == [(0, "Tesla T4")]
    got = _detect_with_fake_nvml({"CUDA_VISIBLE_DEVICES": "GPU-bbbb,GPU-aaaa"})
    assert [g["name"] for g in got["gpus"]] == ["Tesla T4", "NVIDIA H100 80GB HBM3"]
