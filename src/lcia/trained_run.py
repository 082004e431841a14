"""A finished run used again: its stage's adapters in the base model, each request routed as in the run.

``lcia eval`` scores it on any stream, ``lcia route`` shows which group an instruction goes to (with
the similarity to each group), and ``lcia ask`` answers with the routed adapter: the trained run as
an assistant. A run without a codebook answers everything with its stage's adapter(s), set up by the
run's method from the files it saved beside them (``Method.load_stage``: all of O-LoRA's adapters
together, MoELoRA's experts with their routers).
"""

from __future__ import annotations

from functools import cached_property

import torch

from lcia.config import RunConfig, load_config
from lcia.core.precision import cpu_has_native_bf16, set_attention
from lcia.data.schema import Example
from lcia.errors import input_error
from lcia.evaluation.generate import generate_answers
from lcia.mechanisms.codebook import Codebook
from lcia.mechanisms.similarity import build_similarity
from lcia.methods import build_method
from lcia.models.loading import load_base_model, load_tokenizer
from lcia.models.lora import load_adapters
from lcia.models.prealign import load_prealigned
from lcia.models.vision import image_slots, load_vision_language_model
from lcia.pipeline.run_files import RunDir


class TrainedRun:
    def __init__(self, run_dir: str, stage: int | None = None):
        self.out = RunDir(run_dir)
        self.cfg: RunConfig = load_config(str(self.out.path / "config.yaml"))
        folder = self.out.path / "adapters"
        stages = sorted(int(p.name.split("-")[1]) for p in folder.glob("stage-*")) if folder.exists() else []
        if stage is None and stages:
            stage = stages[-1]
        if stage is not None and stage not in stages:
            raise input_error(f"no adapter for stage {stage} (saved: {stages or 'none'})", file=folder)
        self.stage = stage  # None: the base model (a run that never trained)
        manifest = self.out.read_json("manifest.json")
        self.vision = manifest.get("vision")  # None: a text model
        # Answers in the run's precision, as the run did; fp32 on a CPU without native bf16 (30x slower there).
        self.precision = "bf16" if manifest.get("precision") == "bf16" and cpu_has_native_bf16() else "fp32"
        self.codebook = None
        if stage is not None and (self.out.adapter_dir(stage) / "codebook.json").exists():
            data = RunDir(self.out.adapter_dir(stage)).read_json("codebook.json")
            self.codebook = Codebook.from_json(data, build_similarity(data["similarity"]))

    def route(self, instruction: str) -> tuple[str | None, dict[str, float]]:
        """The adapter that answers ``instruction`` and each group's similarity (none without a codebook)."""
        if self.codebook is None or not self.codebook.groups:
            return None, {}
        return self.codebook.route(instruction)

    def route_example(self, example: Example) -> str | None:
        return self.route(example.instruction)[0]

    @cached_property
    def tokenizer(self):
        tokenizer = load_tokenizer(self.cfg.model.name_or_path)
        self.slots = image_slots(self.cfg.model.name_or_path, tokenizer) if self.vision else None
        return tokenizer

    @property
    def model(self):
        return self._model_and_images[0]

    @property
    def images(self):
        """The model's image inputs (``lcia.models.vision.VisionInputs``); None for a text model."""
        return self._model_and_images[1]

    @cached_property
    def _model_and_images(self):
        model_cfg, images = self.cfg.model, None
        if self.vision is None:
            model = load_base_model(model_cfg.name_or_path, model_cfg.dtype, model_cfg.quantization)
        else:
            self.tokenizer  # noqa: B018  (sets the image slots)
            model, images = load_vision_language_model(
                model_cfg.name_or_path, model_cfg.dtype, model_cfg.quantization, "cpu", self.slots, self.cfg.seed
            )
            if "prealign" in self.vision and self.stage is None:  # a trained stage's adapters hold their projector
                load_prealigned(model, self.vision["prealign"])
        if self.stage is not None:
            folder = self.out.adapter_dir(self.stage)
            model = build_method(self.cfg.method.name, self.cfg.method.params).load_stage(
                load_adapters(model, folder), folder
            )
        set_attention(model, self.precision, torch.device("cpu"))
        return model.eval(), images

    def ask(
        self, instruction: str, input: str = "", max_new_tokens: int = 64, image: str = ""
    ) -> tuple[str | None, str]:
        """Greedy answer of the routed adapter: (adapter, answer). ``image``: a file path, for a vision run."""
        if image and self.vision is None:
            raise input_error("this run's model takes no images", file=self.out.path / "manifest.json")
        example = Example(instruction=instruction, input=input, output="", image=image)
        adapter = self.route_example(example)
        [answer] = generate_answers(
            self.model,
            self.tokenizer,
            [example],
            max_new_tokens=max_new_tokens,
            batch_size=1,
            max_length=self.cfg.evaluation.max_length,
            adapters=[adapter],
            progress=False,
            images=self.images,
            precision=self.precision,
        )
        return adapter, answer
