"""``lwf``: Learning without Forgetting, distillation toward the previous model's answers.

Li & Hoiem, *Learning without Forgetting*, ECCV 2016 (TPAMI 2018): while a new task trains, the model
is also asked to keep the outputs the previous model gave on the new task's inputs, so no old data is
needed. For instruction tuning the outputs are the next-token distributions at the answer positions
of the current batch; from the second task on the loss adds

    lam * T^2 * KL( softmax(z_old / T) || softmax(z / T) )     (mean over answer tokens)

where z are the model's logits and z_old those of the model as it was at the end of the previous task
(its trainable tensors, kept as one fp32 copy, swapped in through ``torch.func.functional_call``, in
eval mode: no dropout). T^2 keeps the gradient's scale independent of T (Hinton et al., 2015).
The training log gets ``lwf_kl``.

Parameters: ``lam`` (default 1.0), ``temperature`` T (default 2.0, as the LwF paper).
Stores one copy of the adapter; costs one extra forward pass (no backward) per micro-batch, about a
third of a step. Correct under DDP (each rank distils its own batch).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, NonNegativeFloat, PositiveFloat

from lcia.core.params import trainable
from lcia.methods.base import Capabilities, Method, MethodParams, TrainContext, register
from lcia.models.forward import answer_forward


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 KL(softmax(teacher / T) || softmax(logits / T)), mean over rows (answer tokens)."""
    log_student = F.log_softmax(logits.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher.float() / temperature, dim=-1)
    return temperature**2 * F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")


@register("lwf")
class Lwf(Method):
    """Learning without Forgetting: distillation toward the previous model's answer distributions."""

    capabilities = Capabilities(ddp=True)

    class Params(MethodParams):
        lam: NonNegativeFloat = Field(1.0, description="weight of the distillation term")
        temperature: PositiveFloat = Field(2.0, description="softmax temperature T (2, as the LwF paper)")

    def __init__(self, params: Params | None = None):
        super().__init__(params)
        self.previous: dict[str, torch.Tensor] = {}  # the trainable tensors at the end of the last task

    def loss(self, ctx: TrainContext, batch: dict, outputs: Any) -> torch.Tensor | None:
        if not self.previous:
            return None
        model = ctx.model
        teacher = {n: self.previous[n].to(device=p.device, dtype=p.dtype) for n, p in trainable(model).items()}
        model.eval()
        try:
            with torch.no_grad():
                teacher_logits = answer_forward(model, batch, params=teacher).logits
        finally:
            model.train()
        kl = distillation_loss(outputs.logits, teacher_logits, self.params.temperature)
        ctx.log["lwf_kl"] = float(kl.detach())
        return self.params.lam * kl

    def after_task(self, ctx: TrainContext) -> None:
        self.previous = {n: p.detach().float().clone() for n, p in trainable(ctx.model).items()}

    def summary(self) -> dict[str, Any]:
        return self.params.model_dump()

    def state_dict(self) -> dict[str, Any]:
        return {"previous": self.previous}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.previous = dict(state["previous"])
