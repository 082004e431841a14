"""The precision a run trains in. ``auto`` takes bf16 autocast only where the hardware multiplies bf16
natively (a CUDA GPU that supports it; a CPU with AVX512-BF16 or AMX): on other CPUs bf16 matrix
multiplies are emulated and slower than fp32 (on an AVX2 EPYC: 1-19 GFLOP/s against 170, measured by
``benchmarks/train_speed.py``). Master weights, optimizer and EMA state stay fp32 either way."""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

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


def accelerator_for(precision: str) -> Accelerator:
    """An Accelerator that autocasts in ``precision`` (``fp32`` or ``bf16``).

    Accelerate keeps the mixed precision in a process-wide singleton and refuses to change it, so a run
    in a process that already trained in the other precision (a notebook, a test session, several runs
    of ``lcia compare``) resets that state first. The process group (``PartialState``) is kept.
    """
    mixed = "bf16" if precision == "bf16" else "no"
    if AcceleratorState._shared_state and AcceleratorState().mixed_precision != mixed:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed, cpu=not torch.cuda.is_available())
