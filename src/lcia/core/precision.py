"""The precision a run trains and evaluates in. ``auto`` takes bf16 autocast only where the hardware
multiplies bf16 natively (a CUDA GPU that supports it; a CPU with AVX512-BF16 or AMX): on other CPUs bf16
matrix multiplies are emulated and slower than fp32 (on an AVX2 EPYC: 1-19 GFLOP/s against 170, measured
by ``benchmarks/train_speed.py``). Master weights, optimizer and EMA state stay fp32 either way.

Evaluation runs in the run's precision too (``inference_autocast``), so ``lcia eval`` reproduces a run's
answers, and under bf16 on a CPU the model uses the eager attention (``set_attention``): SDPA's CPU
kernel is slower in bf16 for these short sequences (a SmolLM2 LoRA step 1.23 s against 0.97-1.04 s on
a Zen 4 EPYC; in fp32 SDPA is the faster, docs/performance.md)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from lcia.core.distributed import without_accelerate_fsdp

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
    with without_accelerate_fsdp():  # lcia shards the base itself (lcia.core.distributed)
        return Accelerator(mixed_precision=mixed, cpu=not torch.cuda.is_available())


@contextmanager
def inference_autocast(model, precision: str, device: torch.device):
    """The context a model answers in: nothing for an fp32 run; for a bf16 run, bf16 autocast with the
    frozen fp32 linear weights (the base model's and the output head's) swapped for bf16 copies.

    Autocast would cast each of them again at every forward pass, the largest copy of a decoding step;
    the products are the same, since autocast rounds them to bf16 anyway. The fp32 weights come back
    afterwards (a tied head is tied again); the copies take half the weights' memory meanwhile. Frozen
    adapter tensors (an adapter not being trained) are swapped too, which changes nothing either.
    Nested in another, it finds nothing left to swap: a caller answering several tasks (a row of the
    grid) wraps them once and pays for the copies (0.13 s for SmolLM2) once.
    """
    if precision != "bf16":
        yield
        return
    swapped = []
    for module in model.modules():  # exactly nn.Linear: bitsandbytes' 4-bit layers subclass it
        if type(module) is torch.nn.Linear and module.weight.dtype == torch.float32 and not module.weight.requires_grad:
            swapped.append((module, module.weight))
            module.weight = torch.nn.Parameter(module.weight.detach().to(torch.bfloat16), requires_grad=False)
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    finally:
        for module, weight in swapped:
            weight.requires_grad_(module.weight.requires_grad)  # as set meanwhile (PEFT's set_adapter)
            module.weight = weight


def set_attention(model, precision: str, device: torch.device) -> None:
    """Eager attention for a bf16 run on a CPU (faster there), the model's own choice elsewhere."""
    if precision == "bf16" and device.type == "cpu":
        model.set_attn_implementation("eager")


def answering_precision(run_precision: str) -> str:
    """The precision a saved run answers in here: its own, but fp32 where this machine would emulate bf16 (on a
    CPU without native bf16 that is about 30 times slower) and answers could then differ from the run's."""
    return "bf16" if run_precision == "bf16" and resolve_precision("auto") == "bf16" else "fp32"
