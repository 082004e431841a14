"""The precision a run trains in. ``auto`` takes bf16 autocast only where the hardware multiplies bf16
natively (a CUDA GPU that supports it; a CPU with AVX512-BF16 or AMX): on other CPUs bf16 matrix
multiplies are emulated and slower than fp32 (on an AVX2 EPYC: 1-19 GFLOP/s against 170, measured by
``benchmarks/train_speed.py``). Master weights, optimizer and EMA state stay fp32 either way."""

from __future__ import annotations

from pathlib import Path

import torch

NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when /proc/cpuinfo lists a bf16 matrix instruction set (False where it cannot be read)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    flags = {word for line in cpuinfo.splitlines() if line.startswith("flags") for word in line.split()}
    return bool(flags & NATIVE_BF16_FLAGS)


def resolve_precision(precision: str) -> str:
    """``fp32`` or ``bf16``: the configured precision, with ``auto`` decided for this machine."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"
