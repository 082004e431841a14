"""``inflora``: a new LoRA branch per task whose frozen lora_A is designed to leave earlier tasks' inputs alone.

Liang and Li, *InfLoRA: Interference-Free Low-Rank Adaptation for Continual Learning*, CVPR 2024 (official code:
github.com/liangyanshuo/InfLoRA, ``methods/inflora.py``). Task t gets a fresh adapter ``task-t``; the adapters of
earlier tasks stay active and frozen (the model answers with the sum of every branch, as the official forward).
Before task t, the inputs x of every LoRA layer on the task's training examples give the layer's uncentred
covariance C = mean_tokens x x^T (d_in x d_in). DualGPM keeps, per layer, an orthonormal basis M of the input
space of earlier tasks ("remove": M spans it) or of its complement ("retain": M spans what is left), and

    lora_A(task t) = top-r left singular vectors of (I - M M^T) C  (remove)  or  M M^T C  (retain), / sqrt(3)

is frozen: only lora_B (zero at the start, as PEFT) trains, so the new branch's update B A x vanishes on inputs x
of earlier tasks. After the task the inputs are collected again (with the trained model) and DualGPM grows M with
the energy threshold lamb + (lame - lamb) * (t - 1) / sessions (the squared singular values of C, as the official
code), switching a layer to "retain" once M holds more than half of its dimensions.

Parameters (``method.params``):
    lamb      DualGPM threshold after the first task (default 0.95: the official cifar100 / domainnet scripts)
    lame      threshold the schedule approaches after the last task (default 1.0, as the official scripts)
    sessions  tasks the schedule spreads over (default: the stream's number of stages; ``lcia extend`` adds
              stages, so an extended run equals one run over the longer stream only when this is set)
    samples   training examples whose layer inputs are collected (default: all of them, as the official code)
    batch_size  examples per forward pass of the collection (memory only: the result is the same)

Keeps one frozen adapter per earlier task (memory, saved size and forward cost grow linearly with the tasks, a
step updates one lora_B) and per LoRA layer a basis of at most d_in / 2 columns (float64, in the method state).
Two forward passes over the task's examples per task (before and after it), a d_in x d_in covariance per LoRA layer
on the device while they run, and a few d_in x d_in SVDs per layer. Nothing routes: every adapter answers.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel
from peft.tuners.lora import LoraLayer
from pydantic import Field, PositiveInt, confloat
from transformers import PreTrainedModel

from lcia.core.files import read_json
from lcia.data.tasks import sample_in_order
from lcia.errors import LciaError
from lcia.methods.base import Capabilities, Method, MethodParams, TrainContext, register
from lcia.models.forward import answer_forward
from lcia.models.lora import add_lora, shared_whole_modules, task_adapter

SCALE = 1 / math.sqrt(3)  # the official scale of the designed rows
CONFIG = "inflora.json"


def project(matrix: torch.Tensor, basis: torch.Tensor | None, kind: str) -> torch.Tensor:
    """``matrix`` with its columns moved off the earlier tasks' input space: removed from span(M), or kept in it."""
    if basis is None:
        return matrix
    inside = basis @ (basis.T @ matrix)
    return matrix - inside if kind == "remove" else inside


def design_a(cov: torch.Tensor, basis: torch.Tensor | None, kind: str, r: int) -> torch.Tensor:
    """The new branch's lora_A (r x d_in): the top-r left singular vectors of the projected covariance, / sqrt(3).

    A direction the projected matrix leaves at singular value 0 is arbitrary in the SVD (possibly in span(M)):
    projecting the rows once more keeps them off the earlier space (a no-op for every other row)."""
    u = torch.linalg.svd(project(cov, basis, kind), full_matrices=False).U[:, :r]
    return project(u, basis, kind).T * SCALE


def threshold(lamb: float, lame: float, done: int, sessions: int) -> float:
    """The official schedule: ``done`` tasks before this one (0 for the first)."""
    return (lame - lamb) * done / sessions + lamb


def update_dualgpm(cov: torch.Tensor, basis: torch.Tensor | None, kind: str, thr: float) -> tuple[torch.Tensor, str]:
    """DualGPM after a task: the layer's basis and kind grown with the task's input covariance ``cov``."""
    d = cov.shape[0]
    if basis is None:  # first task: the directions holding ``thr`` of the energy (at least one)
        s = torch.linalg.svdvals(cov) ** 2
        keep = int((torch.cumsum(s / s.sum(), 0) < thr).sum())
        u = torch.linalg.svd(cov, full_matrices=False).U
        basis, kind = u[:, : max(keep, 1)], "remove"
    elif kind == "remove":
        basis = _grow(cov, basis, thr)
    else:
        basis = _shrink_complement(cov, basis, thr)
    if kind == "remove" and basis.shape[1] > d / 2:  # keep the smaller of the space and its complement
        basis, kind = torch.linalg.svd(basis).U[:, basis.shape[1] :], "retain"
    return basis, kind


def _grow(cov: torch.Tensor, basis: torch.Tensor, thr: float) -> torch.Tensor:
    """Kind "remove": add the new directions (outside M) until M holds ``thr`` of the task's energy."""
    total = torch.linalg.matrix_norm(cov) ** 2  # sum of squared singular values
    u, s, _ = torch.linalg.svd(project(cov, basis, "remove"), full_matrices=False)
    ratio = s**2 / total
    held, add = float((total - (s**2).sum()) / total), 0
    while add < len(ratio) and held < thr:
        held, add = held + float(ratio[add]), add + 1
    return torch.cat([basis, u[:, :add]], 1)[:, : cov.shape[0]]


def _shrink_complement(cov: torch.Tensor, basis: torch.Tensor, thr: float) -> torch.Tensor:
    """Kind "retain" (M spans the free space): take directions out of M while more than 1 - ``thr`` of the task's
    energy lies in it."""
    total = torch.linalg.matrix_norm(cov) ** 2
    u, s, _ = torch.linalg.svd(project(cov, basis, "retain"), full_matrices=False)
    ratio = s**2 / total
    free, take = float((s**2).sum() / total), 0
    while take < min(len(ratio), basis.shape[1]) and free >= 1 - thr:
        free, take = free - float(ratio[take]), take + 1
    if take == 0:
        return basis
    rest = basis - u[:, :take] @ (u[:, :take].T @ basis)
    return torch.linalg.svd(rest).U[:, : basis.shape[1] - take]


def lora_layers(model: PeftModel, adapter: str) -> dict[str, LoraLayer]:
    """The LoRA layers holding ``adapter``, by module name; InfLoRA designs linear lora_A matrices only."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, LoraLayer) and adapter in m.lora_A}
    if any(not isinstance(m.lora_A[adapter], torch.nn.Linear) for m in layers.values()):
        raise LciaError("inflora designs the lora_A of linear layers only: target linear modules")
    return layers


@contextmanager
def collecting(layers: dict[str, LoraLayer], mask: list[torch.Tensor | None]):
    """Forward pre-hooks summing each layer's x x^T over the real tokens (``mask[0]``: the batch's attention
    mask) into the yielded {name: [sum, tokens]}."""
    sums: dict[str, list] = {}

    def hook(name):
        def add(module, args):
            x = args[0].detach()
            m = mask[0]
            x = x[m.bool()] if m is not None and x.shape[:-1] == m.shape else x.reshape(-1, x.shape[-1])
            x = x.float()
            entry = sums.setdefault(name, [torch.zeros(x.shape[1], x.shape[1], device=x.device), 0])
            entry[0] += x.T @ x
            entry[1] += x.shape[0]

        return add

    handles = [layer.register_forward_pre_hook(hook(name)) for name, layer in layers.items()]
    try:
        yield sums
    finally:
        for handle in handles:
            handle.remove()


@register("inflora")
class InfLoRA(Method):
    """InfLoRA: a new LoRA per task, its frozen lora_A designed off earlier tasks' inputs (DualGPM); lora_B trains."""

    # DDP: every rank collects the same examples (the same A and bases everywhere); the new adapter exists before
    # the loop wraps the model. No DoRA: its magnitude renormalises W + BA, so the base output on earlier tasks'
    # inputs would change with B although B A x = 0 there.
    capabilities = Capabilities(ddp=True, lora_variants=frozenset({"lora", "rslora"}))

    class Params(MethodParams):
        lamb: confloat(gt=0, le=1) = Field(0.95, description="DualGPM threshold after the first task")
        lame: confloat(gt=0, le=1) = Field(1.0, description="threshold the schedule approaches after the last task")
        sessions: PositiveInt | None = Field(None, description="tasks of the schedule (default: the stream's stages)")
        samples: PositiveInt | None = Field(None, description="examples whose layer inputs are collected (all)")
        batch_size: PositiveInt = Field(8, description="examples per forward pass of the collection")

    def __init__(self, params: Params | None = None):
        super().__init__(params)
        self.adapters: list[str] = []  # one per stage begun, in order; the last one trains
        self.bases: dict[str, torch.Tensor] = {}  # LoRA layer -> DualGPM basis (float64, on the CPU)
        self.kinds: dict[str, str] = {}  # LoRA layer -> "remove" | "retain"
        self.per_stage: list[dict] = []
        self.sessions: int | None = None

    def stages(self, tasks):
        stages = super().stages(tasks)
        self.sessions = len(stages)
        return stages

    def setup(self, model: PreTrainedModel, lora: LoraConfig) -> PeftModel:
        self.lora = lora
        return add_lora(model, lora, adapter_name="task-1")

    def before_task(self, ctx: TrainContext) -> None:
        model = ctx.accelerator.unwrap_model(ctx.model)
        name = task_adapter(model, ctx.stage, shared_whole_modules(self.lora))
        self.adapters.append(name)
        self._activate(model)
        layers = lora_layers(model, name)
        covs = self._covariances(ctx, model, layers)
        with torch.no_grad():
            for key, layer in layers.items():
                a = design_a(covs[key], self.bases.get(key), self.kinds.get(key, "remove"), layer.r[name])
                layer.lora_A[name].weight.copy_(a)  # lora_B stays at PEFT's zeros

    def _activate(self, model: PeftModel) -> None:
        """Every adapter active; only the newest adapter's lora_B trains (and a vision model's projector)."""
        model.base_model.set_adapter(self.adapters)
        model.set_requires_grad(self.adapters[:-1], requires_grad=False)
        for key, param in model.named_parameters():
            if f".lora_A.{self.adapters[-1]}." in key:
                param.requires_grad_(False)
            if ".modules_to_save." in key:
                param.requires_grad_(True)

    def _examples(self, ctx: TrainContext) -> list:
        """The stage's training examples, or a sample of them seeded by the stage (in their order)."""
        examples = [example for task in ctx.tasks for example in task.train]
        return sample_in_order(examples, self.params.samples, ctx.stage)

    def _covariances(self, ctx: TrainContext, model: PeftModel, layers: dict) -> dict[str, torch.Tensor]:
        """Each layer's mean x x^T over the real tokens of the stage's examples (float64, CPU)."""
        examples, size, mask = self._examples(ctx), self.params.batch_size, [None]
        training = model.training
        model.eval()  # no dropout: the official code collects with the network as it trains (no dropout there)
        try:
            with collecting(layers, mask) as sums, torch.no_grad():
                for start in range(0, len(examples), size):
                    batch = ctx.inputs(examples[start : start + size])
                    mask[0] = batch.get("attention_mask")
                    answer_forward(model, batch)
        finally:
            model.train(training)
        return {key: (total / count).double().cpu() for key, (total, count) in sums.items()}

    def after_task(self, ctx: TrainContext) -> None:
        model = ctx.accelerator.unwrap_model(ctx.model)
        covs = self._covariances(ctx, model, lora_layers(model, self.adapters[-1]))
        thr = threshold(self.params.lamb, self.params.lame, ctx.stage - 1, self._sessions(ctx.stage))
        for key, cov in covs.items():
            self.bases[key], self.kinds[key] = update_dualgpm(cov, self.bases.get(key), self.kinds.get(key, ""), thr)
        dims = [b.shape[1] if self.kinds[k] == "remove" else b.shape[0] - b.shape[1] for k, b in self.bases.items()]
        record = {
            "stage": ctx.stage,
            "threshold": round(thr, 6),
            "kept_dims_mean": round(sum(dims) / len(dims), 3),  # earlier tasks' input dimensions, over the layers
            "kept_dims_max": max(dims),
            "retain_layers": sum(kind == "retain" for kind in self.kinds.values()),
        }
        self.per_stage.append(record)
        ctx.log["inflora_kept_dims"] = record["kept_dims_mean"]

    def _sessions(self, stage: int) -> int:
        """The schedule's length: the parameter, else the stream's stages (else, unknown, the stages so far)."""
        return self.params.sessions or self.sessions or stage

    def summary(self) -> dict[str, Any]:
        return self.params.model_dump() | {"adapters": self.adapters, "per_stage": self.per_stage}

    def artifacts(self) -> dict[str, Any]:
        return {CONFIG: {"adapters": self.adapters, "active": self.adapters}}

    def load_stage(self, model: PeftModel, folder: Path) -> PeftModel:
        model.base_model.set_adapter(read_json(folder / CONFIG)["active"], inference_mode=True)
        return model

    def state_dict(self) -> dict[str, Any]:
        return {"adapters": self.adapters, "bases": self.bases, "kinds": self.kinds, "per_stage": self.per_stage}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.adapters, self.per_stage = list(state["adapters"]), list(state["per_stage"])
        self.bases, self.kinds = dict(state["bases"]), dict(state["kinds"])

    def restore_model(self, model: PeftModel) -> None:
        for name in self.adapters:
            if name not in model.peft_config:
                model.add_adapter(name, shared_whole_modules(self.lora))
        if self.adapters:
            self._activate(model)
