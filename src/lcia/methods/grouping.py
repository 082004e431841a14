"""``grouping`` (one LoRA adapter per group of similar instructions) and ``lcia`` (grouping + dynamic EMA).

Qiao et al., *Large Continual Instruction Assistant*, ICML 2025. Before each task its instructions are
compared with each group's (``lcia.mechanisms.codebook``): at or above the threshold the group's adapter keeps
training; below it a new adapter and group are added. Every test instance is then routed by its own
instruction to the group holding the most similar one, and answered by that group's adapter.
``lcia`` trains with the dynamic EMA of ``dema`` on the active group's adapter (the paper's full method).

Parameters: ``similarity``, ``threshold`` and ``adapter_init`` (``GroupingParams``); ``lcia`` also takes
every ``dema`` parameter (preset, multiplier, fallback, ...). The codebook is kept as codebook.json beside
each stage's adapters, so a saved stage routes in ``lcia eval | ask | route`` as it did in the run;
``lcia report`` shows the groups formed.

Stores the codebook (a few strings per group) and one adapter per group: memory and saved size grow
with the number of groups, a step costs what ``seq-lora``'s does. Tasks of different groups never
share weights, so they cannot overwrite each other; the price is that they cannot help each other.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, ValidationInfo, field_validator

from lcia.core.files import read_json
from lcia.data.schema import Example
from lcia.mechanisms.codebook import Codebook, Group
from lcia.mechanisms.similarity import build_similarity, resolve_threshold
from lcia.methods.base import Capabilities, Method, MethodParams, Route, TrainContext, register
from lcia.methods.ema import DynamicEmaMethod
from lcia.models.lora import add_lora
from lcia.reporting.tables import markdown_table

CODEBOOK = "codebook.json"


class GroupingParams(MethodParams):
    similarity: Literal["tfidf", "embedding"] = Field(
        "tfidf", description="tfidf: the official code's TF-IDF cosine; embedding: all-MiniLM-L6-v2 (paraphrases)"
    )
    threshold: float | Literal["original", "diverse"] = Field(
        "original",
        description="a number in [0, 1], or a preset of the backend: original (tfidf 0.90, embedding 0.75) | "
        "diverse (tfidf 0.30, embedding 0.50), for streams with paraphrased instructions",
    )
    adapter_init: Literal["fresh", "fork"] = Field(
        "fresh",
        description="a new group's adapter starts as PEFT initialises LoRA (fresh, as the paper's figure) or as "
        "a copy of the adapter trained last (fork, as the official code)",
    )

    @field_validator("threshold")
    @classmethod
    def _threshold_valid(cls, value, info: ValidationInfo):
        if "similarity" in info.data:
            resolve_threshold(info.data["similarity"], value)
        return value


def copy_adapter(model, source: str, target: str) -> None:
    """Give adapter ``target`` the weights of adapter ``source`` (same LoRA config)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, param in params.items():
            if f".{target}." in name:
                param.copy_(params[name.replace(f".{target}.", f".{source}.")])


@register("grouping")
class Grouping(Method):
    """One LoRA adapter per group of similar instructions; each test instance routed by its instruction."""

    # DDP: every rank makes the same decisions from the same instructions, and the training loop wraps
    # each stage's model after before_task, so a new group's adapter is in the wrapper.
    capabilities = Capabilities(ddp=True)
    Params = GroupingParams

    def __init__(self, params: GroupingParams | None = None):
        super().__init__(params)
        similarity = self.params.similarity
        self.codebook = Codebook(build_similarity(similarity), resolve_threshold(similarity, self.params.threshold))
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
            if self.params.adapter_init == "fork":
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

    def explain_route(self, example: Example) -> Route:
        if not self.codebook.groups:
            return super().explain_route(example)
        adapter, scores = self.codebook.route(example.instruction)
        holds = {g.adapter: ", ".join(g.tasks) for g in self.codebook.groups}
        return Route(adapter, scores, holds, f"nearest instruction, {self.codebook.similarity.name} similarity")

    def task_adapters(self) -> dict[str, str]:
        return self.codebook.task_adapters()

    def artifacts(self) -> dict[str, Any]:
        return super().artifacts() | {CODEBOOK: self.codebook.to_json() | {"decisions": self.decisions}}

    def load_artifacts(self, folder) -> None:
        data = read_json(folder / CODEBOOK)
        self.codebook = Codebook.from_json(data, build_similarity(data["similarity"]))
        super().load_artifacts(folder)

    def summary(self) -> dict[str, Any]:
        return super().summary() | {"grouping": {**self.codebook.to_json(), "adapter_init": self.params.adapter_init}}

    @classmethod
    def report_lines(cls, run) -> list[str]:
        grouping = run.results.get("method", {}).get("grouping")
        if not grouping:
            return super().report_lines(run)
        rows = [[g["adapter"], ", ".join(g["tasks"]), str(len(g["instructions"]))] for g in grouping["groups"]]
        return [
            f"Groups formed ({grouping.get('similarity')} similarity, threshold {grouping.get('threshold')}):",
            markdown_table(["adapter", "tasks", "instructions"], rows),
        ] + super().report_lines(run)

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

    class Params(GroupingParams, DynamicEmaMethod.Params):
        pass
