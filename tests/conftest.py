"""Shared fixtures: a tiny randomly initialised Llama with SmolLM2's tokenizer, and small task files."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer Llama (hidden 64) saved as safetensors beside SmolLM2's tokenizer: loads like any HF model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lcia.models.loading import SMOLLM2, load_tokenizer

    tokenizer = load_tokenizer(SMOLLM2)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        initializer_range=0.2,  # large enough embeddings that a few LoRA steps can move the logits
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture
def tiny_lora(tiny_model_dir):
    """Makes (tokenizer, tiny model with a fresh LoRA, a 16-example task, its encoded examples)."""

    def make():
        from lcia.data.prompts import encode_for_training
        from lcia.data.schema import Example
        from lcia.data.tasks import Task
        from lcia.models.loading import load_base_model, load_tokenizer
        from lcia.models.lora import add_lora, lora_config

        tok = load_tokenizer(tiny_model_dir)
        targets = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
        model = add_lora(load_base_model(tiny_model_dir), lora_config(8, 16, 0.0, targets))
        examples = [Example("Name the color.", f"item {i}", "red") for i in range(16)]
        task = Task("colors", examples, examples[:2])
        return tok, model, task, [encode_for_training(tok, ex, 64) for ex in examples]

    return make


def builtin_methods(trains: bool | None = None) -> list[str]:
    """The methods of ``lcia.methods`` (not those a test registers), optionally only those that train or not:
    the parameter lists of every per-method test, so that a new method file is tested with no other edit."""
    from lcia.methods import METHODS

    return sorted(
        name
        for name, cls in METHODS.items()
        if cls.__module__.startswith("lcia.methods.") and trains in (None, cls.capabilities.trains)
    )


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def stream_file(tmp_path):
    """A two-task stream in the user's own format: alpaca JSONL and TRL prompt/completion."""
    write_jsonl(
        tmp_path / "colors.jsonl",
        [{"instruction": "Name the color.", "input": f"item {i}", "output": ["red", "blue"][i % 2]} for i in range(24)],
    )
    write_jsonl(
        tmp_path / "echo.jsonl", [{"prompt": f"Repeat the word w{i}.", "completion": f"w{i}"} for i in range(24)]
    )
    (tmp_path / "stream.yaml").write_text(
        "tasks:\n"
        "  - name: colors\n    train: colors.jsonl\n    max_new_tokens: 3\n"
        "  - name: echo\n    train: echo.jsonl\n    instruction: Repeat the word.\n    max_new_tokens: 3\n",
        encoding="utf-8",
    )
    return tmp_path / "stream.yaml"


@pytest.fixture
def tiny_config(tiny_model_dir, stream_file, tmp_path):
    """A run config that trains the tiny model for a few steps on the two-task stream."""
    from lcia.config import load_config

    return load_config(
        None,
        [
            f"stream={stream_file}",
            f"model.name_or_path={tiny_model_dir}",
            f"output_dir={tmp_path / 'run'}",
            "training.steps=4",
            "training.batch_size=4",
            "data.test_size=6",
            "evaluation.bootstrap=50",
            "lora.r=4",
        ],
    )


@pytest.fixture
def stop_and_resume():
    """Runs ``cfg`` to a stop after ``steps`` lines of its training log (as a SIGINT there would), then resumes it."""
    from contextlib import contextmanager
    from pathlib import Path

    from lcia.errors import Interrupted
    from lcia.pipeline import stream_run as runner

    def go(cfg, steps: int, stopped_at: str):
        log = Path(cfg.run_dir()) / "train_log.jsonl"

        @contextmanager
        def stop_there():
            yield lambda: log.exists() and len(log.read_text().splitlines()) == steps

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(runner, "stop_on_signals", stop_there)
            with pytest.raises(Interrupted, match=stopped_at):
                runner.run(cfg, progress=False, log=lambda *_: None)
        return runner.run(cfg, resume=True, progress=False, log=lambda *_: None)

    return go


def train(model, tokenizer, method, tasks, features, *, steps, cfg, stage=1, seed=0, precision="fp32", images=None,
          accelerator=None, resume=None, **events):  # fmt: skip
    """One stage of the training loop on a bare model (``lcia.training.loop.train_stage``); ``events``: the
    ``StageEvents`` fields (on_step, emit, save, should_stop); ``resume``: a ``Checkpoints.restore`` result."""
    from lcia.core.precision import accelerator_for
    from lcia.training.loop import Learner, Stage, StageEvents, train_stage

    learner = Learner(model, tokenizer, method, accelerator or accelerator_for(precision), images)
    stage_inputs = Stage(stage, tasks, features, steps)
    return train_stage(learner, stage_inputs, cfg, seed, resume=resume, events=StageEvents(progress=False, **events))
