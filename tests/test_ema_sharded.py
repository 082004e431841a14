"""Under DDP and under sharded parameters (FSDP2 DTensors) every rank gets the same, whole-tensor coefficient."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lcia.mechanisms.weight_ema import PRESETS, DynamicEma

STEPS = [  # (weights, gradient) per optimizer step, for one 4x3 tensor
    (torch.arange(12.0).reshape(4, 3) / 10, torch.linspace(-1, 1, 12).reshape(4, 3)),
    (torch.arange(12.0).reshape(4, 3) / 7, torch.linspace(-2, 1, 12).reshape(4, 3) ** 2),
    (torch.arange(12.0).reshape(4, 3) / 5, torch.linspace(0, 1, 12).reshape(4, 3)),
]


def _run(engine, make):
    p = torch.nn.Parameter(make(STEPS[0][0]))
    coefficients = []
    for weights, grad in STEPS:
        with torch.no_grad():
            p.copy_(make(weights))
        p.grad = make(grad)
        engine.update({"w": p})
        coefficients.append(engine.last.get("norms", {}).get("raw", {}).get("w"))
    return coefficients, engine.ema["w"]


def _rank(rank, port, preset, results):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    mesh = init_device_mesh("cpu", (2,))
    coefficients, ema_shard = _run(DynamicEma(PRESETS[preset]), lambda t: distribute_tensor(t, mesh, [Shard(0)]))
    results[rank] = (coefficients, ema_shard)
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_rank(rank, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)  # the same initial weights on both ranks, as DDP requires
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 1)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    engine = DynamicEma(PRESETS["scaled"])
    data = torch.Generator().manual_seed(100 + rank)  # each rank its own batches
    coefficients = []
    for _ in range(4):
        model(torch.randn(16, 4, generator=data)).pow(2).mean().backward()
        optimizer.step()
        engine.update(dict(model.named_parameters()))
        coefficients.append(engine.last.get("coefficient"))
        optimizer.zero_grad()
    results[rank] = coefficients
    dist.destroy_process_group()


def test_ddp_ranks_compute_the_same_coefficients_from_their_synchronised_gradients():
    results = mp.Manager().dict()
    mp.spawn(_ddp_rank, args=(_free_port(), results), nprocs=2, join=True)
    assert results[0][1:] == results[1][1:] and len(results[0][1]) == 4


def test_sharded_tensors_get_the_whole_tensors_coefficient():
    port = _free_port()
    for preset in ("official", "paper", "scaled"):
        results = mp.Manager().dict()
        mp.spawn(_rank, args=(port, preset, results), nprocs=2, join=True)
        whole, ema = _run(DynamicEma(PRESETS[preset]), lambda t: t.clone())
        assert results[0][0] == results[1][0]  # every rank computes the same coefficient
        assert results[0][0][1:] == pytest.approx(whole[1:], rel=1e-6)  # fp32 partial sums, added in another order
        assert torch.allclose(torch.cat([results[0][1], results[1][1]]), ema)
        port += 1
