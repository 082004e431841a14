"""O-LoRA: the penalty worked by hand, one new adapter per task in the loop, runs reloaded and resumed."""

import json
import math

import pytest
import torch
from conftest import train
from safetensors.torch import load_file

from lcia.config import TrainingConfig, load_config
from lcia.core.precision import accelerator_for
from lcia.data.prompts import encode_for_training
from lcia.data.schema import Example
from lcia.data.tasks import Task
from lcia.methods import TrainContext, build_method
from lcia.methods.olora import OLora
from lcia.models.loading import load_base_model, load_tokenizer
from lcia.models.lora import lora_config
from lcia.pipeline import stream_run as runner
from lcia.pipeline.run_files import RunDir
from lcia.pipeline.session import evaluate_saved, open_saved


def _olora_model(tiny_model_dir, params=None, targets=("q_proj",), r=2):
    method = build_method("olora", params or {})
    model = method.setup(load_base_model(tiny_model_dir), lora_config(r, 2 * r, 0.0, list(targets)))
    return method, model


def _context(model, stage):
    return TrainContext(model=model, optimizer=None, accelerator=accelerator_for("fp32"), stage=stage, tasks=[])


def _lora_tensors(model, adapter):
    return {n: p.detach().clone() for n, p in model.named_parameters() if f".{adapter}." in n}


def test_unknown_parameters_are_refused():
    with pytest.raises(ValueError, match="lamda_1\n  Extra inputs are not permitted"):
        build_method("olora", {"lamda_1": 0.5})
    assert (OLora().params.orth, OLora().params.l2) == (0.5, 0.0)  # the official lamda_1, lamda_2


def test_penalty_matches_the_formula_worked_by_hand_and_only_the_new_adapter_learns_from_it(tiny_model_dir):
    method, model = _olora_model(tiny_model_dir, {"orth": 0.5, "l2": 0.1})
    for stage in (1, 2, 3):
        ctx = _context(model, stage)
        method.before_task(ctx)
    assert model.active_adapters == ["task-1", "task-2", "task-3"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".task-3." in n for n in trainable)

    def rows(*values):  # an r x 64 matrix whose first entries are given
        out = torch.zeros(2, 64)
        out[:, :3] = torch.tensor(values, dtype=torch.float32).reshape(2, 3)
        return out

    a1, a2, a_new = rows(1, 0, 0, 0, 2, 0), rows(0, 0, 1, 0, 0, 0), rows(3, 1, 0, 0, -1, 4)
    with torch.no_grad():
        for name, param in model.named_parameters():
            layer = 1.0 + ("layers.1." in name)  # layer 1's new A is doubled
            if "lora_A" in name:
                param.copy_({"task-1": a1, "task-2": a2, "task-3": layer * a_new}[name.split(".")[-2]])
            if "lora_B" in name:
                param.fill_(0.5)
    # |A1 A_new^T| = |[[3, 0], [2, -2]]| = 7 and |A2 A_new^T| = |[[0, 4], [0, 0]]| = 4, per layer: 11 + 22
    # ||A_new|| = sqrt(27) (and twice that in layer 1), ||B|| = sqrt(64 * 2 * 0.25) = sqrt(32) in both layers
    extra = method.loss(ctx, {}, None)
    l2 = 3 * math.sqrt(27) + 2 * math.sqrt(32)
    assert extra.item() == pytest.approx(0.5 * 33 + 0.1 * l2)
    assert ctx.log == {"olora_orth": pytest.approx(33.0), "olora_l2": pytest.approx(l2)}
    extra.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is None for n, g in grads.items() if ".task-3." not in n)
    # d/dA_new sum |A_i A_new^T| = sum_i sign(A_i A_new^T)^T A_i = [[1, 2, 0], [0, -2, 0]] + [[0, 0, 0], [0, 0, 1]]
    [(name, grad)] = [(n, g) for n, g in grads.items() if "layers.0." in n and "lora_A.task-3" in n]
    assert torch.allclose(grad, 0.5 * rows(1, 2, 0, 0, -2, 1) + 0.1 * a_new / math.sqrt(27))


def test_without_earlier_adapters_or_weights_nothing_is_added(tiny_model_dir):
    method, model = _olora_model(tiny_model_dir)
    ctx = _context(model, 1)
    method.before_task(ctx)
    assert method.loss(ctx, {}, None) is None and ctx.log == {}  # task 1: nothing to be orthogonal to, l2 = 0
    method, model = _olora_model(tiny_model_dir, {"orth": 0.0})
    for stage in (1, 2):
        method.before_task(ctx := _context(model, stage))
    assert method.loss(ctx, {}, None) is None


def _tasks(tokenizer):
    colors = [Example("Name the color.", f"item {i}", ["red", "blue"][i % 2]) for i in range(16)]
    echo = [Example("Repeat the word.", f"w{i}", f"w{i}") for i in range(16)]
    return [(Task(name, exs, exs[:2]), [encode_for_training(tokenizer, ex, 64) for ex in exs])
            for name, exs in (("colors", colors), ("echo", echo))]  # fmt: skip


def _train_two_stages(tiny_model_dir, params):
    torch.manual_seed(0)  # the adapters' initialisation: the same whatever ran before
    targets = ["q_proj", "v_proj", "up_proj"]
    method, model = _olora_model(tiny_model_dir, params, targets, r=4)
    tokenizer = load_tokenizer(tiny_model_dir)
    logs, snapshots = [], []
    for stage, (task, features) in enumerate(_tasks(tokenizer), start=1):
        cfg = TrainingConfig(batch_size=4, grad_accum=2, lr=1e-2, checkpoint_every=0)
        train(model, tokenizer, method, [task], features, stage=stage, steps=5, cfg=cfg, on_step=logs.append)
        snapshots.append(_lora_tensors(model, "task-1"))
    return method, model, logs, snapshots


def _orthogonality(model):
    params = dict(model.named_parameters())
    return sum(
        torch.abs(params[n.replace("task-2", "task-1")] @ p.T).sum().item()
        for n, p in params.items()
        if "lora_A.task-2." in n
    )


def test_in_the_loop_old_adapters_stay_frozen_and_active_and_the_new_one_turns_orthogonal(tiny_model_dir):
    method, model, logs, (after_1, after_2) = _train_two_stages(tiny_model_dir, {})
    assert method.adapters == ["task-1", "task-2"] and model.active_adapters == ["task-1", "task-2"]
    assert after_1.keys() == after_2.keys() and all(torch.equal(after_1[n], after_2[n]) for n in after_1)
    assert any(not torch.equal(p, torch.zeros_like(p)) for n, p in after_1.items() if "lora_B" in n)  # it trained

    # every LoRA layer adds both adapters' deltas to its base layer's output
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(3, 64)
    with torch.no_grad():
        deltas = sum(layer.lora_B[a](layer.lora_A[a](x)) * layer.scaling[a] for a in ("task-1", "task-2"))
        assert torch.allclose(layer(x), layer.base_layer(x) + deltas, atol=1e-6)
        ids = torch.tensor([[1, 2, 3, 4, 5]])
        both = model(ids).logits
        for alone in ("task-1", "task-2"):
            model.base_model.set_adapter([alone])
            assert not torch.allclose(model(ids).logits, both, atol=1e-4)

    assert [r["stage"] for r in logs if "olora_orth" in r] == [2] * 5  # logged once there is an earlier adapter
    orth = [r["olora_orth"] for r in logs if "olora_orth" in r]
    assert orth[-1] < 0.9 * orth[0]  # not step by step: the task loss may push it up for a step
    _, unpenalised, _, _ = _train_two_stages(tiny_model_dir, {"orth": 0.0})
    assert _orthogonality(model) < 0.9 * _orthogonality(unpenalised)


@pytest.fixture(scope="module")
def olora_config(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("olora")
    for name, records in [
        ("colors", [{"instruction": "Name the color.", "input": f"item {i}", "output": ["red", "blue"][i % 2]}
                    for i in range(24)]),
        ("echo", [{"instruction": "Repeat the word.", "input": f"w{i}", "output": f"w{i}"} for i in range(24)]),
    ]:  # fmt: skip
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (folder / "stream.yaml").write_text(
        "".join(f"- name: {n}\n  train: {n}.jsonl\n  max_new_tokens: 3\n" for n in ("colors", "echo")), encoding="utf-8"
    )
    return lambda output_dir: load_config(
        None,
        [
            f"stream={folder / 'stream.yaml'}",
            f"model.name_or_path={tiny_model_dir}",
            f"output_dir={output_dir}",
            "method.name=olora",
            "training.steps=6",
            "training.checkpoint_every=2",
            "training.batch_size=4",
            "training.lr=0.01",
            "data.test_size=6",
            "evaluation.bootstrap=0",
            "lora.r=4",
        ],
    )


PROBE = "Name the color. item 3"


@pytest.fixture(scope="module")
def olora_run(olora_config, tiny_model_dir, tmp_path_factory):
    """A finished two-task run, with the logits of the in-memory model at the end of each stage."""
    ids = torch.tensor([load_tokenizer(tiny_model_dir)(PROBE)["input_ids"]])
    logits = {}

    def after_task(self, ctx):
        with torch.no_grad():
            logits[ctx.stage] = ctx.model(ids).logits

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(OLora, "after_task", after_task)
        result = runner.run(olora_config(tmp_path_factory.mktemp("runs") / "ref"), progress=False, log=lambda *_: None)
    return result, ids, logits


def test_a_run_saves_every_adapter_and_lcia_eval_answers_with_their_sum(olora_run):
    result, ids, logits = olora_run
    out = RunDir(result.run_dir)
    assert len(result.matrix) == 3 and all(len(row) == 2 for row in result.matrix)
    assert out.read_json("results.json")["method"] == {"orth": 0.5, "l2": 0.0, "adapters": ["task-1", "task-2"]}
    assert RunDir(out.adapter_dir(2)).read_json("olora.json")["active"] == ["task-1", "task-2"]
    assert sorted(p.name for p in out.adapter_dir(2).iterdir() if p.is_dir()) == ["task-1", "task-2"]
    assert any("olora_orth" in r for r in out.read_jsonl("train_log.jsonl") if r["stage"] == 2)

    for stage, active in [(1, ["task-1"]), (2, ["task-1", "task-2"])]:
        trained = open_saved(str(result.run_dir), stage=stage)[0]
        assert trained.model.active_adapters == active
        with torch.no_grad():
            reloaded = trained.model(ids).logits
            assert torch.allclose(reloaded, logits[stage], atol=1e-5)
            trained.model.base_model.set_adapter(["task-1"])  # the last task's adapter matters
            assert stage == 1 or not torch.allclose(trained.model(ids).logits, logits[stage], atol=1e-4)
    assert list(evaluate_saved(str(result.run_dir), progress=False).values()) == result.matrix[-1]


def test_a_run_stopped_inside_stage_two_resumes_to_the_uninterrupted_run(
    olora_run, olora_config, tmp_path, stop_and_resume
):
    reference = RunDir(olora_run[0].run_dir)
    cfg = olora_config(tmp_path / "run")
    resumed = stop_and_resume(cfg, 6 + 3, "stopped at stage 2, step 3")
    out = RunDir(resumed.run_dir)
    assert [s["resumed_at_step"] for s in out.read_json("manifest.json")["timings"]["stages"]] == [0, 3]
    assert resumed.matrix == olora_run[0].matrix
    assert out.read_jsonl("train_log.jsonl") == reference.read_jsonl("train_log.jsonl")
    for adapter in ("task-1", "task-2"):
        a, b = (load_file(d.adapter_dir(2) / adapter / "adapter_model.safetensors") for d in (reference, out))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
