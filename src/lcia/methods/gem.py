"""``gem``: Gradient Episodic Memory (and A-GEM) on the trainable (LoRA) tensors.

Lopez-Paz & Ranzato, *Gradient Episodic Memory for Continual Learning*, NeurIPS 2017 (official code:
github.com/facebookresearch/GradientEpisodicMemory, ``model/gem.py``); Chaudhry et al., *Efficient Lifelong
Learning with A-GEM*, ICLR 2019 (github.com/facebookresearch/agem, ``model/model.py``).

After each task, ``memory_size`` of its training examples (a seeded random choice) enter an episodic memory
kept per task. They are never trained on: at every optimizer step of a later task the accumulated gradient g
of the current batch is compared with g_k, the gradient of the loss on a batch of task k's memory (the same
weights, dropout off), and if any <g, g_k> < 0, g is replaced by the g~ that solves GEM's QP

    min ||g~ - g||^2  s.t.  <g~, g_k> >= 0 for every earlier task k

through its dual over the k x k Gram matrix, as the official code: v = argmin_{v >= margin}
1/2 v^T (G G^T + eps I) v + (G g)^T v, g~ = G^T v + g. ``margin`` (the official ``memory_strength``) is a
lower bound on the dual variables (each violating step adds at least ``margin`` times every memory
gradient), ``eps`` keeps the Gram matrix positive definite (with eps > 0, <g~, g_k> >= -eps v_k). The dual
is solved exactly as the non-negative least-squares problem it is (scipy's ``nnls``; v = margin + u, u >= 0).
``variant: agem`` keeps one constraint, the gradient g_ref of one batch drawn from all earlier tasks'
memories together, and projects g~ = g - (<g, g_ref> / <g_ref, g_ref>) g_ref when <g, g_ref> < 0.

Keeps: the memory (``memory_size`` examples per earlier task: in every checkpoint and as gem_memory.json
beside each stage's adapters). Costs per step: one forward and backward pass over ``memory_batch`` memory
examples per earlier task (gem; one pass for agem), and a k x (trainable elements) fp32 matrix. The memory
holds earlier tasks' examples: ``needs_old_data``. The training log gets ``gem_violated`` (constraints
violated) and ``gem_projected`` (1 when the step was projected); the summary counts both per stage.

DDP: the hook sees the gradient already averaged over the ranks; every rank draws the same memory batches
(seeded by the stage's seed and the step) and runs them on the bare model (no gradient synchronisation), and
the memory gradients are then averaged over the ranks so that float noise (non-deterministic GPU kernels)
cannot make the replicas' projections differ.

Parameters: ``variant`` gem | agem, ``memory_size`` (256, the official ``n_memories``), ``memory_batch``
(8: memory examples per earlier task per step; the official GEM uses the whole memory), ``margin`` (0.5, the
official ``memory_strength``), ``eps`` (1e-3, as the official ``project2cone2``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from pydantic import Field, NonNegativeFloat, PositiveInt

from lcia.core import distributed
from lcia.core.params import trainable
from lcia.data.schema import Example
from lcia.methods.base import Capabilities, Method, MethodParams, TrainContext, register
from lcia.models.forward import answer_forward


def gem_dual(gram: np.ndarray, dots: np.ndarray, margin: float = 0.0, eps: float = 0.0) -> np.ndarray:
    """v = argmin_{v >= margin} 1/2 v^T (gram + eps I) v + dots^T v (GEM's dual; gram = G G^T, dots = G g).

    With v = margin + u and P = gram + eps I = A^T A, the objective is 1/2 ||A u - y||^2 + const with
    A^T y = -(P margin + dots): a non-negative least-squares problem in u, solved exactly by scipy's nnls.
    A = sqrt(w) Q^T from P's eigendecomposition; eigenvalues near 0 (linearly dependent memory gradients,
    eps = 0) are dropped: the right-hand side lies in P's range then.
    """
    from scipy.optimize import nnls  # imported here: scipy takes a while to import

    k = len(dots)
    P = 0.5 * (gram + gram.T) + eps * np.eye(k)
    c = P @ np.full(k, margin) + dots
    w, Q = np.linalg.eigh(P)
    keep = w > w.max() * 1e-12  # a violated constraint has a nonzero g_k: w.max() > 0
    root = np.sqrt(w[keep])
    u, _ = nnls(root[:, None] * Q[:, keep].T, -(Q[:, keep].T @ c) / root)
    return margin + u


def gem_projection(g: torch.Tensor, memories: torch.Tensor, margin: float = 0.0, eps: float = 0.0) -> torch.Tensor:
    """GEM's projected gradient g~ = G^T v + g of ``g`` ([n]) under the constraints of ``memories`` (G, [k, n])."""
    G = memories.double()
    v = gem_dual((G @ G.T).cpu().numpy(), (G @ g.double()).cpu().numpy(), margin, eps)
    return (g.double() + torch.from_numpy(v).to(G.device) @ G).to(g.dtype)


def agem_projection(g: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """A-GEM: g - (<g, g_ref> / <g_ref, g_ref>) g_ref when <g, g_ref> < 0, else g."""
    dot = torch.dot(g.double(), reference.double())
    if dot >= 0:
        return g
    return (g.double() - dot / torch.dot(reference.double(), reference.double()) * reference.double()).to(g.dtype)


def _flat(tensors: list[torch.Tensor | None], like: list[torch.Tensor]) -> torch.Tensor:
    """One fp32 vector of ``tensors`` (a None gradient as zeros shaped as its ``like``)."""
    return torch.cat([(t if t is not None else torch.zeros_like(p)).reshape(-1).float() for t, p in zip(tensors, like)])


def _as_example(record: dict) -> Example:
    return Example(**{**record, "references": tuple(record["references"]), "messages": tuple(record["messages"])})


@register("gem")
class Gem(Method):
    """Gradient Episodic Memory: each step's gradient projected so no earlier task's memory loss increases."""

    capabilities = Capabilities(ddp=True, needs_old_data=True)

    class Params(MethodParams):
        variant: Literal["gem", "agem"] = Field(
            "gem", description="gem: one constraint per earlier task (QP) | agem: one averaged constraint"
        )
        memory_size: PositiveInt = Field(256, description="training examples kept per task (official n_memories)")
        memory_batch: PositiveInt = Field(
            8, description="memory examples per earlier task per step (agem: per step in all); the official: all"
        )
        margin: NonNegativeFloat = Field(
            0.5, description="lower bound on GEM's dual variables (official memory_strength); gem only"
        )
        eps: NonNegativeFloat = Field(1e-3, description="added to the Gram matrix's diagonal (official); gem only")

    def __init__(self, params: Params | None = None):
        super().__init__(params)
        self.memory: dict[str, list[Example]] = {}  # task name -> its kept examples, in kept order
        self.seed = 0  # the stage's seed (the loop's torch seed): memory choice and memory batches
        self.per_stage: list[dict] = []  # per stage with a memory: steps, projected steps, violated constraints

    def before_task(self, ctx: TrainContext) -> None:
        self.seed = torch.initial_seed()  # the loop seeded torch for this stage; kept in the state for a resume
        if self.memory:
            self.per_stage.append({"stage": ctx.stage, "steps": 0, "projected": 0, "violated": 0})

    def _memory_batches(self, step: int) -> list[list[Example]]:
        """This step's memory batches: ``memory_batch`` examples of each earlier task (agem: of all of them
        pooled, as A-GEM's reference batch), drawn without replacement, seeded by (stage seed, step)."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + step)
        pools = list(self.memory.values())
        if self.params.variant == "agem":
            pools = [[example for pool in pools for example in pool]]
        return [
            [pool[i] for i in torch.randperm(len(pool), generator=generator)[: self.params.memory_batch].tolist()]
            for pool in pools
        ]

    def _memory_gradients(self, ctx: TrainContext, params: dict[str, torch.nn.Parameter]) -> torch.Tensor:
        """[memory batches, trainable elements]: the gradient of each memory batch's loss (dropout off)."""
        model, rows = ctx.model, []
        model.eval()
        try:
            for examples in self._memory_batches(ctx.step):
                for p in params.values():
                    p.grad = None
                with ctx.accelerator.autocast():
                    loss = answer_forward(model, ctx.inputs(examples)).loss
                loss.backward()  # the bare model: no DDP synchronisation
                rows.append(_flat([p.grad for p in params.values()], list(params.values())))
        finally:
            model.train()
        memories = torch.stack(rows)
        if distributed.is_distributed():  # the same batches on every rank; averaging makes them bit-identical
            dist.all_reduce(memories)
            memories /= distributed.world_size()
        return memories

    def after_backward(self, ctx: TrainContext) -> None:
        if not self.memory:  # the first task trains freely
            return
        params = trainable(ctx.model)
        kept = {n: p.grad for n, p in params.items()}  # g, put back after the memory passes
        g = _flat(list(kept.values()), list(params.values()))
        memories = self._memory_gradients(ctx, params)
        for n, p in params.items():
            p.grad = kept[n]
        violated = int(((memories.double() @ g.double()) < 0).sum())
        if violated:
            if self.params.variant == "agem":
                projected = agem_projection(g, memories[0])
            else:
                projected = gem_projection(g, memories, self.params.margin, self.params.eps)
            offset = 0
            for p in params.values():  # a tensor without a gradient this step keeps none (as the official)
                if p.grad is not None:
                    p.grad.copy_(projected[offset : offset + p.numel()].view_as(p))
                offset += p.numel()
        record = self.per_stage[-1]
        record["steps"] += 1
        record["projected"] += int(violated > 0)
        record["violated"] += violated
        ctx.log["gem_violated"], ctx.log["gem_projected"] = violated, int(violated > 0)

    def after_task(self, ctx: TrainContext) -> None:
        generator = torch.Generator().manual_seed(self.seed)
        for task in ctx.tasks:
            order = torch.randperm(len(task.train), generator=generator)[: self.params.memory_size].tolist()
            self.memory[task.name] = [task.train[i] for i in order]
        if self.per_stage and self.per_stage[-1]["stage"] == ctx.stage:
            ctx.log["gem_projected_steps"] = self.per_stage[-1]["projected"]
        ctx.log["gem_memory"] = sum(map(len, self.memory.values()))

    def summary(self) -> dict[str, Any]:
        return {
            **self.params.model_dump(),
            "kept": {task: len(kept) for task, kept in self.memory.items()},
            "per_stage": self.per_stage,
        }

    @classmethod
    def report_lines(cls, run) -> list[str]:
        summary = run.results.get("method", {})
        stages = ", ".join(f"stage {s['stage']} {s['projected']}/{s['steps']}" for s in summary.get("per_stage", []))
        return [
            f"{summary.get('variant', 'gem').upper()} ({summary.get('memory_size')} examples kept per task, "
            f"{summary.get('memory_batch')} per memory batch): projected steps: {stages or 'n/a'}."
        ]

    def _records(self) -> dict[str, list[dict]]:
        return {task: [dataclasses.asdict(ex) for ex in kept] for task, kept in self.memory.items()}

    def artifacts(self) -> dict[str, Any]:
        return {"gem_memory.json": {**self.summary(), "memory": self._records()}}

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self._records(), "seed": self.seed, "per_stage": self.per_stage}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory = {task: [_as_example(r) for r in kept] for task, kept in state["memory"].items()}
        self.seed, self.per_stage = int(state["seed"]), [dict(r) for r in state["per_stage"]]
