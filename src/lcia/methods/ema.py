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
and L1 norms to ema_coefficients.jsonl; ``lcia report`` shows the share inside (0, 1) and a figure of the
coefficient per layer over training.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
from accelerate.utils import DistributedType
from pydantic import Field, PositiveInt, model_validator

from lcia.core.params import trainable
from lcia.mechanisms.weight_ema import PRESETS, DynamicEma, refuse_unsupported_sharding, settings_for
from lcia.methods.base import Capabilities, Method, MethodParams, TrainContext, register
from lcia.reporting import figures

LOG = "ema_coefficients"  # the per-tensor coefficients and norms, every log_every steps


def significant(record, digits: int = 5):
    """``record`` with every float to ``digits`` significant digits: the log is read and plotted, not replayed, and
    halves in size (gzipped) against full floats, which matters for studies committed run by run."""
    if isinstance(record, dict):
        return {key: significant(value, digits) for key, value in record.items()}
    return float(f"{record:.{digits}g}") if isinstance(record, float) else record


Preset = Literal[tuple(PRESETS)]
PRESET_HELP = "the coefficient's form and constants (lcia.mechanisms.weight_ema.PRESETS)"


class EmaParams(MethodParams):
    """A preset, and any of its settings overridden (None: the preset's)."""

    preset: Preset = Field("official", description=PRESET_HELP)
    log_every: PositiveInt = Field(10, description=f"steps between records of the coefficients in {LOG}.jsonl")
    form: Literal["fixed", "official", "paper"] | None = Field(None, description="the coefficient's formula")
    beta: float | None = Field(None, description="the fixed form's coefficient on the old EMA")
    multiplier: float | None = Field(None, description="m in the dynamic formulas")
    fallback: float | None = Field(None, description="the coefficient used when the formula leaves (0, 1)")
    weighs: Literal["new", "old"] | None = Field(None, description="which side the coefficient multiplies")
    norm: Literal["sum", "mean"] | None = Field(None, description="L1 norms as sums (paper, code) or per-element means")
    stability: Literal["one", "gradient"] | None = Field(None, description="weight of the stability term")
    init: Literal["first_step", "task_start"] | None = Field(None, description="when each task's EMA starts")
    swap_at_task_end: bool | None = Field(None, description="the EMA replaces the trained weights when a task ends")

    @model_validator(mode="after")
    def _settings_valid(self):
        self.settings()  # an unknown preset or a value out of range fails here, with the config's other errors
        return self

    def settings(self):
        overrides = self.model_dump(exclude={"preset", "log_every"}, exclude_none=True)
        overrides = {k: v for k, v in overrides.items() if k in EmaParams.model_fields}
        return settings_for(self.preset, **overrides)


class _EmaBase(Method):
    capabilities = Capabilities(ddp=True)
    Params = EmaParams

    def __init__(self, params: EmaParams | None = None):
        super().__init__(params)
        self.engine = DynamicEma(self.params.settings())
        self.per_stage: list[dict] = []  # the engine's counts of each finished stage

    def before_task(self, ctx: TrainContext) -> None:
        kind, state = ctx.accelerator.distributed_type, ctx.accelerator.state
        refuse_unsupported_sharding(
            deepspeed=kind == DistributedType.DEEPSPEED,
            fsdp_version=state.fsdp_plugin.fsdp_version if kind == DistributedType.FSDP else None,
        )
        self.engine.start_task(trainable(ctx.model))
        super().before_task(ctx)

    def after_optimizer_step(self, ctx: TrainContext) -> None:
        self.engine.update(trainable(ctx.model))
        coefficients = list(self.engine.last.get("coefficient", {}).values())
        if not coefficients:
            return
        if "raw" in self.engine.last["norms"]:
            raw = list(self.engine.last["norms"]["raw"].values())
            ctx.log["ema_inside"] = sum(0 < c < 1 for c in raw) / len(raw)
        ctx.log["ema_coefficient_median"] = sorted(coefficients)[len(coefficients) // 2]
        if ctx.step % self.params.log_every == 0:
            ctx.emit(LOG, {"stage": ctx.stage, "step": ctx.step, **significant(self.engine.last)})

    def after_task(self, ctx: TrainContext) -> None:
        self.engine.finish_task(trainable(ctx.model))
        counts = {k: v - sum(s[k] for s in self.per_stage) for k, v in self.engine.counts.items()}
        self.per_stage.append({"stage": ctx.stage, **counts})
        ctx.log.update(counts)
        super().after_task(ctx)

    def summary(self) -> dict[str, Any]:
        return super().summary() | {
            "preset": self.params.preset,
            "settings": asdict(self.engine.settings),
            "counts": self.engine.counts,
            "per_stage": self.per_stage,
        }

    @classmethod
    def report_lines(cls, run) -> list[str]:
        summary = run.results.get("method", {})
        counts = summary.get("counts")
        if not counts:
            return super().report_lines(run)
        settings = ", ".join(f"{k}={v}" for k, v in summary.get("settings", {}).items())
        lines = [f"EMA coefficient (preset {summary.get('preset')}; {settings}):", ""]
        if counts.get("updates"):
            per_stage = ", ".join(
                f"{s['inside'] / s['updates']:.0%}" for s in summary.get("per_stage", []) if s.get("updates")
            )
            lines.append(
                f"- inside (0, 1): {counts['inside'] / counts['updates']:.1%} of {counts['updates']:,} per-tensor "
                f"updates (counts.inside / counts.updates; out of range {counts.get('out_of_range', 0):,}, "
                f"non-finite {counts.get('nonfinite', 0):,}); per stage: {per_stage or 'n/a'}"
            )
        records = run.read_jsonl(f"{LOG}.jsonl")
        values = np.array([v for r in records for v in r["coefficient"].values() if v is not None], dtype=float)
        if values.size:
            low, median, high = np.percentile(values, [10, 50, 90])
            lines.append(
                f"- logged coefficients ({LOG}.jsonl, {len(records)} records): median {median:.3g}, "
                f"10th-90th percentile {low:.3g} to {high:.3g}"
            )
        return super().report_lines(run) + ["\n".join(lines)]

    @classmethod
    def report_figures(cls, run, directory: Path) -> list[tuple[str, Path]]:
        drawn = super().report_figures(run, directory)
        spans = run.stage_spans()
        offsets = {number: first for number, (first, _, _) in enumerate(spans, start=1)}
        steps, overall, per_layer = figures.per_layer_medians(run.read_jsonl(f"{LOG}.jsonl"), "coefficient", offsets)
        if not per_layer:
            return drawn
        path = directory / f"{run.slug}-ema.png"
        figures.per_layer_over_training(steps, overall, per_layer, spans, run.label, "EMA coefficient", path)
        return drawn + [("EMA coefficient per layer", path)]

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"engine": self.engine.state_dict(), "per_stage": self.per_stage}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.engine.load_state_dict(state["engine"])
        self.per_stage = list(state["per_stage"])


@register("ema")
class FixedEma(_EmaBase):
    """A fixed EMA of the trainable weights (beta 0.99 on the old EMA), swapped in at each task's end."""

    class Params(EmaParams):
        preset: Preset = Field("fixed", description=PRESET_HELP)


@register("dema")
class DynamicEmaMethod(_EmaBase):
    """The LCIA paper's dynamic EMA: a stability-plasticity coefficient from gradients and weights every step."""
