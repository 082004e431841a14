"""``grouping`` (one LoRA adapter per group of similar instructions) and ``lcia`` (grouping + dynamic EMA).

Qiao et al., *Large Continual Instruction Assistant*, ICML 2025. Before each task its instructions are
compared with each group's (``lcia.mechanisms.codebook``): at or above the threshold the group's adapter keeps
training; below it a new adapter and group are added. Every test instance is then routed by its own
instruction to the group holding the most similar one, and answered by that group's adapter.
``lcia`` trains with the dynamic EMA of ``dema`` on the active group's adapter (the paper's full method).

Parameters (``method.params``):
    similarity    tfidf (default: the official code's TF-IDF cosine) | embedding (all-MiniLM-L6-v2)
    threshold     a number, or a preset of the backend: original (tfidf 0.90, embedding 0.75; the default)
                  | diverse (tfidf 0.30, embedding 0.50), for streams with paraphrased instructions
    adapter_init  fresh (default: a new group's adapter starts as PEFT initialises LoRA, i.e. at the base
                  model, as the paper's figure) | fork (a copy of the adapter trained last, as the official code)
    ``lcia`` also takes every ``dema`` parameter (preset, multiplier, fallback, ...).

Stores the codebook (a few strings per group) and one adapter per group: memory and saved size grow
with the number of groups, a step costs what ``seq-lora``'s does. Tasks of different groups never
share weights, so they cannot overwrite each other; the price is that they cannot help each other.
"""

from __future__ import annotations

from typing import Any

import torch

from lcia.mechanisms.codebook import Codebook, Group
from lcia.mechanisms.similarity import build_similarity, resolve_threshold
from lcia.methods.base import Capabilities, Method, TrainContext, register
from lcia.methods.ema import DynamicEmaMethod
from lcia.models.lora import add_lora


def copy_adapter(model, source: str, target: str) -> None:
    """Give adapter ``target`` the weights of adapter ``source`` (same LoRA config)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, param in params.items():
            if f".{target}." in name:
                param.copy_(params[name.replace(f".{target}.", f".{source}.")])


@register("grouping")
class Grouping(Method):
    # DDP: every rank makes the same decisions from the same instructions, and the training loop wraps
    # each stage's model after before_task, so a new group's adapter is in the wrapper.
    capabilities = Capabilities(ddp=True, sharded=False)

    def __init__(
        self, similarity: str = "tfidf", threshold: float | str = "original", adapter_init: str = "fresh", **params
    ):
        super().__init__(**params)
        if adapter_init not in ("fresh", "fork"):
            raise ValueError(f"adapter_init must be 'fresh' or 'fork', got {adapter_init!r}")
        self.codebook = Codebook(build_similarity(similarity), resolve_threshold(similarity, threshold))
        self.adapter_init = adapter_init
        self.active = "group-0"  # the adapter being trained (created by setup, before any group exists)
        self.decisions: list[dict] = []

    def setup(self, model, lora):
        self.lora = lora
        return add_lora(model, lora, adapter_name=self.active)

    def before_task(self, ctx: TrainContext) -> None:
        model = ctx.accelerator.unwrap_model(ctx.model)
        instructions = list(dict.fromkeys(ex.instruction for task in ctx.tasks for ex in task.train))
        decision = self.codebook.assign(instructions)
        if decision.reused:
            adapter = decision.best
        elif not self.codebook.groups:  # the first task takes the adapter made by setup
            adapter = self.active
        else:
            adapter = f"group-{len(self.codebook.groups)}"
            model.add_adapter(adapter, self.lora)
            if self.adapter_init == "fork":
                copy_adapter(model, self.active, adapter)
        model.set_adapter(adapter)
        self.active = adapter
        for task in ctx.tasks:
            self.codebook.add(adapter, instructions, task.name)
        record = {
            "stage": ctx.stage,
            "step": 0,
            "tasks": [t.name for t in ctx.tasks],
            "adapter": adapter,
            "new_group": not decision.reused,
            "similarities": {k: round(v, 4) for k, v in decision.similarities.items()},
        }
        self.decisions.append(record)
        ctx.emit("grouping", record)
        super().before_task(ctx)

    def route(self, example) -> str | None:
        return self.codebook.route(example.instruction)[0] if self.codebook.groups else None

    def task_adapters(self) -> dict[str, str]:
        return self.codebook.task_adapters()

    def summary(self) -> dict[str, Any]:
        return super().summary() | {"grouping": {**self.codebook.to_json(), "adapter_init": self.adapter_init}}

    def artifacts(self) -> dict[str, Any]:
        return {"codebook.json": self.codebook.to_json() | {"decisions": self.decisions}}

    def state_dict(self) -> dict[str, Any]:
        groups = [[g.adapter, g.instructions, g.tasks] for g in self.codebook.groups]
        return super().state_dict() | {"groups": groups, "active": self.active, "decisions": self.decisions}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        groups = [Group(a, list(i), list(t)) for a, i, t in state["groups"]]
        self.codebook = Codebook(self.codebook.similarity, self.codebook.threshold, groups)
        self.active, self.decisions = state["active"], list(state["decisions"])

    def restore_model(self, model) -> None:
        for group in self.codebook.groups:
            if group.adapter not in model.peft_config:
                model.add_adapter(group.adapter, self.lora)
        model.set_adapter(self.active)


@register("lcia")
class Lcia(Grouping, DynamicEmaMethod):
    """Instruction grouping with the dynamic EMA on each group's adapter: the paper's full method."""
