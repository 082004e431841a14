"""``l2``: an L2 pull of the trainable weights toward where the previous task left them.

The simplest regulariser against forgetting (the "L2" baseline of Kirkpatrick et al., PNAS 2017, and of
Mammoth): from the second task on, training pays

    penalty = (lam / 2) * sum over trainable elements of (theta - theta_prev)^2

where theta_prev are the weights at the end of the previous task: EWC with every element equally
important. Its gradient, lam * (theta - theta_prev), is added to the accumulated gradient after the
backward pass (exact: the weights do not move within an optimizer step). The training log gets
``l2_penalty``; results.json and ``lcia report`` get the mean penalty of each stage.

Parameters: ``lam``. Stores one fp32 copy of the adapter and costs one elementwise pass per step.
Elementwise on synchronised gradients, so correct under DDP. This file is the worked example of
docs/methods.md ("write a method").
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, NonNegativeFloat

from lcia.core.params import trainable
from lcia.methods.base import Capabilities, Method, MethodParams, TrainContext, register


@register("l2")
class L2Pull(Method):
    """An L2 pull toward the previous task's weights (EWC with every element equally important)."""

    capabilities = Capabilities(ddp=True)

    class Params(MethodParams):
        lam: NonNegativeFloat = Field(1.0, description="strength of the pull: (lam / 2) |theta - theta_prev|^2")

    def __init__(self, params: Params | None = None):
        super().__init__(params)
        self.anchor: dict[str, torch.Tensor] = {}  # theta_prev, fp32: the weights at the end of the last task
        self.penalties: list[float] = []  # this stage's penalty at each step
        self.per_stage: list[dict] = []

    def after_backward(self, ctx: TrainContext) -> None:
        if not self.anchor:  # the first task trains freely
            return
        penalty = 0.0
        for name, p in trainable(ctx.model).items():
            drift = p.detach().float() - self.anchor[name]
            penalty += float((drift**2).sum())
            pull = (self.params.lam * drift).to(p.dtype)
            p.grad = pull if p.grad is None else p.grad + pull
        ctx.log["l2_penalty"] = 0.5 * self.params.lam * penalty
        self.penalties.append(ctx.log["l2_penalty"])

    def after_task(self, ctx: TrainContext) -> None:
        self.anchor = {n: p.detach().float().clone() for n, p in trainable(ctx.model).items()}
        if self.penalties:
            self.per_stage.append({"stage": ctx.stage, "mean_penalty": sum(self.penalties) / len(self.penalties)})
        self.penalties = []

    def summary(self) -> dict[str, Any]:
        return {"lam": self.params.lam, "per_stage": self.per_stage}

    @classmethod
    def report_lines(cls, run) -> list[str]:
        stages = run.results.get("method", {}).get("per_stage", [])
        means = ", ".join(f"stage {s['stage']} {s['mean_penalty']:.3g}" for s in stages)
        return [f"L2 pull (lam {run.results['method']['lam']}): mean penalty per stage: {means or 'n/a'}."]

    def state_dict(self) -> dict[str, Any]:
        return {"anchor": self.anchor, "penalties": self.penalties, "per_stage": self.per_stage}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anchor, self.penalties = dict(state["anchor"]), list(state["penalties"])
        self.per_stage = list(state["per_stage"])
