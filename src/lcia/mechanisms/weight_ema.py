"""The EMA of trainable weights with a fixed or a dynamic coefficient (the paper's core mechanism).

theta_t: a trainable tensor after optimizer step t; ema_t: its EMA; g_t: the gradient that step used
(accumulated, after clipping). Once per optimizer step, per tensor, with every vector quantity reduced
to its L1 norm (``norm="sum"``, as the paper and its code do, or the per-element mean, ``norm="mean"``):

    fixed     c = beta                                              (weighs the old EMA)
    official  c = m (1 + |g_t|) / (|theta_t - ema_{t-1}| |g_t - g_{t-1}|)             (weighs the new weights)
    paper     c = m (1 + |g_t|) |theta_t - theta_{t-1}| / (|theta_t - ema_{t-1}| |g_t - g_{t-1}|)
                                                                    (weighs the old EMA)
    scaled    c = m 2 |g_t| |theta_t - theta_{t-1}| / (|theta_t - ema_{t-1}| |g_t - g_{t-1}|),
              norms as per-element means                            (weighs the old EMA)

``official`` is the formula of the paper's released code (multiplier 2, fallback 0.01); ``paper`` is
the paper's closed form beta = (L' + 1) / ((theta_t - ema_{t-1}) L'') with the second derivative as the
difference quotient (g_t - g_{t-1}) / (theta_t - theta_{t-1}). ``scaled`` is the same derivation with
per-element means instead of sums and the stability term weighed by the gradient's own scale instead
of the constant 1: a dimensionless coefficient that does not depend on the tensor's size, the loss's
scale or the weights' scale (docs/ema.md derives it and shows the measurements behind it).

A coefficient outside (0, 1), or not finite, is replaced by ``fallback`` and counted with its reason;
nothing falls back silently. Then

    ema_t = (1 - w) ema_{t-1} + w theta_t,   w = c if the form weighs the new weights else 1 - c.

State (EMA, previous gradient and weights) is kept in fp32 whatever the model's dtype. Sharded
parameters (FSDP2 DTensors) are handled shard by shard with all-reduced L1 sums, so every rank gets
the coefficient of the whole tensor; under DDP gradients are already synchronised, so every rank
computes the same coefficient from the same numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch

from lcia.errors import LciaError

FORMS = ("fixed", "official", "paper")
REASONS = ("out_of_range", "nonfinite", "first_step")  # why a coefficient fell back


@dataclass(frozen=True)
class EmaSettings:
    form: Literal["fixed", "official", "paper"] = "official"
    beta: float = 0.99  # the fixed form's coefficient (on the old EMA)
    multiplier: float = 2.0  # m in the formulas
    fallback: float = 0.01  # used when the formula leaves (0, 1); in the form's own convention
    weighs: Literal["new", "old"] = "new"  # which side the coefficient multiplies
    norm: Literal["sum", "mean"] = "sum"  # L1 norms as sums (paper, code) or per-element means
    stability: Literal["one", "gradient"] = "one"  # weight of the stability term: 1 (paper, code) or |g|
    init: Literal["first_step", "task_start"] = "first_step"  # when each task's EMA starts
    swap_at_task_end: bool = True  # the EMA replaces the trained weights when a task ends

    def __post_init__(self):
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {self.form!r}")
        if not 0 < self.beta < 1 or not 0 < self.fallback < 1:
            raise ValueError("beta and fallback must lie inside (0, 1)")


PRESETS: dict[str, EmaSettings] = {
    "fixed": EmaSettings(form="fixed", beta=0.99, weighs="old"),
    "official": EmaSettings(form="official", multiplier=2.0, fallback=0.01, weighs="new"),
    "paper": EmaSettings(form="paper", multiplier=1.0, fallback=0.99, weighs="old"),
    "scaled": EmaSettings(form="paper", multiplier=1.0, fallback=0.99, weighs="old", norm="mean", stability="gradient"),
}


def settings_for(preset: str, **overrides: Any) -> EmaSettings:
    if preset not in PRESETS:
        raise ValueError(f"unknown EMA preset {preset!r} (known: {', '.join(PRESETS)})")
    unknown = sorted(set(overrides) - set(EmaSettings.__dataclass_fields__))
    if unknown:
        raise ValueError(
            f"unknown parameter {unknown[0]!r} "
            f"(known: preset, log_every, {', '.join(EmaSettings.__dataclass_fields__)})"
        )
    return replace(PRESETS[preset], **overrides)


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a tensor: the local shard of a DTensor, the tensor itself otherwise."""
    return t.to_local() if hasattr(t, "to_local") else t


def _all_reduce_sums(sums: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
    """Sum per-shard L1 norms over the ranks that hold the shards of sharded tensors."""
    groups = {}
    for t in tensors:
        mesh = getattr(t, "device_mesh", None)
        if mesh is not None and any(p.is_shard() for p in t.placements):
            groups.setdefault(id(mesh), mesh)
    for mesh in groups.values():  # one collective per mesh (FSDP uses one)
        torch.distributed.all_reduce(sums, group=mesh.get_group())
    return sums


class DynamicEma:
    """The EMA of a set of named trainable tensors, updated once per optimizer step.

    ``start_task`` / ``update`` / ``finish_task`` are called by the EMA methods of ``lcia.methods`` and
    by ``lcia.integrations.DynamicEmaCallback`` (for a stock Hugging Face Trainer).
    """

    def __init__(self, settings: EmaSettings):
        self.settings = settings
        self.ema: dict[str, torch.Tensor] = {}
        self.prev_grad: dict[str, torch.Tensor] = {}
        self.prev_param: dict[str, torch.Tensor] = {}
        self.counts = {"updates": 0, "inside": 0, **{r: 0 for r in REASONS}}
        self.last: dict[str, Any] = {}  # the last step's coefficients and norms, for logging

    # --- one task ----------------------------------------------------------------------------------
    def start_task(self, params: dict[str, torch.Tensor]) -> None:
        self.ema, self.prev_grad, self.prev_param, self.last = {}, {}, {}, {}
        if self.settings.init == "task_start":
            self.ema = {n: _local(p.detach()).float().clone() for n, p in params.items()}

    def finish_task(self, params: dict[str, torch.Tensor]) -> None:
        if self.settings.swap_at_task_end and self.ema:
            with torch.no_grad():
                for name, p in params.items():
                    _local(p.data).copy_(self.ema[name])

    @torch.no_grad()
    def update(self, params: dict[str, torch.Tensor]) -> None:
        """One EMA step after the optimizer step, from each tensor's weights and the gradient it used."""
        names = list(params)
        missing = [n for n in names if params[n].grad is None]
        if missing:
            raise LciaError(
                f"dynamic EMA: trainable tensor {missing[0]} has no gradient at this optimizer step "
                f"({len(missing)} such tensors): freeze it or make it take part in the loss"
            )
        theta = [_local(params[n].detach()).float() for n in names]
        grad = [_local(params[n].grad).float() for n in names]
        if not self.ema:  # init="first_step": the EMA starts at the weights after the task's first step
            self.ema = {n: t.clone() for n, t in zip(names, theta)}
            self._remember(names, theta, grad)
            return
        ema = [self.ema[n] for n in names]
        self.counts["updates"] += len(names)
        coefficient, norms = self._coefficients(names, params, theta, grad, ema)
        weight = coefficient if self.settings.weighs == "new" else 1.0 - coefficient
        for e, t, w in zip(ema, theta, weight.tolist()):
            e.lerp_(t, w)  # ema + w (theta - ema)
        self._remember(names, theta, grad)
        self.last = {"coefficient": dict(zip(names, coefficient.tolist())), "norms": norms}

    def _remember(self, names, theta, grad) -> None:
        self.prev_grad = {n: g.clone() for n, g in zip(names, grad)}
        if self.settings.form == "paper":
            self.prev_param = {n: t.clone() for n, t in zip(names, theta)}

    def _coefficients(self, names, params, theta, grad, ema) -> tuple[torch.Tensor, dict]:
        s, n = self.settings, len(names)
        if s.form == "fixed":
            self.counts["inside"] += n
            return torch.full((n,), s.beta, dtype=torch.float64), {}
        if not self.prev_grad:  # init="task_start": no previous gradient on the first step
            self.counts["first_step"] += n
            return torch.full((n,), s.fallback, dtype=torch.float64), {}
        rows = [grad, torch._foreach_sub(theta, ema), torch._foreach_sub(grad, [self.prev_grad[k] for k in names])]
        if s.form == "paper":
            rows.append(torch._foreach_sub(theta, [self.prev_param[k] for k in names]))
        sums = torch.stack([torch.stack(torch._foreach_norm(row, 1)) for row in rows]).double()
        sums = _all_reduce_sums(sums, [params[k] for k in names])
        if s.norm == "mean":
            sums = sums / torch.tensor([params[k].numel() for k in names], dtype=torch.float64, device=sums.device)
        g, dist, dgrad = sums[0], sums[1], sums[2]
        c = s.multiplier * ((1 if s.stability == "one" else g) + g) / (dist * dgrad)
        if s.form == "paper":
            c = c * sums[3]
        finite = torch.isfinite(c)
        inside = finite & (c > 0) & (c < 1)
        self.counts["inside"] += int(inside.sum())
        self.counts["nonfinite"] += int((~finite).sum())
        self.counts["out_of_range"] += int((finite & ~inside).sum())
        keys = ("grad", "dist", "dgrad", "dparam")
        norms = {key: dict(zip(names, row.tolist())) for key, row in zip(keys, sums)}
        norms["raw"] = dict(zip(names, c.tolist()))
        return torch.where(inside, c, torch.full_like(c, s.fallback)), norms

    # --- resuming ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "average": dict(self.ema),
            "prev_grad": dict(self.prev_grad),
            "prev_param": dict(self.prev_param),
            "counts": dict(self.counts),
            "settings": asdict(self.settings),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["settings"] != asdict(self.settings):
            raise LciaError(f"EMA state was saved with settings {state['settings']}, not {asdict(self.settings)}")
        self.ema = {k: v.float() for k, v in state["average"].items()}
        self.prev_grad = {k: v.float() for k, v in state["prev_grad"].items()}
        self.prev_param = {k: v.float() for k, v in state["prev_param"].items()}
        self.counts = dict(state["counts"])


def refuse_unsupported_sharding(*, deepspeed: bool, fsdp_version: int | None) -> None:
    """Stop where the coefficient would silently be that of a shard: DeepSpeed and FSDP1.

    DeepSpeed keeps gradients out of ``param.grad`` (ZeRO partitions them) and FSDP1 flattens
    parameters into one shard per rank; FSDP2's DTensors and DDP are handled exactly.
    """
    if deepspeed:
        raise LciaError(
            "the EMA methods do not run under DeepSpeed (its gradients are not in param.grad): use DDP or FSDP2"
        )
    if fsdp_version is not None and fsdp_version != 2:
        raise LciaError(f"the EMA methods need FSDP version 2 (DTensor shards), not version {fsdp_version}")
