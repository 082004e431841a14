"""The contract every registered method keeps, in the spirit of PEFT's test matrix: a method file added to
``lcia.methods`` is picked up here with no other edit.

For each method, on the tiny model and a two-task stream:
* the stream runs and its matrix is complete (every row covers every task);
* a run stopped mid-stage (mid-row for a method that never trains) and resumed ends exactly as the
  uninterrupted run: matrix, predictions, saved adapters and the method's summary;
* the saved last stage, reloaded through ``lcia eval``, gives the run's own answers;
* its declared capabilities hold: a method that does not train leaves every row as row 0 and saves no
  adapters; one that trains saves a stage's adapters in plain PEFT layout; ``lcia methods`` lists it
  with its parameters; a method that does not declare ``needs_old_data`` cannot train on old examples.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType
from conftest import builtin_methods
from safetensors.torch import load_file

from lcia.cli import main
from lcia.core import distributed
from lcia.errors import Interrupted, LciaError
from lcia.methods import METHODS, Capabilities, Method, build_method, register
from lcia.pipeline import stream_run
from lcia.pipeline.run_files import RunDir
from lcia.pipeline.session import evaluate_saved

BUILTIN = builtin_methods()


def quiet_run(cfg, **kwargs):
    return stream_run.run(cfg, progress=False, log=lambda *_: None, **kwargs)


def stop_when(path: Path, lines: int):
    """A ``stop_on_signals`` that asks to stop once ``path`` holds ``lines`` lines (as a SIGTERM there would)."""

    @contextmanager
    def stop():
        yield lambda: path.exists() and len(path.read_text().splitlines()) >= lines

    return stop


def adapter_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    files = sorted((run_dir / "adapters").rglob("*.safetensors"))
    return {f"{f.relative_to(run_dir)}:{k}": v for f in files for k, v in load_file(f).items()}


@pytest.fixture
def method_config(tiny_config, tmp_path):
    def make(name: str, folder: str):
        cfg = tiny_config.model_copy(deep=True)
        cfg.method.name, cfg.output_dir = name, str(tmp_path / folder)
        cfg.training.checkpoint_every = 0  # the stop alone checkpoints mid-stage
        return cfg

    return make


@pytest.mark.parametrize("name", BUILTIN)
def test_method_keeps_the_contract(name, method_config, monkeypatch):
    trains = METHODS[name].capabilities.trains
    whole = quiet_run(method_config(name, "whole"))
    stages = len(build_method(name).stages([object(), object()]))
    assert len(whole.matrix) == stages + 1 and all(len(row) == 2 for row in whole.matrix)
    out = RunDir(whole.run_dir)
    if trains:
        assert (out.adapter_dir(stages) / "adapter_config.json").exists() or any(
            (p / "adapter_config.json").exists() for p in out.adapter_dir(stages).iterdir()
        )
    else:
        assert all(row == whole.matrix[0] for row in whole.matrix) and not (out.path / "adapters").exists()

    # stopped inside a stage (a run that never trains: inside row 0), then resumed
    cfg = method_config(name, "resumed")
    watched = Path(cfg.output_dir) / ("train_log.jsonl" if trains else "predictions.jsonl")
    with monkeypatch.context() as patch:
        patch.setattr(stream_run, "stop_on_signals", stop_when(watched, 6))
        with pytest.raises(Interrupted):
            quiet_run(cfg)
    resumed = quiet_run(cfg, resume=True)
    assert resumed.matrix == whole.matrix
    ours, reference = RunDir(resumed.run_dir), out
    assert ours.read_jsonl("predictions.jsonl") == reference.read_jsonl("predictions.jsonl")
    assert ours.read_json("results.json").get("method") == reference.read_json("results.json").get("method")
    theirs, mine = adapter_tensors(reference.path), adapter_tensors(ours.path)
    assert theirs.keys() == mine.keys() and all(torch.equal(theirs[k], mine[k]) for k in theirs)

    # the saved last stage answers again as in the run
    assert list(evaluate_saved(str(whole.run_dir), progress=False).values()) == whole.matrix[-1]
    last = len(whole.matrix) - 1
    again = RunDir(out.path / "eval").read_jsonl(f"stage-{last if trains else 0}.predictions.jsonl")
    run_answers = [r["prediction"] for r in reference.read_jsonl("predictions.jsonl") if r["row"] == last]
    assert [r["prediction"] for r in again] == run_answers


@pytest.mark.parametrize("name", BUILTIN)
def test_lcia_methods_lists_the_method_with_its_parameters(name, capsys):
    assert main(["methods", name]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{name}: ") and all(key in printed for key in METHODS[name].Params.model_fields)


def test_a_method_that_does_not_declare_old_data_cannot_train_on_it(tiny_config):
    @register("test-only-sneaky-replay")
    class Sneaky(Method):
        capabilities = Capabilities(needs_old_data=False)

        def __init__(self, params=None):
            super().__init__(params)
            self.seen = []

        def train_examples(self, tasks):
            self.seen += [ex for task in tasks for ex in task.train]
            return list(self.seen)

    try:
        cfg = tiny_config.model_copy(deep=True)
        cfg.method.name = "test-only-sneaky-replay"
        with pytest.raises(LciaError, match="trains on examples of earlier tasks but does not declare needs_old_data"):
            quiet_run(cfg)
    finally:
        del METHODS["test-only-sneaky-replay"]


def test_a_method_that_does_not_declare_ddp_is_refused_on_several_processes():
    @register("test-only-single-process")
    class SingleProcess(Method):
        capabilities = Capabilities(ddp=False)

    try:
        launch = SimpleNamespace(num_processes=2, distributed_type=DistributedType.MULTI_CPU)
        with pytest.raises(LciaError, match="does not declare support for several processes"):
            distributed.refuse_unsupported(launch, build_method("test-only-single-process"))
        distributed.refuse_unsupported(SimpleNamespace(num_processes=1), build_method("test-only-single-process"))
    finally:
        del METHODS["test-only-single-process"]
