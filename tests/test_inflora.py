"""InfLoRA: lora_A designed off the earlier tasks' input space and DualGPM worked by hand, the interference-free
property while the new branch trains, and the variants it refuses."""

import math

import pytest
import torch
from conftest import train

from lcia.config import TrainingConfig
from lcia.data.prompts import encode_for_training
from lcia.data.schema import Example
from lcia.data.tasks import Task
from lcia.methods import TrainContext, build_method
from lcia.methods.inflora import InfLoRA, design_a, threshold, update_dualgpm
from lcia.models.forward import collate
from lcia.models.loading import load_base_model, load_tokenizer
from lcia.models.lora import lora_config

E = torch.eye(4, dtype=torch.float64)  # e1..e4 are E[:, 0..3]


def _same_line(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to the sign an SVD may pick."""
    return torch.allclose(a, b, atol=1e-10) or torch.allclose(a, -b, atol=1e-10)


def test_defaults_are_the_official_ones_and_dora_is_refused(tiny_config):
    params = InfLoRA().params
    assert (params.lamb, params.lame, params.samples, params.sessions) == (0.95, 1.0, None, None)
    with pytest.raises(ValueError, match="lamb"):
        build_method("inflora", {"lamb": 1.5})
    cfg = tiny_config.model_dump(mode="json")
    cfg["method"]["name"], cfg["lora"]["variant"] = "inflora", "dora"
    with pytest.raises(Exception, match="works with lora, rslora only"):
        type(tiny_config).model_validate(cfg)


def test_the_new_rows_avoid_the_earlier_input_space_worked_by_hand():
    # the new task's inputs (2, 1, 0, 0) and (2, -1, 0, 0): C = mean x x^T = diag(4, 1, 0, 0), inside span(e1, e2)
    x = torch.tensor([[2.0, 1, 0, 0], [2, -1, 0, 0]], dtype=torch.float64)
    cov = x.T @ x / 2
    assert torch.equal(cov, torch.diag(torch.tensor([4.0, 1, 0, 0], dtype=torch.float64)))
    # the first task: no earlier space, A = the top singular vector / sqrt(3) = e1 / sqrt(3)
    assert _same_line(design_a(cov, None, "remove", 1), E[:, :1].T / math.sqrt(3))
    # earlier basis e1: (I - e1 e1^T) C = diag(0, 1, 0, 0), whose top direction is e2
    assert _same_line(design_a(cov, E[:, :1], "remove", 1), E[:, 1:2].T / math.sqrt(3))
    # the same earlier space kept as its complement (retain: M = [e2, e3, e4]) gives the same row
    assert _same_line(design_a(cov, E[:, 1:], "retain", 1), E[:, 1:2].T / math.sqrt(3))
    # rank 2: the projected C has rank 1, its second direction is arbitrary in the SVD; it is kept off e1 too
    for a in (design_a(cov, E[:, :1], "remove", 2), design_a(cov, E[:, 1:], "retain", 2)):
        assert a.shape == (2, 4) and torch.allclose(a @ E[:, 0], torch.zeros(2, dtype=torch.float64), atol=1e-12)


def test_dualgpm_grows_the_basis_and_turns_to_the_complement_worked_by_hand():
    diag = lambda *v: torch.diag(torch.tensor(v, dtype=torch.float64))  # noqa: E731
    # the schedule: lamb + (lame - lamb) * tasks done / sessions
    assert threshold(0.95, 1.0, 0, 2) == 0.95 and threshold(0.95, 1.0, 1, 2) == pytest.approx(0.975)
    # task 1, C = diag(3, 1, 0, 0): squared singular values 9, 1 -> energy 0.9, 1.0; 0.9 < 0.95 keeps one: M = e1
    basis, kind = update_dualgpm(diag(3, 1, 0, 0), None, "", 0.95)
    assert kind == "remove" and basis.shape == (4, 1) and _same_line(basis, E[:, :1])
    # task 2, C = diag(1, 0, 2, 0), total 1 + 4 = 5; outside M: diag(0, 0, 2, 0) (4), so M holds 1/5 = 0.2 < 0.975;
    # adding e3 brings it to 1.0: M = [e1, e3], 2 of 4 dimensions: still "remove"
    basis, kind = update_dualgpm(diag(1, 0, 2, 0), basis, kind, 0.975)
    assert kind == "remove" and basis.shape == (4, 2) and _same_line(basis[:, 1], E[:, 2])
    # an input already inside M (held 1.0 >= thr) adds nothing
    assert torch.equal(update_dualgpm(diag(5, 0, 1, 0), basis, kind, 0.99)[0], basis)
    # task 3, C = diag(0, 1, 0, 0): nothing of it inside M (held 0) -> add e2: 3 > 4 / 2 dimensions, so the basis
    # turns to its complement, e4, and the kind to "retain"
    basis, kind = update_dualgpm(diag(0, 1, 0, 0), basis, kind, 0.99)
    assert kind == "retain" and basis.shape == (4, 1) and _same_line(basis, E[:, 3:])


def test_dualgpm_takes_used_directions_out_of_a_retained_complement_worked_by_hand():
    # old space span(e1, e2) kept as its complement M = [e3, e4]; C = diag(0, 0, 3, 1): total 9 + 1 = 10, all of it
    # free (1.0 >= 1 - 0.85 = 0.15): take e3 (free 0.1 < 0.15, stop): M = [e4]
    diag = torch.diag(torch.tensor([0.0, 0, 3, 1], dtype=torch.float64))
    basis, kind = update_dualgpm(diag, E[:, 2:], "retain", 0.85)
    assert kind == "retain" and basis.shape == (4, 1) and _same_line(basis, E[:, 3:])
    # at 0.95 (1 - thr = 0.05) e4 goes too: no free space is left, and a new branch gets zero rows
    basis, _ = update_dualgpm(diag, E[:, 2:], "retain", 0.95)
    assert basis.shape == (4, 0) and torch.equal(design_a(diag, basis, "retain", 2), torch.zeros(2, 4).double())


def test_samples_caps_the_collection_with_a_seeded_sample_in_order():
    examples = [Example("Say it.", f"x{i}", "y") for i in range(10)]
    ctx = TrainContext(model=None, optimizer=None, accelerator=None, stage=2, tasks=[Task("t", examples, [])])
    picked = InfLoRA(InfLoRA.Params(samples=4))._examples(ctx)
    assert len(picked) == 4 and picked == sorted(picked, key=examples.index)
    assert picked == InfLoRA(InfLoRA.Params(samples=4))._examples(ctx) and InfLoRA()._examples(ctx) == examples


def _tasks(tokenizer):
    colors = [Example("Name the color.", f"item {i}", ["red", "blue"][i % 2]) for i in range(16)]
    echo = [Example("Repeat the word.", f"w{i}", f"w{i}") for i in range(16)]
    return [(Task(name, exs, exs[:2]), [encode_for_training(tokenizer, ex, 64) for ex in exs])
            for name, exs in (("colors", colors), ("echo", echo))]  # fmt: skip


def _layer_inputs(model, layer, features):
    """The inputs of ``layer`` on ``features`` (real tokens only), [tokens, d_in]."""
    batch = collate(features, 0)
    seen = []
    handle = layer.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    with torch.no_grad():
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    handle.remove()
    return seen[0][batch["attention_mask"].bool()]


def test_in_the_loop_the_new_branch_leaves_the_earlier_inputs_alone_while_it_trains(tiny_model_dir):
    torch.manual_seed(0)
    method = build_method("inflora")
    model = method.setup(load_base_model(tiny_model_dir), lora_config(4, 8, 0.0, ["q_proj", "v_proj"]))
    tokenizer = load_tokenizer(tiny_model_dir)
    (task1, feats1), (task2, feats2) = _tasks(tokenizer)
    assert len(method.stages([task1, task2])) == 2  # the schedule's sessions
    cfg = TrainingConfig(batch_size=4, lr=1e-2, checkpoint_every=0)
    train(model, tokenizer, method, [task1], feats1, stage=1, steps=4, cfg=cfg)
    layer = model.base_model.model.model.layers[1].self_attn.v_proj
    key = next(k for k in method.bases if k.endswith("layers.1.self_attn.v_proj"))
    assert method.per_stage[0]["threshold"] == 0.95 and method.kinds[key] == "remove"
    basis = method.bases[key].float()
    old, new = _layer_inputs(model, layer, feats1), _layer_inputs(model, layer, feats2)
    kept = old @ basis @ basis.T  # task 1's inputs within the kept subspace
    task1_weights = {n: p.detach().clone() for n, p in model.named_parameters() if ".task-1." in n}
    ratios, branch = [], lambda x: layer.lora_B["task-2"](layer.lora_A["task-2"](x)) * layer.scaling["task-2"]

    def check(record):
        with torch.no_grad():
            ratios.append((branch(kept).norm() / branch(new).norm()).item())

    train(model, tokenizer, method, [task2], feats2, stage=2, steps=4, cfg=cfg, on_step=check)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_B.task-2." in n for n in trainable)
    assert model.active_adapters == ["task-1", "task-2"] == method.adapters
    assert all(torch.equal(p, task1_weights[n]) for n, p in model.named_parameters() if ".task-1." in n)
    a2 = layer.lora_A["task-2"].weight.detach()
    assert torch.allclose(a2 @ basis, torch.zeros(4, basis.shape[1]), atol=1e-6)  # rows off the kept subspace
    assert torch.allclose(a2 @ a2.T, torch.eye(4) / 3, atol=1e-5)  # orthonormal rows / sqrt(3), frozen in training
    assert layer.lora_B["task-2"].weight.abs().sum() > 0 and len(ratios) == 4
    assert max(ratios) < 1e-5, ratios  # the trained branch is ~0 on the earlier inputs it must not disturb
    assert method.per_stage[1]["threshold"] == pytest.approx(0.975) and len(method.per_stage) == 2
