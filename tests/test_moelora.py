"""MoELoRA: the gated mixture against values worked by hand, through the KV cache, in training, in a run, reloaded by
``open_saved`` and resumed mid-stage."""

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from lcia.config import TrainingConfig, load_config
from lcia.core.precision import set_attention
from lcia.data.prompts import encode_for_training
from lcia.data.schema import Example
from lcia.data.tasks import Task
from lcia.errors import Interrupted
from lcia.evaluation.generate import _generate_batch
from lcia.methods import METHODS, build_method, register
from lcia.methods.moelora import MoELoRA
from lcia.models.loading import load_base_model, load_tokenizer
from lcia.models.lora import load_adapters, lora_config
from lcia.pipeline.checkpoints import Checkpoints
from lcia.pipeline.run_files import RunDir
from lcia.pipeline.session import evaluate_saved, open_saved
from lcia.pipeline.stream_run import run

TARGETS = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]


def _moelora(model_dir, params=None, r=4, alpha=8, targets=TARGETS):
    method = build_method("moelora", params or {})
    return method, method.setup(load_base_model(model_dir), lora_config(r, alpha, 0.0, targets))


def _randomise(model, scale=0.3):
    """Experts and routers away from their init (B starts at zero), so the mixture changes the outputs."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.normal_(0, scale if "moe_router" not in name else 1.0)


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="num_experts\n  Extra inputs are not permitted"):
        build_method("moelora", {"num_experts": 4})
    with pytest.raises(ValueError, match="greater than 0"):
        build_method("moelora", {"experts": 0})


def test_layer_output_is_the_gate_weighted_sum_of_the_experts_worked_by_hand(tiny_model_dir):
    method, model = _moelora(tiny_model_dir, {"experts": 3, "expert_r": 2}, r=4, alpha=12, targets=["down_proj"])
    layer = model.base_model.model.model.layers[0].mlp.down_proj  # 128 -> 64
    assert layer.scaling == {f"expert-{e}": 2.0 for e in range(3)}  # CoIN: alpha / total rank = 12 / (3 * 2)
    assert set(method.routers) == {f"base_model.model.model.layers.{i}.mlp.down_proj.base_layer.moe_router.weight"
                                   for i in range(2)}  # fmt: skip
    torch.manual_seed(0)
    router, a, b = torch.randn(3, 128), torch.randn(3, 2, 128) * 0.1, torch.randn(3, 64, 2) * 0.1
    with torch.no_grad():
        layer.base_layer.moe_router.weight.copy_(router)
        for e in range(3):
            layer.lora_A[f"expert-{e}"].weight.copy_(a[e])
            layer.lora_B[f"expert-{e}"].weight.copy_(b[e])

    def by_hand(x):
        base = x @ layer.base_layer.weight.T
        gates = torch.softmax(x @ router.T, dim=-1)  # [batch, tokens, experts]: one distribution per token
        deltas = [2.0 * (x @ a[e].T @ b[e].T) for e in range(3)]
        return base + sum(gates[..., e : e + 1] * deltas[e] for e in range(3)), gates, base + sum(deltas) / 3

    for shape in [(2, 5, 128), (1, 3, 128)]:  # each call routes its own tokens
        x = torch.randn(shape)
        expected, gates, uniform = by_hand(x)
        with torch.no_grad():
            got = layer(x)
        assert torch.allclose(got, expected, atol=1e-5)
        assert gates.max() - gates.min() > 0.5 and not torch.allclose(got, uniform, atol=1e-3)  # the gates matter


def test_greedy_decoding_on_the_kv_cache_equals_decoding_without_it(tiny_model_dir):
    # The prefill and every decode step route their own tokens: the cached decoder (shared prefix, left padding,
    # rows leaving the batch) gives what a full forward pass over the whole sequence gives at every step.
    _, model = _moelora(tiny_model_dir)
    _randomise(model)
    model.eval()
    prefix = list(range(100, 112))
    prompts = [prefix + [5, 6, 7], prefix + [20], prefix + [30, 31, 32, 33, 34, 35]]

    def without_cache(prompt, n):
        ids = list(prompt)
        with torch.no_grad():
            for _ in range(n):
                ids.append(int(model(input_ids=torch.tensor([ids]), logits_to_keep=1).logits[0, -1].argmax()))
        return ids[len(prompt) :]

    expected = [without_cache(p, 5) for p in prompts]
    assert _generate_batch(model, prompts, 0, -1, 5) == expected
    assert len({tuple(e) for e in expected}) == 3


def test_every_expert_and_router_gets_gradients_and_trains(tiny_model_dir):
    from conftest import train

    method, model = _moelora(tiny_model_dir, {"experts": 3})
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    routers = [n for n in trainable if n.endswith("moe_router.weight")]
    assert len(routers) == 2 * len(TARGETS) and set(routers) == set(method.routers)
    assert len(trainable) == len(routers) * (1 + 2 * 3)  # per layer: the router, A and B of each expert
    before = {n: p.detach().clone() for n, p in trainable.items()}
    grads = []
    method.after_backward = lambda ctx: grads.append({n: float(p.grad.abs().sum()) for n, p in trainable.items()})

    tok = load_tokenizer(tiny_model_dir)
    examples = [Example("Name the color.", f"item {i}", "red") for i in range(16)]
    train(
        model,
        tok,
        method,
        [Task("colors", examples, examples[:2])],
        [encode_for_training(tok, ex, 64) for ex in examples],
        stage=1,
        steps=4,
        cfg=TrainingConfig(batch_size=4, lr=1e-2, checkpoint_every=0),
        seed=0,
    )
    assert len(grads) == 4 and all(g > 0 for g in grads[-1].values())  # from step 2 on, B no longer zero
    assert all(g == 0 for n, g in grads[0].items() if "lora_B" not in n)  # step 1: B = 0 blocks A's and the router's
    assert all(not torch.equal(before[n], p) for n, p in trainable.items())


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    folder = tmp_path_factory.mktemp("moelora-stream")
    for name, records in {
        "colors": [{"instruction": "Name the color.", "input": f"item {i}", "output": "red"} for i in range(24)],
        "echo": [{"instruction": "Repeat the word.", "input": f"w{i}", "output": f"w{i}"} for i in range(24)],
    }.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    tasks = "".join(f"  - name: {n}\n    train: {n}.jsonl\n    max_new_tokens: 3\n" for n in ("colors", "echo"))
    (folder / "stream.yaml").write_text("tasks:\n" + tasks, encoding="utf-8")
    return folder / "stream.yaml"


def _config(tiny_model_dir, stream, output_dir, method="moelora"):
    return load_config(
        None,
        [
            f"stream={stream}",
            f"model.name_or_path={tiny_model_dir}",
            f"output_dir={output_dir}",
            f"method.name={method}",
            "training.steps=4",
            "training.batch_size=4",
            "training.lr=0.01",
            "data.test_size=6",
            "evaluation.bootstrap=0",
            "lora.r=4",
        ],
    )


@pytest.fixture(scope="module")
def moelora_run(tiny_model_dir, stream, tmp_path_factory):
    cfg = _config(tiny_model_dir, stream, tmp_path_factory.mktemp("runs") / "moelora")
    return run(cfg, progress=False, log=lambda *_: None)


def test_a_run_keeps_experts_and_routers_and_its_trained_run_answers_as_the_run_did(moelora_run, tiny_model_dir):
    out = RunDir(moelora_run.run_dir)
    results = out.read_json("results.json")
    experts = [f"expert-{e}" for e in range(4)]
    assert len(moelora_run.matrix) == 3 and all(len(row) == 2 for row in moelora_run.matrix)
    assert results["method"] == {"experts": experts, "expert_r": 1}  # lora.r 4 split over 4 experts
    folder = out.adapter_dir(2)
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == experts
    assert RunDir(folder).read_json("moelora.json") == results["method"]
    routers = [load_file(out.adapter_dir(s) / "moelora_router.safetensors") for s in (1, 2)]
    assert all(not torch.equal(routers[0][k], routers[1][k]) for k in routers[1])  # the routers train on in stage 2
    assert not any("moe_router" in k for k in load_file(folder / "expert-0" / "adapter_model.safetensors"))

    # The model as it was in memory at the end of the run: a fresh setup with the last checkpoint's weights.
    cfg = load_config(str(out.path / "config.yaml"))
    method, model = _moelora(tiny_model_dir, r=cfg.lora.r, alpha=cfg.lora.alpha, targets=cfg.lora.target_modules)
    weights = load_file(os.path.join(Checkpoints(out.path).latest()["folder"], "weights.safetensors"))
    assert set(weights) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(routers[1]) == set(method.routers) and all(torch.equal(routers[1][k], weights[k]) for k in routers[1])
    model.load_state_dict(weights, strict=False)
    ids = torch.tensor([load_tokenizer(tiny_model_dir)("Name the color. item 3")["input_ids"]])
    trained = open_saved(str(out.path))[0]
    set_attention(model, trained.precision, torch.device("cpu"))  # the attention the run answers with
    with torch.no_grad():
        expected = model.eval()(input_ids=ids).logits
        assert torch.allclose(trained.model(input_ids=ids).logits, expected, atol=1e-6)
        plain = load_adapters(load_base_model(tiny_model_dir), folder).eval()  # expert-0 alone, no routers
        assert not torch.allclose(plain(input_ids=ids).logits, expected, atol=1e-3)
    assert list(evaluate_saved(str(out.path), progress=False).values()) == moelora_run.matrix[-1]


class StopsMidStage(MoELoRA):
    """moelora that gets a SIGINT (Ctrl-C) after step 2 of stage 2: the run stops there with a checkpoint."""

    def after_optimizer_step(self, ctx):
        if (ctx.stage, ctx.step) == (2, 2):
            os.kill(os.getpid(), signal.SIGINT)


def test_a_run_resumed_mid_stage_ends_as_the_uninterrupted_one(moelora_run, tiny_model_dir, stream, tmp_path):
    register("test-only-moelora-stop")(StopsMidStage)
    try:
        cfg = _config(tiny_model_dir, stream, tmp_path / "run", "test-only-moelora-stop")
        with pytest.raises(Interrupted, match="stopped at stage 2, step 2"):
            run(cfg, progress=False, log=lambda *_: None)
        resumed = run(cfg, resume=True, progress=False, log=lambda *_: None)
    finally:
        del METHODS["test-only-moelora-stop"]
    got, ref = RunDir(resumed.run_dir), RunDir(moelora_run.run_dir)
    assert [s["resumed_at_step"] for s in got.read_json("manifest.json")["timings"]["stages"]] == [0, 2]
    assert resumed.matrix == moelora_run.matrix
    files = [f"expert-{e}/adapter_model.safetensors" for e in range(4)] + ["moelora_router.safetensors"]
    for name in files:
        a, b = (load_file(d.adapter_dir(2) / name) for d in (ref, got))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
