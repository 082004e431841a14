"""A Session: the tokenizer, model, precision and method that a run, ``lcia eval``, ``lcia route`` and ``lcia ask``
all need, built in one place.

    Session.open(cfg, method, images=...)   the tokenizer (and a vision model's image slots): seconds, so a
                                            run tokenises and checks all its data before any model loads
    session.load_for_training(precision)    the base model (text LM, packaged vision model, Hugging Face VLM,
                                            4-bit base), the projector's pre-alignment, the method's adapters
    session.load_stage(folder, ...)         the base model with a saved stage's adapters, set up by the method
                                            (its router, codebook, several active adapters) to answer again
    session.evaluate_row(tasks, row)        every task's test set answered and scored: one row of the matrix
    session.ask(instruction, ...)           one greedy answer from the adapter the method routes it to

``open_saved`` builds the session of a finished run's stage (with ``model=False`` only the method's
artifacts: ``lcia route`` loads no model); ``evaluate_saved`` is ``lcia eval``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from lcia.benchmarks import load_benchmark
from lcia.config import RunConfig
from lcia.core import distributed
from lcia.core.precision import accelerator_for, answering_precision, inference_autocast, set_attention
from lcia.data.images import ImageSlots
from lcia.data.prompts import Encoded, encode_for_training
from lcia.data.schema import Example
from lcia.data.streams import load_stream, order_tasks
from lcia.data.tasks import Task
from lcia.errors import Interrupted, input_error
from lcia.evaluation.generate import generate_answers
from lcia.evaluation.grid import Cell, evaluate_task
from lcia.methods import Method, Route, build_method
from lcia.models.forward import batch_inputs
from lcia.models.loading import load_base_model, load_tokenizer
from lcia.models.lora import load_adapters, lora_config
from lcia.models.prealign import load_prealigned, prealign
from lcia.models.vision import ENCODER, EncoderFeatures, image_slots, load_vision_language_model, lora_targets
from lcia.pipeline.run_files import RunDir, metrics_file
from lcia.training.loop import Learner


class Session:
    def __init__(self, cfg: RunConfig, method: Method, tokenizer, slots: ImageSlots | None):
        self.cfg, self.method, self.tokenizer, self.slots = cfg, method, tokenizer, slots
        self.model = None
        self.images = None  # the image inputs of a vision-language model (lcia.models.vision.VisionInputs)
        self.vision: dict | None = None  # what the run's vision side is, for its manifest
        self.precision = "fp32"
        self.accelerator = None  # training sessions only
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    @classmethod
    def open(cls, cfg: RunConfig, method: Method, *, images: bool) -> Session:
        """The tokenizer; with ``images``, the model's image slots (prompts then hold image tokens)."""
        tokenizer = load_tokenizer(cfg.model.name_or_path)
        return cls(cfg, method, tokenizer, image_slots(cfg.model.name_or_path, tokenizer) if images else None)

    def encode(self, example: Example) -> Encoded:
        """A training example's tokens and labels."""
        return encode_for_training(self.tokenizer, example, self.cfg.training.max_length, self.slots)

    @property
    def learner(self) -> Learner:
        return Learner(self.model, self.tokenizer, self.method, self.accelerator, self.images, self.encode)

    def inputs(self, examples: list[Example]) -> dict:
        """Forward inputs of ``examples`` as the training loop builds a batch (``Method.bind``)."""
        features = [self.encode(example) for example in examples]
        return batch_inputs(features, self.tokenizer.pad_token_id, self.device, self.images)

    # --- building the model --------------------------------------------------------------------------
    def _base_model(self):
        model_cfg = self.cfg.model
        if self.slots is None:
            return load_base_model(model_cfg.name_or_path, model_cfg.dtype, model_cfg.quantization, self.device), None
        return load_vision_language_model(
            model_cfg.name_or_path, model_cfg.dtype, model_cfg.quantization, self.device, self.slots, self.cfg.seed
        )

    def load_for_training(self, precision: str, progress: bool = True) -> None:
        """The base model with the method's adapters, in ``precision``, ready to evaluate row 0 and train."""
        self.precision, self.accelerator = precision, accelerator_for(precision)
        self.device = self.accelerator.device
        shard = distributed.fsdp_version() == 2 and distributed.is_distributed()
        self.model, self.images = self._base_model()
        base = set(self.model.parameters())
        lora = self.cfg.lora
        targets, whole = lora.target_modules, None
        if self.images is not None:
            self.vision = self._prealign(progress)
            targets, whole = lora_targets(self.model, lora.target_modules)
        config = lora_config(lora.r, lora.alpha, lora.dropout, targets, whole, lora.variant)
        self.model = self.method.setup(self.model, config).to(self.device)
        if self.cfg.training.gradient_checkpointing:  # non-reentrant: LoRA needs no gradient at the inputs
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        if shard:  # the base's frozen weights; the adapters, and any added later, stay whole
            frozen = {p for p in self.model.parameters() if p in base and not p.requires_grad}
            distributed.shard_frozen_weights(self.model, frozen, self.device)
        set_attention(self.model, precision, self.device)  # after the pre-alignment, which is fp32 and cached
        self.model.eval()
        self.method.bind(self.model, self.inputs)

    def _prealign(self, progress: bool) -> dict:
        """Pre-align the packaged model's projector (cached) and say what the run's vision side is."""
        if not isinstance(self.images, EncoderFeatures):
            return {"model": "hugging-face", "image_tokens": self.images.slots.count}
        vision, cfg = self.cfg.vision, self.cfg
        self.model.to(self.device)
        aligned = prealign(
            self.model,
            self.tokenizer,
            self.images,
            name_or_path=cfg.model.name_or_path,
            steps=vision.prealign_steps,
            batch_size=vision.prealign_batch_size,
            lr=vision.prealign_lr,
            seed=cfg.seed,
            max_length=cfg.training.max_length,
            progress=progress,
        )
        return {"model": "packaged", "encoder": ENCODER, "image_tokens": self.images.slots.count, "prealign": aligned}

    def load_stage(self, folder: Path | None, run_precision: str, vision: dict | None) -> None:
        """The base model with the adapters saved in ``folder`` (None: the untrained base model), set up by the
        method to answer as in the run, in the run's precision where this machine computes it natively."""
        self.precision = answering_precision(run_precision)
        self.model, self.images = self._base_model()
        if folder is None and vision and "prealign" in vision:  # a trained stage's adapters hold their projector
            load_prealigned(self.model, vision["prealign"])
        if folder is not None:
            self.method.load_artifacts(folder)
            self.model = self.method.load_stage(load_adapters(self.model, folder), folder)
        self.model.to(self.device)
        set_attention(self.model, self.precision, self.device)
        self.model.eval()
        self.method.bind(self.model, self.inputs)

    # --- answering -----------------------------------------------------------------------------------
    def evaluate_row(
        self,
        tasks: list[Task],
        row: int,
        *,
        on_cell: Callable[[Cell, Task], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        progress: bool = True,
    ) -> list[float]:
        """Each task's test set answered (each instance by the adapter the method routes it to) and scored."""
        scores = []
        # bf16 weight copies made once for the row, not per task (generate_answers nests); a sharded base gathered
        with distributed.whole_weights(self.model), inference_autocast(self.model, self.precision, self.device):
            for task in tasks:
                if distributed.any_rank(should_stop()):
                    raise Interrupted(f"stopped while evaluating row {row}; it is redone on resume")
                cell = evaluate_task(
                    self.model,
                    self.tokenizer,
                    task,
                    row,
                    route=self.method.route_all,
                    batch_size=self.cfg.evaluation.batch_size,
                    max_length=self.cfg.evaluation.max_length,
                    progress=progress,
                    images=self.images,
                    precision=self.precision,
                )
                if on_cell is not None:
                    on_cell(cell, task)
                scores.append(round(cell.score, 4))
        return scores

    def ask(self, instruction: str, input: str = "", max_new_tokens: int = 64, image: str = "") -> tuple[Route, str]:
        """The greedy answer of the adapter the method routes the request to (as evaluation routes a test
        instance: by its instruction, and its input for methods that read it), and that route."""
        if image and self.slots is None:
            raise input_error("this run's model takes no images", field="--image")
        example = Example(instruction=instruction, input=input, output="", image=image)
        route = self.method.explain_route(example)
        [answer] = generate_answers(
            self.model,
            self.tokenizer,
            [example],
            max_new_tokens=max_new_tokens,
            batch_size=1,
            max_length=self.cfg.evaluation.max_length,
            adapters=[route.adapter],
            progress=False,
            images=self.images,
            precision=self.precision,
        )
        return route, answer


def stream_tasks(cfg: RunConfig) -> list[Task]:
    """The tasks of the run's stream in their own order: a benchmark's from the user's copy, or a built-in or
    file stream's."""
    data, bench = cfg.data, cfg.benchmark
    if bench is not None:
        settings = bench.model_dump(exclude={"root"})
        return load_benchmark(cfg.stream, bench.root, settings, data.test_size, data.train_size, data.split_seed)
    return load_stream(cfg.stream, data.test_size, data.train_size, data.split_seed)


def run_tasks(cfg: RunConfig) -> list[Task]:
    """A run's tasks in training order: its stream in ``data.order``, then the tasks of each extension."""
    data = cfg.data
    tasks = order_tasks(stream_tasks(cfg), data.order)
    for extension in cfg.extensions:
        for task in load_stream(extension, data.test_size, data.train_size, data.split_seed):
            if any(task.name == t.name for t in tasks):
                raise input_error(f"task {task.name!r} is already in the run", file=extension)
            tasks.append(task)
    return tasks


def saved_session(cfg: RunConfig, out: RunDir, stage: int | None, manifest: dict, *, model: bool = True) -> Session:
    """The session of a run's saved ``stage`` (None: the untrained base model), answering as the run did; without
    ``model``, only its method with the stage's artifacts (enough to route)."""
    vision = manifest.get("vision")  # None: a text model
    session = Session.open(cfg, build_method(cfg.method.name, cfg.method.params), images=vision is not None)
    folder = out.adapter_dir(stage) if stage is not None else None
    if model:
        session.load_stage(folder, manifest.get("precision", "fp32"), vision)
    elif folder is not None:
        session.method.load_artifacts(folder)
    return session


def saved_stages(out: RunDir) -> list[int]:
    folder = out.path / "adapters"
    return sorted(int(p.name.split("-")[1]) for p in folder.glob("stage-*")) if folder.exists() else []


def open_saved(run_dir: str | Path, stage: int | None = None, *, model: bool = True) -> tuple[Session, int | None]:
    """The session of a finished run after ``stage`` (default: its last; None when it never trained); without
    ``model``, only its method with the stage's artifacts (enough to route)."""
    out = RunDir(run_dir)
    cfg = out.config()
    stages = saved_stages(out)
    if stage is None and stages:
        stage = stages[-1]
    if stage is not None and stage not in stages:
        raise input_error(f"no adapter for stage {stage} (saved: {stages or 'none'})", file=out.path / "adapters")
    return saved_session(cfg, out, stage, out.read_json("manifest.json"), model=model), stage


def evaluate_saved(run_dir: str, stage: int | None = None, stream: str | None = None, progress: bool = True) -> dict:
    """``lcia eval``: the scores of a run's adapters after ``stage`` (default: the last) on every task of ``stream``
    (default: the run's), each test instance routed as in the run. Writes ``eval/stage-K.json`` and
    ``eval/stage-K.predictions.jsonl`` into the run directory."""
    session, stage = open_saved(run_dir, stage)
    cfg = session.cfg
    data = cfg.data
    tasks = load_stream(stream, data.test_size, data.train_size, data.split_seed) if stream else run_tasks(cfg)
    eval_dir = RunDir(Path(run_dir) / "eval")
    eval_dir.path.mkdir(exist_ok=True)
    name = f"stage-{stage or 0}"
    for stale in (f"{name}.predictions.jsonl", metrics_file(f"{name}.predictions.jsonl")):  # a second eval rewrites
        (eval_dir.path / stale).unlink(missing_ok=True)

    def keep(cell: Cell, task: Task) -> None:
        eval_dir.append_cell(cell, task, f"{name}.predictions.jsonl")

    row = session.evaluate_row(tasks, stage or 0, on_cell=keep, progress=progress)
    scores = dict(zip([t.name for t in tasks], row))
    eval_dir.write_json(f"{name}.json", {"stage": stage, "stream": stream or cfg.stream, "scores": scores})
    return scores
