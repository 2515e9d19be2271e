"""What the device runs natively, as torch reports it: bf16 support, and the autocast context for a precision.

Detection asks torch (cpuinfo on CPU, the CUDA runtime on GPUs), never a CPU model list: oneDNN runs bf16
natively on x86 CPUs with AMX or AVX512-BF16; elsewhere (e.g. AVX2-only AMD EPYC) torch emulates bf16
by converting to fp32, which is slower than plain fp32. Shared by training (`pipelines.training.step`) and upscaling.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import torch

__all__ = ["Precision", "PRECISIONS", "AUTOCAST_DTYPES", "cpu_capabilities", "native_bf16", "autocast",
           "describe"]

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # x86 (oneDNN's native bf16 paths)
ARM_BF16_FLAGS = ("bf16", "sve_bf16")  # aarch64 (BFMMLA / SVE BF16)


def cpu_capabilities() -> Mapping[str, object]:
    """The CPU feature flags torch detected (cpuinfo), e.g. {'avx2': True, 'amx_bf16': False, 'cpu_name': ...}."""
    getter = getattr(torch.cpu, "get_capabilities", None)  # public since torch 2.9
    if getter is not None:
        return getter()
    return dict(torch._C._cpu._get_cpu_capability()) if hasattr(torch._C._cpu, "_get_cpu_capability") else {}


def native_bf16(device: torch.device, capabilities: Mapping[str, object] | None = None) -> bool:
    """True where bf16 matmuls/convolutions run in hardware: CUDA with bf16 (Ampere+), CPUs with AMX/AVX512-BF16."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
    caps = cpu_capabilities() if capabilities is None else capabilities
    return any(bool(caps.get(flag)) for flag in (*CPU_BF16_FLAGS, *ARM_BF16_FLAGS))


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """Autocast for a resolved precision ("fp32" | "bf16" | "fp16") on the device's type; fp32 is a no-op."""
    dtype = AUTOCAST_DTYPES[precision]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def describe(device: torch.device) -> dict:
    """The machine facts a benchmark result must name: device, CPU model, bf16 flags, threads."""
    caps = cpu_capabilities()
    out = {"device": str(device), "cpu": str(caps.get("cpu_name", "")), "cpu_capability":
           torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
           **{flag: bool(caps.get(flag)) for flag in CPU_BF16_FLAGS}, "native_bf16": native_bf16(device)}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out
