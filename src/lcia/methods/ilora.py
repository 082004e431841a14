"""``ilora``: I-LoRA, a fast LoRA trained on new and replayed data and a slow LoRA interpolated toward it.

Ren, Li, Wang, Zhao & Qin, *Analyzing and Reducing Catastrophic Forgetting in Parameter Efficient Tuning*
(arXiv 2402.18865, 2024; ICASSP 2025). Official code: github.com/which47/LLMCL, ``method/ILORA.py``.

Two copies of the adapter: the fast (working) one, which the optimizer trains and which answers, and the
slow one, moved after every optimizer step toward the fast one (``step`` counts the stage's steps from 1)

    a = min(1 - 1 / (step + 1), ema_alpha)        slow <- a * slow + (1 - a) * fast   (every trainable tensor)

From the second stage on, every micro-batch also draws as many examples of earlier tasks from a replay buffer
(reservoir sampling, as ``replay``) as it has rows, and the loss becomes

    (L_new + L_replay) / 2 + reg_weight * mean_{layers, tokens, features} (h_fast - max(h_fast, h_slow))^2

where L_replay is the fast model's answer loss on the replayed examples and h_fast, h_slow are the hidden
states (every layer's, embeddings included, as Hugging Face's ``output_hidden_states``) of the fast and of the
slow model (no gradient) on the replayed examples: the fast model is pulled up to the slow one wherever its
activation is lower. The slow model runs through ``torch.func.functional_call`` with its tensors in place of
the fast ones, in train mode (LoRA dropout on), as the official code does. When a stage ends the slow copy is
reset to the fast one (the official ``update_ema_model``), and the fast adapter is the one saved and evaluated
(the official checkpoint's root adapter, which its inference script loads).

Parameters (official defaults): ``ema_alpha`` 0.25, ``reg_weight`` 1.0, ``buffer_size`` 500, ``sampling``
reservoir. Keeps the buffer and one fp32 copy of the adapter. Per step from stage 2 on: one extra forward
and backward pass of the fast model and one forward pass of the slow model on a replayed batch as large as
the step's: 7 forward-pass equivalents against 3, measured 2.75 times a ``seq-lora`` step on the CPU
(SmolLM2-135M, batch 8, fp32). The training log gets ``ilora_consistency`` and ``ilora_replay_loss``.
Correct under DDP: every rank draws the micro-batch's whole replay (seeded by the stage's seed, the step and
the micro-batch, so a resumed run draws the same) and replays its share of it, weighed so that the ranks' mean
is the one-process loss.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt

from lcia.core import distributed
from lcia.core.params import trainable
from lcia.data.prompts import IGNORE_INDEX
from lcia.methods.base import Capabilities, Method, MethodParams, TrainContext, register
from lcia.methods.replay import Replay
from lcia.models.forward import answer_forward


def ema_coefficient(step: int, ema_alpha: float) -> float:
    """The slow copy's weight on itself after optimizer step ``step`` (1-based, as the official callback's)."""
    return min(1.0 - 1.0 / (step + 1), ema_alpha)


def consistency_loss(fast: tuple[torch.Tensor, ...], slow: tuple[torch.Tensor, ...], mask: torch.Tensor):
    """Mean over layers, real tokens (``mask``) and features of (fast - max(fast, slow))^2.

    The official target is ``where(fast > slow, fast, slow)``: only positions where the slow activation is the
    larger one contribute, and their gradient pulls the fast activation up toward it."""
    weights = mask.unsqueeze(-1).float()
    per_layer = []
    for h_fast, h_slow in zip(fast, slow, strict=True):
        h_fast, h_slow = h_fast.float(), h_slow.detach().float()
        target = torch.where(h_fast > h_slow, h_fast, h_slow)
        squared = (h_fast - target) ** 2 * weights
        per_layer.append(squared.sum() / (weights.sum() * h_fast.shape[-1]))
    return torch.stack(per_layer).mean()


def replay_weights(ctx: TrainContext, drawn: list, mine: dict) -> tuple[float, float]:
    """This rank's shares of the replayed answer tokens and of the replayed tokens, times the ranks (1.0 on one
    process): the ranks' mean of rank-local means so weighed is the whole replay's mean, as the loop weighs
    the new examples."""
    world = distributed.world_size()
    if world == 1:
        return 1.0, 1.0
    whole = ctx.inputs(drawn)
    answers = lambda inputs: int((inputs["labels"][:, 1:] != IGNORE_INDEX).sum())  # noqa: E731
    tokens = lambda inputs: int(inputs["attention_mask"].sum())  # noqa: E731
    return answers(mine) * world / answers(whole), tokens(mine) * world / tokens(whole)


@register("ilora")
class ILora(Method):
    """I-LoRA: replay with a fast LoRA held to the hidden states of its slow, interpolated copy."""

    capabilities = Capabilities(ddp=True, needs_old_data=True)

    class Params(MethodParams):
        ema_alpha: float = Field(
            0.25, ge=0.0, le=1.0, description="the slow LoRA's weight on itself per step (capped by 1 - 1/(step+1))"
        )
        reg_weight: NonNegativeFloat = Field(1.0, description="weight of the hidden-state consistency loss")
        buffer_size: NonNegativeInt = Field(500, description="the most replay examples kept")
        sampling: Literal["reservoir", "balanced"] = Field(
            "reservoir", description="the buffer: reservoir (official) | balanced (an equal share per task)"
        )

    def __init__(self, params: Params | None = None):
        super().__init__(params)
        self.memory = Replay(Replay.Params(buffer_size=self.params.buffer_size, sampling=self.params.sampling))
        self.slow: dict[str, torch.Tensor] = {}  # the slow LoRA: one fp32 tensor per trainable tensor
        self.running = self._fresh_running()
        self.per_stage: list[dict] = []

    @staticmethod
    def _fresh_running() -> dict[str, float]:
        return {"replay_batches": 0, "consistency": 0.0, "replay_loss": 0.0}

    def before_task(self, ctx: TrainContext) -> None:
        # The slow copy starts each stage as the fast one: the official reset after a stage (and, for the first
        # stage, the same function as the official freshly initialised adapter, whose B is zero).
        self.slow = {n: p.detach().float().clone() for n, p in trainable(ctx.model).items()}
        self.running = self._fresh_running()

    def _replayed(self, rows: int, seed: int) -> list:
        """``rows`` examples of the buffer drawn by ``seed``: the same draw on every rank and in a resumed run."""
        pool = [example for kept in self.memory.buffer.values() for example in kept]
        chosen = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:rows].tolist()
        return [pool[i] for i in chosen]

    @staticmethod
    def _seed(ctx: TrainContext) -> int:
        """One seed per micro-batch: the loop's seed of the stage, the step, the micro-batch within the step."""
        return (torch.initial_seed() * 1_000_003 + ctx.step * 1_000 + ctx.micro) % 2**63

    def loss(self, ctx: TrainContext, batch: dict, outputs: Any) -> torch.Tensor | None:
        # As many replayed rows as the micro-batch has, drawn whole on every rank; each rank replays its share.
        drawn = self._replayed(ctx.batch_rows or batch["input_ids"].shape[0], self._seed(ctx))
        examples = distributed.my_share(drawn)
        if not examples or ctx.share == 0:  # the first stage (nothing to replay), or a rank left out of the batch
            return None
        model = ctx.model
        replay = ctx.inputs(examples) | {"output_hidden_states": True}
        fast = answer_forward(model, replay)
        slow_params = {n: self.slow[n].to(device=p.device, dtype=p.dtype) for n, p in trainable(model).items()}
        with torch.no_grad():
            slow = answer_forward(model, replay, params=slow_params)
        consistency = consistency_loss(fast.hidden_states, slow.hidden_states, replay["attention_mask"])
        self._record(ctx, float(consistency.detach()), float(fast.loss.detach()))
        loss_weight, token_weight = replay_weights(ctx, drawn, replay)
        replayed = fast.loss * loss_weight / 2 + self.params.reg_weight * consistency * token_weight
        # The loop adds outputs.loss and weighs the sum by ctx.share: the ranks' mean of what they train on is
        # (L_new + L_replay) / 2 + reg_weight * consistency over the whole micro-batch and its whole replay.
        return replayed / ctx.share - outputs.loss / 2

    def _record(self, ctx: TrainContext, consistency: float, replay_loss: float) -> None:
        ctx.log["ilora_consistency"], ctx.log["ilora_replay_loss"] = consistency, replay_loss
        self.running["replay_batches"] += 1
        self.running["consistency"] += consistency
        self.running["replay_loss"] += replay_loss

    def after_optimizer_step(self, ctx: TrainContext) -> None:
        alpha = ema_coefficient(ctx.step, self.params.ema_alpha)
        with torch.no_grad():
            for name, p in trainable(ctx.model).items():
                self.slow[name].mul_(alpha).add_(p.detach().float(), alpha=1.0 - alpha)

    def after_task(self, ctx: TrainContext) -> None:
        count = self.running["replay_batches"]
        means = {k: round(self.running[k] / count, 6) if count else None for k in ("consistency", "replay_loss")}
        self.per_stage.append({"stage": ctx.stage, "replay_batches": count, **means})
        self.memory.after_task(ctx)  # the stage's examples enter the buffer: later stages replay them

    def summary(self) -> dict[str, Any]:
        return {
            "ema_alpha": self.params.ema_alpha,
            "reg_weight": self.params.reg_weight,
            "answers": "fast",
            **self.memory.summary(),
            "per_stage": self.per_stage,
        }

    @classmethod
    def report_lines(cls, run) -> list[str]:
        summary = run.results.get("method", {})
        stages = [s for s in summary.get("per_stage", []) if s.get("replay_batches")]
        if not stages:
            return []
        means = ", ".join(
            f"stage {s['stage']} {s['consistency']:.3g} (replay loss {s['replay_loss']:.3g})" for s in stages
        )
        return [
            f"I-LoRA (ema_alpha {summary['ema_alpha']}, reg_weight {summary['reg_weight']}, buffer "
            f"{sum(summary.get('kept', {}).values())} examples): mean consistency loss per stage: {means}."
        ]

    def artifacts(self) -> dict[str, Any]:
        return self.memory.artifacts()

    def state_dict(self) -> dict[str, Any]:
        return {
            "memory": self.memory.state_dict(),
            "slow": self.slow,
            "running": dict(self.running),
            "per_stage": self.per_stage,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
        self.slow = dict(state["slow"])
        self.running, self.per_stage = dict(state["running"]), list(state["per_stage"])
