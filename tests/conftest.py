"""Shared fixtures: a tiny randomly initialised Llama with a coarse copy of SmolLM2's tokenizer, and small task
files. Under pytest-xdist (``make test`` runs ``-n 2``) each worker computes on one thread: the tiny model's
runs are Python-bound, so two workers on two cores finish sooner than one on both."""

from __future__ import annotations

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"  # before torch loads; the processes a test launches inherit it
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """The slow tests first, so that workers share them out instead of one finishing them alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def coarse_tokenizer(tokenizer, size: int):
    """``tokenizer`` (a byte-level BPE) cut to its first ``size`` tokens: the merges that make later tokens are
    dropped, so any text still encodes (in more, shorter tokens), with the same special tokens and chat
    template. The tiny model's output layer then has ``size`` rows instead of 49k, which dominated its steps."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = {token: i for token, i in spec["model"]["vocab"].items() if i < size}
    merges = [m for m in spec["model"]["merges"] if m[0] in vocab and m[1] in vocab and m[0] + m[1] in vocab]
    spec["model"] |= {"vocab": vocab, "merges": merges}
    coarse = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)))
    coarse.add_special_tokens({k: getattr(tokenizer, k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")})
    coarse.chat_template = tokenizer.chat_template
    return coarse


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer Llama (hidden 64) saved as safetensors beside SmolLM2's tokenizer cut to 2048 tokens: loads like
    any HF model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lcia.models.loading import SMOLLM2, load_tokenizer

    tokenizer = coarse_tokenizer(load_tokenizer(SMOLLM2), 2048)
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
        # no pad_token_id: Llama would zero that embedding row, and SmolLM2 pads with its end of turn, whose
        # logit would then stay 0 whatever LoRA learns (the tokenizer pads; the mask keeps pads out)
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
