"""``hide``: HiDe-LLaVA's hierarchical decoupling: task-specific top layer(s), task-general fusion below.

Guo, Zeng, Xiang, Zhu, Wang, Zhang and Liu, *HiDe-LLaVA: Hierarchical Decoupling for Continual Instruction Tuning
of Multimodal Large Language Model*, ACL 2025 (official code: github.com/Ghy0501/HiDe-LLaVA, the
``HiDeMOELora*`` classes of ``HiDe/peft/tuners/clitmoelora.py`` and the anchors of ``llava/model/llava_arch.py``).
A CKA analysis finds the top decoder layer task-specific and the others general, so task K trains one LoRA of its
own (``task-K``, alone active and trainable, fresh as every expert of the official code) and afterwards

* the LoRA tensors of the lower layers are fused over tasks 1..K, as the official code at inference: the A
  matrices and the B matrices each summed with weight 1 (``merge_weight = 1.0``, no average), so a lower layer
  answers with ``scaling * (B_1 + ... + B_K)(A_1 + ... + A_K) x``; every adapter gets that fusion;
* the tensors of the top ``top_layers`` layers (the official code: the last one, layer 31 of LLaVA-7B) stay the
  task's own; the task's prototype is kept: a sample of its training instances' text (instruction + input).

A test instance is answered by the adapter of the prototype most similar to its text (top-1), measured with
lcia's similarity backend (``lcia.mechanisms.similarity``) as the mean similarity to the prototype's texts. The
official code compares CLIP image and text features with each task's mean features (cosine, the two modalities
averaged) and mixes the top layer's experts by softmax(similarity / 0.1); lcia's routing returns one adapter per
instance, so the mixture becomes its most weighted expert (docs/baselines.md lists every departure).

Parameters (``method.params``):
    top_layers      task-specific top decoder layers (default 1: the official code's last layer)
    fusion          sum (the official code) | mean (each of A and B averaged over the tasks)
    similarity      tfidf | embedding: the routing backend (as ``grouping``'s)
    prototype_size  training instances kept per task as its prototype (default 32)

Keeps one adapter per task (the lower-layer tensors of all of them are the same fusion, so memory and saved size
grow like ``olora``'s) and ``prototype_size`` strings per task, saved as hide.json beside each stage's adapters;
a step costs what ``seq-lora``'s does, the fusion a pass over the LoRA tensors per task, and routing one
similarity per (instance, prototype text).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import torch
from peft import LoraConfig, PeftModel
from pydantic import Field, NonNegativeInt, PositiveInt
from transformers import PreTrainedModel

from lcia.core.files import read_json
from lcia.data.schema import Example
from lcia.mechanisms.similarity import build_similarity
from lcia.methods.base import Capabilities, Method, MethodParams, Route, TrainContext, register
from lcia.models.lora import add_lora, task_adapter

PROTOTYPES = "hide.json"
_LAYER = re.compile(r"\.layers\.(\d+)\.")


def layer_index(name: str) -> int | None:
    """The decoder layer a parameter belongs to (None: outside the numbered layers)."""
    match = _LAYER.search(name)
    return int(match.group(1)) if match else None


def top_layer_indices(names: list[str], top_layers: int) -> list[int]:
    """The ``top_layers`` highest layers holding LoRA tensors among ``names``."""
    indices = sorted({i for i in map(layer_index, names) if i is not None})
    return indices[max(0, len(indices) - top_layers) :]


def fuse(previous: torch.Tensor | None, new: torch.Tensor, tasks: int, fusion: str) -> torch.Tensor:
    """Task ``tasks``'s tensor folded into the fusion of the tasks before it (``previous``; None for the first)."""
    if previous is None:
        return new
    if fusion == "sum":
        return previous + new
    return (previous * (tasks - 1) + new) / tasks


def fuse_lower_layers(model: PeftModel, adapters: list[str], top_layers: int, fusion: str) -> tuple[list[int], int]:
    """After the task of ``adapters[-1]``: every adapter's LoRA tensors outside the top layers become the fusion
    over all the adapters' tasks; the top layers' stay each task's own. Returns (top layers, tensors fused)."""
    new = f".{adapters[-1]}."
    previous = f".{adapters[-2]}." if len(adapters) > 1 else None
    params = dict(model.named_parameters())
    lora = [name for name in params if new in name and ".lora_" in name]
    top = top_layer_indices(lora, top_layers)
    lower = [name for name in lora if layer_index(name) not in top]
    with torch.no_grad():
        for name in lower:
            # previous holds the fusion over the earlier tasks: the running form of the official sum over experts
            before = params[name.replace(new, previous)].float() if previous else None
            value = fuse(before, params[name].float(), len(adapters), fusion)
            for adapter in adapters:
                params[name.replace(new, f".{adapter}.")].copy_(value)
    return top, len(lower)


def share_whole_modules(model: PeftModel, source: str, targets: list[str]) -> None:
    """Copy ``source``'s copy of each module trained whole (a projector) into ``targets``': the official code has
    one projector, trained on through the tasks and used by every expert."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, param in params.items():
            if f".modules_to_save.{source}." in name:
                for target in targets:
                    params[name.replace(f".{source}.", f".{target}.")].copy_(param)


def instance_text(example: Example) -> str:
    """What routing compares: the instruction and the instance's input (the official code's CLIP text input)."""
    return "\n".join(part for part in (example.instruction, example.input) if part)


def sample(texts: list[str], size: int) -> list[str]:
    """``size`` distinct texts spread evenly over ``texts`` (all of them when fewer)."""
    distinct = list(dict.fromkeys(texts))
    if len(distinct) <= size:
        return distinct
    return [distinct[i * len(distinct) // size] for i in range(size)]


@register("hide")
class HiDe(Method):
    """HiDe-LLaVA: a LoRA per task in the top layer(s), routed by task prototypes; the lower layers' LoRAs fused."""

    class Params(MethodParams):
        top_layers: NonNegativeInt = Field(
            1, description="task-specific top decoder layers (the official code: the last one); the rest are fused"
        )
        fusion: Literal["sum", "mean"] = Field(
            "sum", description="lower-layer fusion of A and B over the tasks: sum (the official code) or mean"
        )
        similarity: Literal["tfidf", "embedding"] = Field(
            "tfidf", description="routing backend (the official code: CLIP features): tfidf or embedding (MiniLM)"
        )
        prototype_size: PositiveInt = Field(32, description="training instances kept per task as its prototype")

    # DDP: the new adapter is added in before_task, before the loop wraps the model, and every rank fuses the same
    # (synchronised) weights. DoRA is refused: its magnitude vectors are no deltas to sum across tasks.
    capabilities = Capabilities(ddp=True, lora_variants=frozenset({"lora", "rslora"}))

    def __init__(self, params: Params | None = None):
        super().__init__(params)
        self.similarity = build_similarity(self.params.similarity)
        self.adapters: list[str] = []  # one per stage begun, in order; the last one trains
        self.prototypes: dict[str, list[str]] = {}  # adapter -> texts of its task's training instances
        self.tasks: dict[str, list[str]] = {}  # adapter -> the tasks it trained on
        self.top: list[int] = []  # the task-specific layers (indices), once known
        self.fused_tensors = 0
        self._routes: dict[str, Route] = {}

    def setup(self, model: PreTrainedModel, lora: LoraConfig) -> PeftModel:
        self.lora = lora
        return add_lora(model, lora, adapter_name="task-1")

    def before_task(self, ctx: TrainContext) -> None:
        model = ctx.accelerator.unwrap_model(ctx.model)
        name = task_adapter(model, ctx.stage, self.lora)
        if self.adapters:
            share_whole_modules(model, self.adapters[-1], [name])
        self.adapters.append(name)
        model.set_adapter(name)  # alone active and trainable: the official code trains only expert cur_task

    def after_task(self, ctx: TrainContext) -> None:
        model = ctx.accelerator.unwrap_model(ctx.model)
        name = self.adapters[-1]
        texts = [instance_text(example) for task in ctx.tasks for example in task.train]
        self.prototypes[name] = sample(texts, self.params.prototype_size)
        self.tasks[name] = [task.name for task in ctx.tasks]
        self.top, self.fused_tensors = fuse_lower_layers(
            model, self.adapters, self.params.top_layers, self.params.fusion
        )
        share_whole_modules(model, name, self.adapters[:-1])
        self._routes.clear()
        record = {"stage": ctx.stage, "step": ctx.step, "adapter": name, "top_layers": self.top}
        ctx.emit("hide", record | {"fused_tensors": self.fused_tensors})

    # --- routing ---------------------------------------------------------------------------------------
    def _route(self, text: str) -> Route:
        if not self.prototypes:  # nothing trained yet: the active adapter answers
            return Route(None)
        if text not in self._routes:
            scores = {a: float(self.similarity.matrix([text], texts).mean()) for a, texts in self.prototypes.items()}
            holds = {a: ", ".join(tasks) for a, tasks in self.tasks.items()}
            rule = f"top-1 task prototype, mean {self.similarity.name} similarity"
            self._routes[text] = Route(max(scores, key=scores.get), scores, holds, rule)
        return self._routes[text]

    def explain_route(self, example: Example) -> Route:
        return self._route(instance_text(example))

    def task_adapters(self) -> dict[str, str]:
        return {task: adapter for adapter, tasks in self.tasks.items() for task in tasks}

    # --- saved stages ----------------------------------------------------------------------------------
    def _codebook(self) -> dict[str, Any]:
        return {"similarity": self.similarity.name, "prototypes": self.prototypes, "tasks": self.tasks}

    def artifacts(self) -> dict[str, Any]:
        return {PROTOTYPES: self._codebook() | {"adapters": self.adapters, "top_layers": self.top}}

    def load_artifacts(self, folder: Path) -> None:
        data = read_json(folder / PROTOTYPES)
        self.similarity = build_similarity(data["similarity"])
        self.prototypes, self.tasks = dict(data["prototypes"]), dict(data["tasks"])
        self.adapters, self.top = list(data["adapters"]), list(data["top_layers"])
        self._routes.clear()

    def load_stage(self, model: PeftModel, folder: Path) -> PeftModel:
        return model.requires_grad_(False)

    # --- reporting -------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return self.params.model_dump() | {
            "adapters": self.adapters,
            "tasks": self.tasks,
            "top_layer_indices": self.top,
            "fused_tensors": self.fused_tensors,
        }

    @classmethod
    def report_lines(cls, run) -> list[str]:
        hide = run.results.get("method", {})
        if "adapters" not in hide:
            return []
        return [
            f"HiDe: task-specific layers {hide['top_layer_indices']} (one LoRA per task, routed top-1 by "
            f"{hide['similarity']} similarity to {len(hide['adapters'])} task prototypes); "
            f"{hide['fused_tensors']} lower-layer LoRA tensors fused ({hide['fusion']}) over the tasks."
        ]

    # --- resuming --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return self._codebook() | {"adapters": self.adapters, "top": self.top, "fused_tensors": self.fused_tensors}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.adapters, self.top = list(state["adapters"]), list(state["top"])
        self.prototypes = {a: list(texts) for a, texts in state["prototypes"].items()}
        self.tasks = {a: list(tasks) for a, tasks in state["tasks"].items()}
        self.fused_tensors = state["fused_tensors"]
        self._routes.clear()

    def restore_model(self, model: PeftModel) -> None:
        for name in self.adapters:
            if name not in model.peft_config:
                model.add_adapter(name, self.lora)
        if self.adapters:
            model.set_adapter(self.adapters[-1])
