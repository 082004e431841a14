"""The typed run configuration: YAML in (plus ``--set key=value`` overrides), clear errors out.

Every field has a default that runs: ``RunConfig()`` is the demo (the ``ni-cit-small`` stream with the
default method, ``lcia.methods.DEFAULT_METHOD``, on SmolLM2-135M). Unknown keys and bad values, the
method's own parameters included, are rejected with ``file:line: field: why``.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from lcia.benchmarks import BENCHMARKS, check_settings
from lcia.errors import input_error
from lcia.methods import DEFAULT_METHOD, method_class
from lcia.models.loading import SMOLLM2
from lcia.yamlfile import NestedError, YamlFile, validate


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    name_or_path: str = SMOLLM2  # the packaged SmolLM2-135M-Instruct, or any HF causal-LM id / local folder
    dtype: Literal["float32", "bfloat16"] = "float32"  # dtype of the frozen base weights (4-bit: of their compute)
    # 4-bit frozen base weights through bitsandbytes (QLoRA's nf4, or fp4); LoRA, EMA, optimizer stay fp32
    quantization: Literal["none", "nf4", "fp4"] = "none"


class VisionSettings(_Section):
    """A stream with images runs on a vision-language model: the packaged one (a frozen EfficientNet-Lite0 and
    a trainable projector on ``model.name_or_path``, a text LM) or, when ``model.name_or_path`` is a Hugging
    Face VLM folder, that model with its own vision tower (``lcia.models.vision``)."""

    # projector-only caption steps (LLaVA's stage 1) the stream starts from, cached (0: a random projector)
    prealign_steps: NonNegativeInt = 80
    prealign_batch_size: PositiveInt = 8
    prealign_lr: PositiveFloat = 2e-3


class LoraSettings(_Section):
    r: PositiveInt = 8
    alpha: PositiveInt = 16
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1)
    # lora: plain LoRA (alpha / r scaling); dora: weight-decomposed LoRA (PEFT use_dora, Liu et al. 2024);
    # rslora: rank-stabilised scaling alpha / sqrt(r) (PEFT use_rslora, Kalajdzievski 2023)
    variant: Literal["lora", "dora", "rslora"] = "lora"


class TrainingConfig(_Section):
    steps: PositiveInt = 40  # optimizer steps per task (a joint stage gets steps x tasks)
    # passes over each stage's own training examples, instead of ``steps``: ceil(epochs x examples / (batch_size
    # x grad_accum)) steps a stage, as the field's scripts train "one epoch per task" on tasks of unequal size;
    # benchmark: each task's own epochs as its benchmark's scripts train it (TRACE's 5, 3, 7, ...; else 1)
    epochs: PositiveFloat | Literal["benchmark"] | None = None
    batch_size: PositiveInt = 8
    grad_accum: PositiveInt = 1
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 0.0
    scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant"
    warmup_steps: NonNegativeInt = 0
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)  # warm-up as a share of each stage's steps (with epochs)
    max_length: int = Field(256, ge=16)  # tokens of prompt + answer; longer prompts keep head and tail
    max_grad_norm: PositiveFloat | None = 1.0
    # recompute each decoder layer's activations in the backward pass instead of keeping them: one more forward
    # pass a step (a LoRA step is about two: the base's weights get no gradient) for activation memory that no
    # longer grows with the layers (a 7B base on long sequences)
    gradient_checkpointing: bool = False
    # auto: bf16 where the hardware multiplies it natively, else fp32; bf16: autocast, fp32 master weights
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    checkpoint_every: NonNegativeInt = 50  # optimizer steps between checkpoints (0: only after each stage)
    max_bad_steps: NonNegativeInt = 10  # NaN/inf-loss steps skipped per stage before the run stops

    def stage_steps(self, tasks: list) -> int:
        """The optimizer steps of a stage training ``tasks`` (each with its ``train`` examples)."""
        if self.epochs is None:
            return self.steps * len(tasks)
        own = self.epochs == "benchmark"
        passes = sum((task.epochs or 1.0 if own else self.epochs) * len(task.train) for task in tasks)
        return max(1, math.ceil(passes / (self.batch_size * self.grad_accum)))

    def warmup(self, steps: int) -> int:
        """Warm-up steps of a stage of ``steps``: ``warmup_steps``, or ``warmup_ratio`` of them when larger."""
        return max(self.warmup_steps, math.ceil(self.warmup_ratio * steps))


class EvaluationConfig(_Section):
    batch_size: PositiveInt = 32
    max_length: int = Field(512, ge=16)  # prompt tokens + new tokens
    bootstrap: NonNegativeInt = 1000  # resamples for the metrics' confidence intervals (0: none)


class DataConfig(_Section):
    # test examples per task (a task may set its own); null: every test example of tasks that have a test set
    # of their own (a benchmark's, a stream file's ``test``), as the papers score them
    test_size: PositiveInt | None = 50
    train_size: PositiveInt | None = None  # cap on training examples per task
    split_seed: int = 0  # seeds the train/test splits, independently of the training seed
    order: Literal["original", "reverse", "alphabetical"] = "original"  # the order tasks are trained in


class BenchmarkConfig(_Section):
    """Where a field benchmark lies and which of it to run, for ``stream: <benchmark>`` (``lcia.benchmarks``;
    each benchmark's page in docs/benchmarks/ lists its variants, orders, tasks and params)."""

    root: str  # the user's copy, exactly as the benchmark ships it
    variant: str | None = None  # default: the benchmark's first
    order: str | None = None  # one of the task orders its papers use; default: the first
    tasks: list[str] | None = Field(None, min_length=1)  # a subset, trained in the order's sequence
    params: dict[str, Any] = Field(default_factory=dict)  # the reader's own switches


class LoggingConfig(_Section):
    tensorboard: bool = False  # losses, learning rate, method scalars and scores under <run>/tensorboard/
    wandb: bool = False  # the same to Weights & Biases (needs the wandb package; mode from WANDB_MODE)
    wandb_project: str = "lcia"

    @field_validator("wandb")
    @classmethod
    def _wandb_installed(cls, value: bool) -> bool:
        import importlib.util

        if value and importlib.util.find_spec("wandb") is None:
            raise ValueError("the wandb package is not installed (pip install wandb)")
        return value


class MethodConfig(_Section):
    name: str = DEFAULT_METHOD  # a registered method (``lcia methods`` lists them with their parameters)
    params: dict[str, Any] = Field(default_factory=dict)  # checked against the method's own ``Params``

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        method_class(value)
        return value

    @field_validator("params")
    @classmethod
    def _params_fit(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """The parameters the config sets, with the values the method's ``Params`` made of them."""
        if "name" not in info.data:  # a bad name is reported on its own
            return value
        try:
            params = method_class(info.data["name"]).Params.model_validate(value)
        except ValidationError as err:
            raise NestedError.first_of(err) from None
        return params.model_dump(mode="json", exclude_unset=True)


class RunConfig(_Section):
    stream: str = "ni-cit-small"  # a built-in stream name, a stream YAML file or a benchmark (lcia.benchmarks)
    benchmark: BenchmarkConfig | None = Field(None, validate_default=True)  # for a benchmark stream: its copy
    # stream YAML files whose tasks follow the stream's, in order (``lcia extend`` appends one per call)
    extensions: list[str] = Field(default_factory=list)
    method: MethodConfig = Field(default_factory=MethodConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    vision: VisionSettings = Field(default_factory=VisionSettings)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    seed: int = 0
    output_dir: str | None = None  # default: runs/<stream>-<method>-seed<seed>
    threads: PositiveInt | None = None  # torch intra-op threads (default: torch's choice)

    @field_validator("benchmark")
    @classmethod
    def _benchmark_settings(cls, value: BenchmarkConfig | None, info: ValidationInfo) -> BenchmarkConfig | None:
        stream = info.data.get("stream")
        if stream in BENCHMARKS and value is None:
            raise ValueError(f"stream {stream!r} is a benchmark: give benchmark.root, the folder of your copy")
        if value is not None and stream not in BENCHMARKS:
            raise ValueError(f"stream {stream!r} is not a benchmark (benchmarks: {', '.join(sorted(BENCHMARKS))})")
        if value is not None:
            check_settings(stream, value.variant, value.order, value.tasks, value.params)
        return value

    @field_validator("lora")
    @classmethod
    def _variant_supported(cls, value: LoraSettings, info: ValidationInfo) -> LoraSettings:
        if "method" in info.data:  # a bad method is reported on its own
            name = info.data["method"].name
            supported = method_class(name).capabilities.lora_variants
            if value.variant not in supported:
                raise NestedError(f"method {name!r} works with {', '.join(sorted(supported))} only", ("variant",))
        return value

    def run_dir(self) -> str:
        if self.output_dir:
            return self.output_dir
        stream = self.stream.rsplit("/", 1)[-1].removesuffix(".yaml").removesuffix(".yml")
        order = "" if self.data.order == "original" else f"-{self.data.order}"
        return f"runs/{stream}-{self.method.name}-seed{self.seed}{order}"


def parse_value(raw: str) -> Any:
    """A command-line value read as YAML, with ``1e5`` a number (YAML 1.1 needs ``1.0e+5``)."""
    value = yaml.safe_load(raw)
    if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value.strip()):
        return float(value)
    return value


def _set(data: dict, parts: tuple, value: Any, where: str) -> tuple:
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise input_error("is not a section", file=where, field=part)
    node[parts[-1]] = value
    return parts


def _apply_override(data: dict, assignment: str) -> tuple:
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise input_error(f"expected key=value, got {assignment!r}", file="--set")
    return _set(data, tuple(key.strip().split(".")), parse_value(raw), "--set")


def leaves(updates: dict, prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    """``{"training": {"steps": 5}}`` -> ``[(("training", "steps"), 5)]`` (``method.params`` is one value)."""
    found = []
    for key, value in updates.items():
        parts = prefix + tuple(str(key).split("."))
        if isinstance(value, dict) and parts != ("method", "params"):
            found += leaves(value, parts)
        else:
            found.append((parts, value))
    return found


def load_config(path: str | None = None, overrides: list[str] = (), updates: dict | None = None) -> RunConfig:
    """Read a run config from YAML (or take the defaults), apply ``key=value`` overrides (the command line's
    ``--set``) and ``updates`` (nested values, from Python); errors in either name ``--set`` and the field."""
    source = YamlFile(path) if path else None
    data = source.data if source else {}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise input_error("a run config is a mapping of sections", file=path, line=1)
    overridden = {_apply_override(data, item) for item in overrides}
    overridden |= {_set(data, parts, value, "--set") for parts, value in leaves(updates or {})}
    return validate(RunConfig, data, source, overridden=overridden)
