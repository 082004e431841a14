"""Several processes (``accelerate launch`` / ``torchrun``): what each rank does and what they agree on.

Data parallelism on Hugging Face Accelerate's process group, with the same global batch as one process:

* every rank draws the same global batch and trains on its share (``my_share``), with the loss
  weighed by its share of the batch's answer tokens, so the gradients DDP averages are exactly the
  one-process gradient of the whole batch;
* each stage's model is wrapped in DDP after the method's ``before_task`` (``ddp_wrapper``), so an
  adapter a method adds for the stage is in the wrapper, and the wrapper is dropped with the stage;
* evaluation splits every task's test set over the ranks and gathers the answers in their order
  (``gather_in_order``);
* a stop asked on any rank stops them all at the same step (``any_rank``).

Only rank 0 writes the run directory (the runner and ``Checkpoints`` check ``is_main``).

Under ``accelerate launch --use_fsdp --fsdp_version 2`` the frozen weights of the base model are sharded
with FSDP2 (``shard_frozen_weights``): each rank keeps 1/N of them and gathers a layer's for its forward
and backward pass. Every trainable tensor (the adapters, a projector) and every adapter a method adds
later stays whole on each rank, its gradient averaged as under DDP (``average_gradients``), so the
methods, checkpoints and saved adapters are those of a DDP run. Evaluation gathers the weights on every
rank (``whole_weights``) and splits the test sets as DDP does. Accelerate itself is kept out of the
sharding (``without_accelerate_fsdp``). DeepSpeed and FSDP1 are refused: see docs/distributed.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
import torch.distributed as dist
from accelerate import PartialState
from accelerate.utils import DistributedType, parse_flag_from_env

from lcia.errors import LciaError

DATA_PARALLEL = (DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)


def process_state() -> PartialState:
    """The process group set up from the launcher's environment (one process when not launched)."""
    with without_accelerate_fsdp():
        return PartialState(cpu=not torch.cuda.is_available())  # several CPU processes need cpu=True (gloo)


def fsdp_version() -> int | None:
    """The FSDP version a launch asked for (``accelerate launch --use_fsdp``; None: none asked)."""
    if not parse_flag_from_env("ACCELERATE_USE_FSDP"):
        return None
    return int(os.environ.get("FSDP_VERSION", "1"))  # Accelerate's default is version 1


@contextmanager
def without_accelerate_fsdp() -> Iterator[None]:
    """Accelerate's process state and Accelerator built as for plain data parallelism: lcia shards the base itself
    (per run, not per ``prepare``), and Accelerate's FSDP2 ``prepare`` would want the model with the optimizer."""
    flag = os.environ.pop("ACCELERATE_USE_FSDP", None)
    try:
        yield
    finally:
        if flag is not None:
            os.environ["ACCELERATE_USE_FSDP"] = flag


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def refuse_unsupported(state: PartialState, method, quantized: bool = False) -> None:
    """One line, before anything runs, where a launch is not data parallelism the method supports.

    Accelerate marks an FSDP or DeepSpeed launch in the environment (on a CPU its type stays MULTI_CPU):
    training it as plain DDP would silently not be what was asked for.
    """
    if parse_flag_from_env("ACCELERATE_USE_DEEPSPEED"):
        raise LciaError(
            "lcia run does not train under DeepSpeed (sharded parameters): launch with `accelerate launch "
            "--multi_gpu` (DDP) or `--use_fsdp --fsdp_version 2`; docs/distributed.md lists what works where"
        )
    version = fsdp_version()
    if version not in (None, 2):
        raise LciaError(
            f"lcia run shards with FSDP version 2 only, not version {version}: launch with "
            "`accelerate launch --use_fsdp --fsdp_version 2`; docs/distributed.md lists what works where"
        )
    if version == 2 and quantized:
        raise LciaError("model.quantization: a 4-bit base is not sharded (FSDP2 cannot split packed 4-bit weights)")
    if version == 2 and method.capabilities.not_sharded:
        raise LciaError(
            f"method {method.name!r} does not train on a sharded base (FSDP2): {method.capabilities.not_sharded}"
        )
    if state.num_processes == 1:
        return
    if state.distributed_type not in DATA_PARALLEL:
        raise LciaError(
            f"lcia run trains with DDP across processes, not {state.distributed_type.value}: "
            "launch with `accelerate launch --multi_gpu` (or torchrun); docs/distributed.md lists what works where"
        )
    if not method.capabilities.ddp:
        raise LciaError(f"method {method.name!r} does not declare support for several processes (DDP)")


def my_share(items: list) -> list:
    """This rank's items of a list that every rank holds: every world_size-th one, from its rank on."""
    return items[rank() :: world_size()]


def any_rank(flag: bool) -> bool:
    """True on every rank when it is True on any (one collective; the flag itself on one process)."""
    if not is_distributed():
        return flag
    value = torch.tensor([int(flag)], device=PartialState().device)  # NCCL reduces GPU tensors only
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over the ranks, on every rank (kept on its device, as NCCL needs)."""
    if not is_distributed():
        return value
    value = value.detach().float().clone()
    dist.all_reduce(value)
    return value / world_size()


def gather_in_order(local: list, total: int) -> list:
    """Every rank's items of a ``[rank::world]`` split, back in the original order, on every rank."""
    if not is_distributed():
        return local
    parts: list[list] = [None] * world_size()  # type: ignore[list-item]
    dist.all_gather_object(parts, local)
    merged = [None] * total
    for r, part in enumerate(parts):
        merged[r :: world_size()] = part
    return merged


def ddp_wrapper(model: torch.nn.Module, accelerator) -> torch.nn.Module | None:
    """A DDP wrapper of ``model`` over its parameters trainable now (None on one process or a sharded base).

    Built per stage, after ``before_task``, so a method's new adapter is in it. Hooks and the
    loop keep using ``model`` itself; calling the wrapper makes the backward pass average gradients.
    """
    if not is_distributed() or is_sharded(model):
        return None
    device_ids = [accelerator.local_process_index] if accelerator.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard_frozen_weights(model: torch.nn.Module, frozen: set[torch.nn.Parameter], device: torch.device) -> None:
    """FSDP2 over the ranks: each decoder layer (the model's ``_no_split_modules``) one unit, the rest the root's.

    Only ``frozen`` (the base model's frozen weights) is sharded; every other tensor stays whole on each rank,
    so an adapter a method adds later needs no re-sharding, and a checkpoint holds the same tensors whatever
    the number of processes. LoRA tensors are a small share of a base's weights (LLaMA-7B, r=8 on q and v: 0.06%).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (world_size(),))
    whole = {p for p in model.parameters() if p not in frozen}
    layers = set(getattr(model, "_no_split_modules", None) or ())
    for module in model.modules():
        if module is not model and type(module).__name__ in layers:
            fully_shard(module, mesh=mesh, ignored_params=whole)
    fully_shard(model, mesh=mesh, ignored_params=whole)


def sharded_share(model: torch.nn.Module) -> float:
    """The fraction of the model's weights (elements) that FSDP2 shards over the ranks."""
    from torch.distributed.tensor import DTensor

    params = list(model.parameters())
    return sum(p.numel() for p in params if isinstance(p, DTensor)) / sum(p.numel() for p in params)


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Every rank's gradients of ``params`` replaced by their mean over the ranks (one all-reduce), as DDP does."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    for grad, part in zip(grads, flat.split([g.numel() for g in grads])):
        grad.copy_(part.view_as(grad))


def whole_weights(model: torch.nn.Module):
    """A context in which every rank holds the whole model, so ranks answer different examples without
    collectives (evaluation splits the test sets as under DDP); nothing on an unsharded model."""
    return _gathered(model) if is_sharded(model) else nullcontext()


@contextmanager
def _gathered(model: torch.nn.Module) -> Iterator[None]:
    from torch.distributed.fsdp import FSDPModule

    units = [module for module in model.modules() if isinstance(module, FSDPModule)]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(True, recurse=False)
