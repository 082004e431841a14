"""The method API: one small class per continual-learning method, hooks around one training loop.

The training loop (``lcia.training.loop``) calls, in order, for every stage of the stream:

    before_task(ctx)                      once, before the first step of a stage
    for each optimizer step:
        loss = model loss + method.loss(ctx, batch, outputs)   (per micro-batch)
        backward; method.after_backward(ctx)                    (once per optimizer step, on the
        optimizer.step(); method.after_optimizer_step(ctx)       accumulated gradient)
    after_task(ctx)                       once, after the last step

Everything else about a method lives in its class too, so that a method is one file:

* ``Params``: its parameters as a typed pydantic model (defaults, help text, validation); ``method.params``
  of the run config is checked against it, and ``lcia methods`` lists it.
* ``capabilities``: what it needs and where it works; the runner and the loop enforce them.
* ``route`` / ``explain_route`` / ``task_adapters``: which adapter answers an example, why (``lcia route``),
  and which adapter each task trained (routing accuracy).
* ``artifacts`` / ``load_artifacts`` / ``load_stage``: files kept beside each stage's adapters, and what a
  saved stage needs to route and answer again (``lcia eval | ask | route``).
* ``summary`` / ``report_lines`` / ``report_figures``: what it did, for results.json and ``lcia report``.
* ``state_dict`` / ``load_state_dict`` / ``restore_model``: everything needed to resume.

Methods never touch files or the CLI: what they want kept goes through ``ctx.emit`` (JSON lines),
``summary`` (results.json) and ``artifacts``. A class registered with ``@register("name")`` in a module of
``lcia.methods`` (or a package's ``lcia.methods`` entry point) is found by its name; docs/methods.md is the
guide to writing one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from lcia.models.lora import add_lora

if TYPE_CHECKING:
    from pathlib import Path

    from accelerate import Accelerator
    from peft import LoraConfig, PeftModel
    from transformers import PreTrainedModel

    from lcia.data.schema import Example
    from lcia.data.tasks import Task


@dataclass(frozen=True)
class Capabilities:
    """What a method needs and where it works; each flag is enforced where it matters."""

    trains: bool = True  # False: the model is never updated (the runner repeats row 0)
    ddp: bool = True  # correct under data parallelism (else the runner refuses several processes)
    not_sharded: str = ""  # why it cannot train on an FSDP2-sharded base (empty: it can)
    needs_old_data: bool = False  # trains on examples of earlier tasks (else the loop refuses them)
    lora_variants: frozenset[str] = frozenset({"lora", "dora", "rslora"})  # lora.variant values it works with


class MethodParams(BaseModel):
    """Base of every method's parameters: an unknown key or a bad value is an error naming the field."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_inputs(examples: list[Example]) -> dict:
    raise RuntimeError("this TrainContext was built without an inputs function")


@dataclass
class TrainContext:
    """What the hooks see of the training loop. ``step`` counts optimizer steps within the stage."""

    model: PreTrainedModel
    optimizer: torch.optim.Optimizer | None  # None in before_task: the optimizer takes what it leaves trainable
    accelerator: Accelerator
    stage: int  # 1-based
    tasks: list[Task]
    step: int = 0
    # The micro-batch being trained: its index within the step, its examples on every rank together, and this
    # rank's weight of it (the loop multiplies the loss, outputs.loss plus the method's, by it; 1.0 on one
    # process). 0 rows: the batch's own.
    micro: int = 0
    batch_rows: int = 0
    share: float = 1.0
    log: dict[str, float] = field(default_factory=dict)  # scalars the method wants in the training log
    emit: Callable[[str, dict], None] = lambda name, record: None  # a record for the run's <name>.jsonl
    # (with "stage" and "step": a resumed run drops the records past its checkpoint by them)
    # Forward inputs of any examples (memory, replay, the task's own), built as the loop builds a batch: encoded
    # with the run's tokenizer and max length, collated, on the device, with image inputs. For answer_forward.
    inputs: Callable[[list[Example]], dict] = _no_inputs


@dataclass
class Route:
    """How one instruction was routed: the answering adapter and, for ``lcia route``, each candidate's score."""

    adapter: str | None  # None: the active adapter(s) answer
    scores: dict[str, float] = field(default_factory=dict)  # candidate adapter -> score
    holds: dict[str, str] = field(default_factory=dict)  # candidate adapter -> what it trained on
    rule: str = "one adapter answers every instruction"  # how the choice is made


class Method:
    """Base class: plain sequential fine-tuning of one LoRA adapter. Subclasses override what differs."""

    name: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    Params: ClassVar[type[MethodParams]] = MethodParams

    def __init__(self, params: MethodParams | None = None):
        self.params = params if params is not None else self.Params()

    # --- the stream -------------------------------------------------------------------------------
    def stages(self, tasks: list[Task]) -> list[list[Task]]:
        """How the stream is cut into training stages: one task per stage for continual methods."""
        return [[task] for task in tasks]

    def setup(self, model: PreTrainedModel, lora: LoraConfig) -> PreTrainedModel:
        """Prepare the model once before the stream (default: one trainable LoRA adapter)."""
        return add_lora(model, lora)

    def bind(self, model: PeftModel, inputs: Callable[[list[Example]], dict]) -> None:
        """Called once the model is built and set up, in a run and for a saved stage (``lcia eval | ask | serve``,
        after ``load_stage``), with the ``TrainContext.inputs`` kind of function: for a method whose routing runs
        the model (default: nothing)."""

    def train_examples(self, tasks: list[Task]) -> list[Example]:
        """The examples a stage trains on; others than the stage's own need ``needs_old_data``."""
        return [example for task in tasks for example in task.train]

    # --- hooks around the training loop -------------------------------------------------------------
    def before_task(self, ctx: TrainContext) -> None:
        pass

    def loss(self, ctx: TrainContext, batch: dict, outputs: Any) -> torch.Tensor | None:
        """An extra loss term added to the model's loss (None: nothing).

        ``outputs.logits`` holds only the positions that predict answer tokens, ``[answer tokens,
        vocab]`` in the order of ``batch["labels"][:, 1:] != -100`` (``lcia.models.forward.answer_forward``).
        """
        return None

    def after_backward(self, ctx: TrainContext) -> None:
        pass

    def after_optimizer_step(self, ctx: TrainContext) -> None:
        pass

    def after_task(self, ctx: TrainContext) -> None:
        pass

    # --- answering ---------------------------------------------------------------------------------
    def route(self, example: Example) -> str | None:
        """The adapter that answers ``example`` (None: the active one)."""
        return self.explain_route(example).adapter

    def route_all(self, examples: list[Example]) -> list[str | None]:
        """The adapter of each example, as ``route`` gives it; evaluation routes a test set with this, so a method
        whose router runs the model can route many examples in one forward pass."""
        return [self.route(ex) for ex in examples]

    def explain_route(self, example: Example) -> Route:
        """The route of an example (its instruction, and its input where the method reads it) with what decided
        it (default: nothing to decide). Evaluation, ``ask``, ``serve`` and ``route`` all ask this."""
        return Route(None)

    def task_adapters(self) -> dict[str, str]:
        """The adapter each trained task's test instances should be routed to (scores routing accuracy)."""
        return {}

    def artifacts(self) -> dict[str, Any]:
        """Files (name -> content) kept in the run directory and with each stage's adapters: JSON, or, for a
        name ending in ``.safetensors``, a dict of tensors (e.g. weights that are not a PEFT adapter's)."""
        return {}

    def load_artifacts(self, folder: Path) -> None:
        """For ``lcia eval | ask | route``: read back from a saved stage's ``folder`` the ``artifacts`` that
        routing needs (e.g. a codebook). ``lcia route`` calls only this: it loads no model."""

    def load_stage(self, model: PeftModel, folder: Path) -> PeftModel:
        """For ``lcia eval | ask``, after ``load_artifacts``: a saved stage's adapters are loaded into ``model`` with
        plain PEFT (the first one active); set up whatever else answering needs (several active adapters, a
        router). Returns the model (default: unchanged)."""
        return model

    # --- reporting ----------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What the method did, for results.json (e.g. counts of fallbacks, groups formed)."""
        return {}

    @classmethod
    def report_lines(cls, run) -> list[str]:
        """Markdown paragraphs for the method's part of ``lcia report`` on a finished run (``lcia.reporting.runs.Run``:
        its config, results with this method's ``summary`` under ``method``, and its files)."""
        return []

    @classmethod
    def report_figures(cls, run, directory: Path) -> list[tuple[str, Path]]:
        """(caption, PNG path) of the method's figures for ``run``, drawn into ``directory``."""
        return []

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


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r} (known: {', '.join(sorted(METHODS))})")
    return METHODS[name]


def build_method(name: str, params: dict[str, Any] | None = None) -> Method:
    """The method registered as ``name`` with ``params`` validated by its ``Params`` (pydantic.ValidationError)."""
    cls = method_class(name)
    return cls(cls.Params.model_validate(params or {}))
