"""`accelerate launch --use_fsdp --fsdp_version 2` with 2 CPU processes (gloo) gives the 1-process run's results.

FSDP2 shards the base's frozen weights over the ranks; the adapters stay whole on each rank with their gradients
averaged, so every method (new adapters mid-run included) trains as under DDP, and the comparison and its
tolerances are the DDP test's (tests/test_distributed.py). All methods run in one launch, one after another.
"""

from __future__ import annotations

import json

import pytest
from two_processes import (
    assert_each,
    assert_same_run,
    launch,
    launch_runs,
    method_cases,
    one_process,
    stop_with_sigterm,
    two_task_config,
)

from lcia.config import load_config
from lcia.errors import LciaError
from lcia.pipeline import stream_run as runner

pytestmark = pytest.mark.slow  # every method trained in 2 processes and in 1 (about 4 minutes); run in CI

SHARDED = method_cases(lambda capabilities: not capabilities.not_sharded)  # run name: config overrides
# activation checkpointing inside FSDP2's units: transformers checkpoints a layer's forward, inside the unit's
# hooks, so the recomputation runs on the weights that the unit's backward pass has gathered
SHARDED["seq-lora-recomputed"] = ["method.name=seq-lora", "training.gradient_checkpointing=true"]


@pytest.fixture
def config_file(tiny_model_dir, tmp_path):
    return two_task_config(tiny_model_dir, tmp_path)


def test_every_method_on_a_sharded_base_gives_the_one_process_run(config_file, tmp_path):
    done = launch_runs(config_file, SHARDED, tmp_path / "two", sharded=True)
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-3000:]
    assert_each(SHARDED, lambda name: _assert_sharded(name, config_file, tmp_path))


def _assert_sharded(name: str, config_file, tmp_path) -> None:
    ours = tmp_path / "two" / name
    assert_same_run(ours, one_process(config_file, SHARDED[name], tmp_path / "one" / name))
    manifest = json.loads((ours / "manifest.json").read_text())
    assert manifest["distributed"]["sharding"].startswith("FSDP2"), manifest["distributed"]
    assert manifest["distributed"]["sharded_weights"] > 0.9  # all but the adapters


def test_a_sharded_run_stopped_resumes_on_one_process(config_file, tmp_path):
    """A checkpoint written by a 2-process sharded run holds whole tensors: one process finishes the run."""
    overrides = ["method.name=lcia", "lora.dropout=0"]  # no dropout: its masks depend on the process count
    reference = one_process(config_file, overrides, tmp_path / "one")
    out = tmp_path / "two"
    args = [str(config_file), *(f"--set={o}" for o in overrides), f"--set=output_dir={out}"]
    stop_with_sigterm(launch(*args, sharded=True), out, 23)  # in stage 2, after its first checkpoint: group 2 exists
    cfg = load_config(str(out / "config.yaml"), [])
    runner.run(cfg, resume=True, progress=False, log=lambda *_: None)
    assert_same_run(out, reference)


def test_fsdp1_and_deepspeed_launches_are_refused_before_anything_is_written(config_file, tmp_path, monkeypatch):
    refusals = {  # what `accelerate launch` sets: on a CPU the process group would otherwise be plain DDP
        "fsdp1": ({"ACCELERATE_USE_FSDP": "true"}, "^lcia run shards with FSDP version 2 only, not version 1"),
        "deepspeed": ({"ACCELERATE_USE_DEEPSPEED": "true"}, "^lcia run does not train under DeepSpeed"),
        "nf4": (
            {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"},
            "^model.quantization: a 4-bit base is not sharded",
        ),
    }
    for name, (env, message) in refusals.items():
        with monkeypatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            cfg = load_config(str(config_file), [f"output_dir={tmp_path / name}", "model.quantization=nf4"])
            with pytest.raises(LciaError, match=message):
                runner.run(cfg, progress=False, log=lambda *_: None)
        assert not (tmp_path / name).exists()
