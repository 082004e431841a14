"""`accelerate launch --use_fsdp --fsdp_version 2` with 2 CPU processes (gloo) gives the 1-process run's results.

FSDP2 shards the base's frozen weights over the ranks; the adapters stay whole on each rank with their gradients
averaged, so every method (new adapters mid-run included) trains as under DDP, and the comparison and its
tolerances are the DDP test's (tests/test_distributed.py). All methods run in one launch, one after another.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from conftest import builtin_methods
from two_processes import assert_same_run, launch, launch_runs, one_process, two_task_config

from lcia.config import load_config
from lcia.errors import LciaError
from lcia.methods import METHODS
from lcia.pipeline import stream_run as runner

pytestmark = pytest.mark.slow  # every method trained in 2 processes and in 1 (about 4 minutes); run in CI


def _sharded(name: str) -> bool:
    return not METHODS[name].capabilities.not_sharded


SHARDED = {  # run name: config overrides; every built-in method that trains and does not refuse a sharded base
    **{
        name: [f"method.name={name}"]
        for name in builtin_methods(trains=True)
        if not METHODS[name].capabilities.not_sharded
    },
    "reglora": ["method.name=reglora", "method.params.lam=1"],  # as in the DDP test (lam 2500 flips signs)
}


@pytest.fixture
def config_file(tiny_model_dir, tmp_path):
    return two_task_config(tiny_model_dir, tmp_path)


def test_every_method_on_a_sharded_base_gives_the_one_process_run(config_file, tmp_path):
    done = launch_runs(config_file, SHARDED, tmp_path / "two", sharded=True)
    assert done.returncode == 0, done.stdout[-1000:] + done.stderr[-3000:]
    failed = {}
    for name, overrides in SHARDED.items():
        reference = one_process(config_file, overrides, tmp_path / "one" / name)
        try:
            assert_same_run(tmp_path / "two" / name, reference)
            manifest = json.loads((tmp_path / "two" / name / "manifest.json").read_text())
            assert manifest["distributed"]["sharding"].startswith("FSDP2"), manifest["distributed"]
            assert manifest["distributed"]["sharded_weights"] > 0.9  # all but the adapters
        except AssertionError as err:
            failed[name] = str(err)[:300]
    assert not failed, failed


def test_a_sharded_run_stopped_resumes_on_one_process(config_file, tmp_path):
    """A checkpoint written by a 2-process sharded run holds whole tensors: one process finishes the run."""
    overrides = ["method.name=lcia", "lora.dropout=0"]  # no dropout: its masks depend on the process count
    reference = one_process(config_file, overrides, tmp_path / "one")
    out = tmp_path / "two"
    args = [str(config_file), *(f"--set={o}" for o in overrides), f"--set=output_dir={out}"]
    launcher = subprocess.Popen(launch(*args, sharded=True), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "train_log.jsonl"
    while not (log.exists() and log.read_text().count("\n") >= 23) and launcher.poll() is None:
        time.sleep(0.01)  # into stage 2, past its first checkpoint: the second group's adapter exists
    launcher.send_signal(signal.SIGTERM)
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode != 0, "the run ended before the signal"
    assert "checkpoint saved" in stderr or "redone on resume" in stderr, stderr[-3000:]
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
