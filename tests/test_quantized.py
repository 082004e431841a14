"""A 4-bit (bitsandbytes NF4) frozen base model: every training method runs on it, on the CPU, and resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch
from bitsandbytes.nn import Linear4bit
from conftest import builtin_methods
from safetensors.torch import load_file

from lcia.models.loading import load_base_model
from lcia.pipeline import stream_run as runner
from lcia.pipeline.session import evaluate_saved, open_saved

METHODS = builtin_methods(trains=True)


@pytest.fixture
def nf4_config(tiny_config):
    return tiny_config.model_copy(update={"model": tiny_config.model.model_copy(update={"quantization": "nf4"})})


def test_nf4_quantises_the_linear_layers_but_not_the_head(tiny_model_dir):
    model = load_base_model(tiny_model_dir, quantization="nf4")
    layer = model.model.layers[0]
    assert isinstance(layer.self_attn.q_proj, Linear4bit) and isinstance(layer.mlp.down_proj, Linear4bit)
    assert layer.self_attn.q_proj.weight.dtype == torch.uint8
    assert not isinstance(model.lm_head, Linear4bit) and model.lm_head.weight.dtype == torch.float32


def test_a_4bit_base_still_trains_after_an_evaluation(tiny_model_dir):
    # bitsandbytes repacks 4-bit weights for its AVX512-BF16 inference kernel at an eval forward, and that
    # kernel passes no gradient: LoRA under it stopped learning after row 0 on such CPUs.
    from lcia.models.lora import add_lora, lora_config

    model = add_lora(load_base_model(tiny_model_dir, quantization="nf4"), lora_config(4, 8, 0.0, ["q_proj", "v_proj"]))
    ids = torch.arange(1, 11)[None]
    model.eval()
    with torch.inference_mode():
        model(input_ids=ids)
    model.train()
    model(input_ids=ids).logits.float().pow(2).mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None for g in grads.values())
    assert all(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)  # A's is 0 while B is 0


@pytest.mark.parametrize("method", METHODS)
def test_every_training_method_runs_on_a_4bit_base(nf4_config, method):
    cfg = nf4_config.model_copy(update={"method": nf4_config.method.model_copy(update={"name": method})})
    result = runner.run(cfg, progress=False, log=lambda *_: None)
    assert len(result.matrix) == (2 if method == "multitask" else 3)
    log = [json.loads(line) for line in (result.run_dir / "train_log.jsonl").read_text().splitlines()]
    assert log and all(torch.isfinite(torch.tensor(r["loss"])) for r in log)
    adapters = sorted((result.run_dir / "adapters").rglob("adapter_model.safetensors"))
    assert adapters and all(all("lora_" in k for k in load_file(path)) for path in adapters)


def test_a_4bit_run_resumes_exactly_and_its_adapter_reloads(nf4_config, stop_and_resume, tmp_path):
    cfg = nf4_config.model_copy(update={"method": nf4_config.method.model_copy(update={"name": "dema"})})
    whole_cfg = cfg.model_copy(update={"output_dir": str(tmp_path / "whole")})
    whole = runner.run(whole_cfg, progress=False, log=lambda *_: None)
    resumed = stop_and_resume(cfg, steps=3, stopped_at="stopped at stage 1, step 3")
    assert resumed.matrix == whole.matrix
    for stage in (1, 2):
        a = load_file(resumed.run_dir / f"adapters/stage-{stage}/adapter_model.safetensors")
        b = load_file(whole.run_dir / f"adapters/stage-{stage}/adapter_model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a)
    # `lcia eval` rebuilds the 4-bit base with the saved adapter and gives the run's own last-row answers
    evaluate_saved(str(whole.run_dir), progress=False)
    read = lambda path: [json.loads(line) for line in path.read_text().splitlines()]  # noqa: E731
    last_row = [r["prediction"] for r in read(whole.run_dir / "predictions.jsonl") if r["row"] == 2]
    assert [r["prediction"] for r in read(whole.run_dir / "eval/stage-2.predictions.jsonl")] == last_row
    model = open_saved(str(whole.run_dir))[0].model
    assert isinstance(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer, Linear4bit)
