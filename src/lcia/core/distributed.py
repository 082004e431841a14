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

Only rank 0 writes the run directory (the runner and ``Checkpoints`` check ``is_main``). Sharded
parameters (FSDP, DeepSpeed ZeRO) are refused by the runner: see docs/distributed.md.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from accelerate import PartialState
from accelerate.utils import DistributedType, parse_flag_from_env

from lcia.errors import LciaError

DATA_PARALLEL = (DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)


def process_state() -> PartialState:
    """The process group set up from the launcher's environment (one process when not launched)."""
    return PartialState(cpu=not torch.cuda.is_available())  # several CPU processes need cpu=True (gloo)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def refuse_unsupported(state: PartialState, method) -> None:
    """One line, before anything runs, where a launch is not data parallelism the method supports.

    Accelerate marks an FSDP or DeepSpeed launch in the environment (on a CPU its type stays MULTI_CPU):
    training it as plain DDP would silently not be what was asked for.
    """
    for engine, flag in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED")):
        if parse_flag_from_env(flag):
            raise LciaError(
                f"lcia run does not train under {engine} (sharded parameters): launch with "
                "`accelerate launch --multi_gpu` for DDP; docs/distributed.md lists what works where"
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
        merged[r::world_size()] = part
    return merged


def ddp_wrapper(model: torch.nn.Module, accelerator) -> torch.nn.Module | None:
    """A DDP wrapper of ``model`` over its parameters trainable now (None on one process).

    Built per stage, after ``before_task``, so a method's new adapter is in it. Hooks and the
    loop keep using ``model`` itself; calling the wrapper makes the backward pass average gradients.
    """
    if not is_distributed():
        return None
    device_ids = [accelerator.local_process_index] if accelerator.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def barrier() -> None:
    if is_distributed():
        dist.barrier()
