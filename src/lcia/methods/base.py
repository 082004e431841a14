"""The method API: one small class per continual-learning method, hooks around one training loop.

The training loop (``lcia.training.loop``) calls, in order, for every stage of the stream:

    before_task(ctx)                      once, before the first step of a stage
    for each optimizer step:
        loss = model loss + method.loss(ctx, batch, outputs)   (per micro-batch)
        backward; method.after_backward(ctx)                    (once per optimizer step, on the
        optimizer.step(); method.after_optimizer_step(ctx)       accumulated gradient)
    after_task(ctx)                       once, after the last step

and the evaluator asks ``route(example)`` which adapter answers each test example. ``state_dict`` /
``load_state_dict`` carry everything a method needs to resume, and ``restore_model`` rebuilds in a
fresh model what that state implies (e.g. the adapters of later groups) before weights are loaded.
Methods never touch files or the CLI: what they want kept goes through ``ctx.emit`` (JSON lines),
``summary`` (results.json) and ``artifacts`` (JSON or safetensors files the runner writes beside each
stage's adapters, which ``load_stage`` reads back when ``lcia eval | ask`` reuse a trained run).

A method is registered under its config name with ``@register("name")``; its constructor takes the
``method.params`` of the run config as keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from pathlib import Path

    from accelerate import Accelerator
    from peft import LoraConfig, PeftModel
    from transformers import PreTrainedModel

    from lcia.data.schema import Example
    from lcia.data.tasks import Task


@dataclass(frozen=True)
class Capabilities:
    """What a method needs and where it works (declared, and checked by the runner)."""

    trains: bool = True  # False: the model is never updated (rows after row 0 repeat it)
    ddp: bool = True  # correct under data parallelism (gradients synchronised before the hooks)
    sharded: bool = False  # correct under sharded parameters (FSDP / ZeRO-3)
    needs_old_data: bool = False  # keeps examples of earlier tasks


@dataclass
class TrainContext:
    """What the hooks see of the training loop. ``step`` counts optimizer steps within the stage."""

    model: PreTrainedModel
    optimizer: torch.optim.Optimizer | None  # None in before_task: the optimizer takes what it leaves trainable
    accelerator: Accelerator
    stage: int  # 1-based
    tasks: list[Task]
    step: int = 0
    log: dict[str, float] = field(default_factory=dict)  # scalars the method wants in the training log
    emit: Callable[[str, dict], None] = lambda name, record: None  # a record for the run's <name>.jsonl


class Method:
    """Base class: plain sequential fine-tuning of one LoRA adapter. Subclasses override hooks."""

    name: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, **params: Any):
        if params:
            raise TypeError(f"method {self.name!r} got unknown parameters {sorted(params)}")

    # --- the stream -------------------------------------------------------------------------------
    def stages(self, tasks: list[Task]) -> list[list[Task]]:
        """How the stream is cut into training stages: one task per stage for continual methods."""
        return [[task] for task in tasks]

    def setup(self, model: PreTrainedModel, lora: LoraConfig) -> PreTrainedModel:
        """Prepare the model once before the stream (default: one trainable LoRA adapter)."""
        from lcia.models.lora import add_lora

        return add_lora(model, lora)

    def train_examples(self, tasks: list[Task]) -> list[Example]:
        """The examples a stage trains on (replay-style methods add old ones here)."""
        return [example for task in tasks for example in task.train]

    # --- hooks around the training loop -------------------------------------------------------------
    def before_task(self, ctx: TrainContext) -> None:
        pass

    def loss(self, ctx: TrainContext, batch: dict, outputs: Any) -> torch.Tensor | None:
        """An extra loss term added to the model's loss (None: nothing).

        ``outputs.logits`` holds only the positions that predict answer tokens, ``[answer tokens,
        vocab]`` in the order of ``batch["labels"][:, 1:] != -100`` (``lcia.training.loop.answer_forward``).
        """
        return None

    def after_backward(self, ctx: TrainContext) -> None:
        pass

    def after_optimizer_step(self, ctx: TrainContext) -> None:
        pass

    def after_task(self, ctx: TrainContext) -> None:
        pass

    # --- evaluation --------------------------------------------------------------------------------
    def route(self, example: Example) -> str | None:
        """The adapter that answers ``example`` (None: the active one)."""
        return None

    def task_adapters(self) -> dict[str, str]:
        """The adapter each trained task's test instances should be routed to (scores routing accuracy)."""
        return {}

    # --- reporting ----------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What the method did, for results.json (e.g. counts of fallbacks, groups formed)."""
        return {}

    def artifacts(self) -> dict[str, Any]:
        """Files (name -> content) kept in the run directory and with each stage's adapters: JSON, or, for a
        name ending in ``.safetensors``, a dict of tensors (e.g. weights that are not a PEFT adapter's)."""
        return {}

    def load_stage(self, model: PeftModel, folder: Path) -> PeftModel:
        """For ``lcia eval | ask``: a saved stage's adapters are loaded into ``model`` with plain PEFT (the first
        one active); set up, from the ``artifacts`` saved in ``folder``, whatever else answering needs (several
        active adapters, a router). Returns the model (default: unchanged)."""
        return model

    # --- resuming ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def restore_model(self, model: PreTrainedModel) -> None:
        """After ``load_state_dict`` on resume: rebuild in ``model`` what the state implies (default: nothing)."""


METHODS: dict[str, type[Method]] = {}


def register(name: str):
    def wrap(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


def build_method(name: str, params: dict[str, Any] | None = None) -> Method:
    import lcia.methods  # noqa: F401  (registers the built-in methods)

    if name not in METHODS:
        raise KeyError(name)
    return METHODS[name](**(params or {}))
