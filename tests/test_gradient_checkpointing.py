"""``training.gradient_checkpointing``: each decoder layer recomputed in the backward pass, the same run otherwise.

Each method with a forward pass of its own runs the two-task stream on the tiny model with and without it: the
matrix, every prediction and the adapters agree (recomputation repeats the forward pass, LoRA dropout masks included). A
separate test counts the decoder layers' forward passes, so the option cannot pass by doing nothing.
"""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers.models.llama.modeling_llama import LlamaMLP

from lcia.pipeline import stream_run
from lcia.pipeline.run_files import RunDir


def _run(tiny_config, tmp_path, name: str, checkpointing: bool):
    cfg = tiny_config.model_copy(deep=True)
    cfg.method.name, cfg.training.gradient_checkpointing = name, checkpointing
    cfg.lora.dropout = 0.1  # recomputation must draw the same masks
    cfg.output_dir = str(tmp_path / f"{name}-{checkpointing}")
    return stream_run.run(cfg, progress=False, log=lambda *_: None)


def _adapters(run_dir) -> dict[str, torch.Tensor]:
    files = sorted((RunDir(run_dir).path / "adapters").rglob("*.safetensors"))
    return {f"{path.parent.name}/{key}": value for path in files for key, value in load_file(path).items()}


# the methods whose forward passes differ: their own layers (moelora, hide), a second adapter or copy run in the
# step (lwf, ilora, mrlora, gem), inputs collected by hooks (inflora), adapters added mid-run and the EMA (lcia)
RECOMPUTED = ["seq-lora", "lcia", "moelora", "hide", "lwf", "ilora", "mrlora", "gem", "inflora"]


@pytest.mark.parametrize("name", RECOMPUTED)
def test_a_run_with_gradient_checkpointing_is_the_run_without(name, tiny_config, tmp_path):
    plain, recomputed = (_run(tiny_config, tmp_path, name, flag) for flag in (False, True))
    assert recomputed.matrix == plain.matrix
    predictions = [(RunDir(r.run_dir).path / "predictions.jsonl").read_text() for r in (plain, recomputed)]
    assert predictions[0] == predictions[1]
    losses = [[json.loads(line)["loss"] for line in open(RunDir(r.run_dir).path / "train_log.jsonl")]
              for r in (plain, recomputed)]  # fmt: skip
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    a, b = _adapters(plain.run_dir), _adapters(recomputed.run_dir)
    assert a.keys() == b.keys() and a
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_the_layers_are_recomputed_once_per_micro_batch(tiny_config, tmp_path, monkeypatch):
    calls = []  # each decoder layer's MLP, inside the checkpointed region (transformers wraps the layer's forward)
    forward = LlamaMLP.forward
    monkeypatch.setattr(LlamaMLP, "forward", lambda self, x: (calls.append(1), forward(self, x))[1])
    counts = []
    for flag in (False, True):
        calls.clear()
        _run(tiny_config, tmp_path, "seq-lora", flag)
        counts.append(len(calls))
    layers, micro_batches = 2, 2 * tiny_config.training.steps  # the tiny model; two tasks of 4 steps
    assert counts[1] - counts[0] == layers * micro_batches
