"""``olora``: a new LoRA adapter per task, kept orthogonal to the frozen adapters of earlier tasks.

Wang et al., *Orthogonal Subspace Learning for Language Model Continual Learning*, EMNLP 2023 Findings
(official code: github.com/cmnfriend/O-LoRA). Task K trains a fresh adapter ``task-K``; the adapters of
tasks 1..K-1 stay active but frozen, so the model's output carries the sum of every adapter's delta. The
loss adds, over every LoRA layer, the L1 norm of ``A_old @ A_new.T`` for each earlier adapter (pushing the
new task's input subspace away from the old ones') and an L2 norm of each tensor of the new adapter:

    loss = model loss + orth * sum_l sum_i |A_i^l A_new^l^T|_1 + l2 * sum_(A, B new) ||param||_2

Parameters (``method.params``):
    orth  weight of the orthogonality term (default 0.5: the official code's lamda_1)
    l2    weight of the L2 term (default 0.0: the official code's lamda_2; its scripts vary both per benchmark)

Stores one frozen adapter per earlier task: memory and saved size grow linearly with the number of tasks,
and the forward pass runs every adapter (a step of task K costs K adapters' forward, one adapter's update).
The penalty is a few r x (K-1)r products per layer and step. Nothing routes: every adapter answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel
from pydantic import Field, NonNegativeFloat
from transformers import PreTrainedModel

from lcia.core.files import read_json
from lcia.methods.base import Capabilities, Method, MethodParams, TrainContext, register
from lcia.models.lora import add_lora, shared_whole_modules, task_adapter


@register("olora")
class OLora(Method):
    """O-LoRA: a new LoRA per task, kept orthogonal to the frozen adapters of earlier tasks."""

    class Params(MethodParams):
        orth: NonNegativeFloat = Field(0.5, description="weight of the orthogonality term (the official lamda_1)")
        l2: NonNegativeFloat = Field(0.0, description="weight of the new adapter's L2 term (the official lamda_2)")

    # DDP: the training loop wraps each stage's model after before_task, so the new adapter is in it.
    capabilities = Capabilities(ddp=True)

    def __init__(self, params: Params | None = None):
        super().__init__(params)
        self.adapters: list[str] = []  # one per stage begun, in order; the last one trains
        self._terms: tuple[list[tuple[torch.Tensor, torch.Tensor]], list[torch.Tensor]] | None = None

    def setup(self, model: PreTrainedModel, lora: LoraConfig) -> PeftModel:
        self.lora = lora
        return add_lora(model, lora, adapter_name="task-1")

    def before_task(self, ctx: TrainContext) -> None:
        model = ctx.accelerator.unwrap_model(ctx.model)
        name = task_adapter(model, ctx.stage, shared_whole_modules(self.lora))
        self.adapters.append(name)
        self._activate(model)

    def _activate(self, model: PeftModel) -> None:
        """Every adapter active (PeftModel.set_adapter takes one name, its LoraModel a list); only the last trains."""
        model.base_model.set_adapter(self.adapters)
        if len(self.adapters) > 1:
            model.set_requires_grad(self.adapters[:-1], requires_grad=False)
            for name, param in model.named_parameters():  # a vision model's projector trains in every task
                if ".modules_to_save." in name:
                    param.requires_grad_(True)
        self._terms = None  # collected at the first step: after a resume has loaded the weights

    def _collect(self, model: PeftModel) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[torch.Tensor]]:
        """(earlier adapters' A matrices stacked, the new A) per LoRA layer, and the new adapter's tensors."""
        new, earlier = f".{self.adapters[-1]}.", [f".{a}." for a in self.adapters[:-1]]
        params = dict(model.named_parameters())
        with torch.no_grad():  # the earlier adapters are frozen for the whole stage: stacked once
            pairs = [
                (torch.cat([params[name.replace(new, e)] for e in earlier]), param)
                for name, param in params.items()
                if ".lora_A" + new in name and earlier
            ]
        return pairs, [p for n, p in params.items() if new in n and ".lora_" in n]

    def loss(self, ctx: TrainContext, batch: dict, outputs: Any) -> torch.Tensor | None:
        if self._terms is None:
            self._terms = self._collect(ctx.accelerator.unwrap_model(ctx.model))
        pairs, new = self._terms
        extra = None
        if self.params.orth and pairs:
            orth = sum(torch.abs(old @ a.T).sum() for old, a in pairs)  # the official code's torch.mm(param, param_.T)
            ctx.log["olora_orth"] = orth.item()
            extra = self.params.orth * orth
        if self.params.l2:
            l2 = sum(torch.norm(p, p=2) for p in new)
            ctx.log["olora_l2"] = l2.item()
            extra = self.params.l2 * l2 if extra is None else extra + self.params.l2 * l2
        return extra

    def summary(self) -> dict[str, Any]:
        return self.params.model_dump() | {"adapters": self.adapters}

    def artifacts(self) -> dict[str, Any]:
        return {"olora.json": {"adapters": self.adapters, "active": self.adapters}}

    def load_stage(self, model: PeftModel, folder: Path) -> PeftModel:
        model.base_model.set_adapter(read_json(folder / "olora.json")["active"], inference_mode=True)
        return model

    def state_dict(self) -> dict[str, Any]:
        return {"adapters": self.adapters}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.adapters = list(state["adapters"])

    def restore_model(self, model: PeftModel) -> None:
        for name in self.adapters:
            if name not in model.peft_config:
                model.add_adapter(name, shared_whole_modules(self.lora) if name != "task-1" else self.lora)
        if self.adapters:
            self._activate(model)
