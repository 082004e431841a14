"""``ema`` (a fixed EMA of the LoRA weights) and ``dema`` (the LCIA paper's dynamic EMA).

Qiao et al., *Large Continual Instruction Assistant*, ICML 2025: after every optimizer step, each
trainable tensor's EMA moves toward the new weights by a coefficient that balances stability (stay at
the old EMA) against plasticity (keep the new weights' loss); at the end of a task the EMA replaces the
trained weights. ``lcia.mechanisms.weight_ema`` holds the formulas; the presets are

    ema   preset=fixed     beta 0.99 on the old EMA
    dema  preset=official  the released code: 2 (1 + |g|) / (|theta - ema| |g - g_prev|) on the new weights
          preset=paper     the paper's closed form, difference-quotient second derivative, on the old EMA
          preset=scaled    the paper's form on per-element means: the same coefficient for any tensor size

Stores the EMA and the previous gradient (and weights, for ``paper`` and ``scaled``) in fp32: two or
three copies of the adapter. Any field of ``lcia.mechanisms.weight_ema.EmaSettings`` can be overridden in
``method.params`` (``multiplier``, ``fallback``, ``init``, ``norm``, ...). Logs per step the share of
coefficients inside (0, 1) and their median, and every ``log_every`` steps each tensor's coefficient
and L1 norms to ema_coefficients.jsonl.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from accelerate.utils import DistributedType

from lcia.core.params import trainable
from lcia.mechanisms.weight_ema import DynamicEma, refuse_unsupported_sharding, settings_for
from lcia.methods.base import Capabilities, Method, TrainContext, register


class _EmaBase(Method):
    capabilities = Capabilities(ddp=True, sharded=True)
    default_preset = ""

    def __init__(self, preset: str | None = None, log_every: int = 10, **overrides: Any):
        self.engine = DynamicEma(settings_for(preset or self.default_preset, **overrides))
        self.preset = preset or self.default_preset
        self.log_every = log_every
        self.per_stage: list[dict] = []  # the engine's counts of each finished stage

    def before_task(self, ctx: TrainContext) -> None:
        kind, state = ctx.accelerator.distributed_type, ctx.accelerator.state
        refuse_unsupported_sharding(
            deepspeed=kind == DistributedType.DEEPSPEED,
            fsdp_version=state.fsdp_plugin.fsdp_version if kind == DistributedType.FSDP else None,
        )
        self.engine.start_task(trainable(ctx.model))

    def after_optimizer_step(self, ctx: TrainContext) -> None:
        self.engine.update(trainable(ctx.model))
        coefficients = list(self.engine.last.get("coefficient", {}).values())
        if not coefficients:
            return
        if "raw" in self.engine.last["norms"]:
            raw = list(self.engine.last["norms"]["raw"].values())
            ctx.log["ema_inside"] = sum(0 < c < 1 for c in raw) / len(raw)
        ctx.log["ema_coefficient_median"] = sorted(coefficients)[len(coefficients) // 2]
        if ctx.step % self.log_every == 0:
            ctx.emit("ema_coefficients", {"stage": ctx.stage, "step": ctx.step, **self.engine.last})

    def after_task(self, ctx: TrainContext) -> None:
        self.engine.finish_task(trainable(ctx.model))
        counts = {k: v - sum(s[k] for s in self.per_stage) for k, v in self.engine.counts.items()}
        self.per_stage.append({"stage": ctx.stage, **counts})
        ctx.log.update(counts)

    def summary(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "settings": asdict(self.engine.settings),
            "counts": self.engine.counts,
            "per_stage": self.per_stage,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"engine": self.engine.state_dict(), "per_stage": self.per_stage}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.engine.load_state_dict(state["engine"])
        self.per_stage = list(state["per_stage"])


@register("ema")
class FixedEma(_EmaBase):
    default_preset = "fixed"


@register("dema")
class DynamicEmaMethod(_EmaBase):
    default_preset = "official"
