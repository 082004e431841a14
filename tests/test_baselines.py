"""ewc, l2, lwf and replay: each mechanism against values computed by hand, in the loop, and resumed in a run."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import train

from lcia.config import TrainingConfig
from lcia.data.schema import Example
from lcia.data.tasks import Task
from lcia.methods import TrainContext, build_method
from lcia.methods.lwf import distillation_loss
from lcia.models.forward import answer_forward, collate
from lcia.pipeline import stream_run as runner
from lcia.pipeline.checkpoints import load_state, save_state
from lcia.pipeline.run_files import RunDir


class Two(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        self.b = torch.nn.Parameter(torch.tensor([[0.5]]))


def _ctx(model, stage=1, tasks=()):
    return TrainContext(model=model, optimizer=None, accelerator=None, stage=stage, tasks=list(tasks))


def _step(method, ctx, grads):
    for p, g in zip(ctx.model.parameters(), grads):
        p.grad = torch.tensor(g)
    method.after_backward(ctx)


# --- ewc ---------------------------------------------------------------------------------------------


def test_ewc_fisher_is_the_mean_squared_task_gradient_and_decays_by_gamma():
    model, method = Two(), build_method("ewc", {"lam": 10.0, "gamma": 0.5})
    ctx = _ctx(model)
    method.before_task(ctx)
    _step(method, ctx, [[1.0, 2.0], [[3.0]]])
    _step(method, ctx, [[3.0, 0.0], [[1.0]]])
    method.after_task(ctx)
    assert method.fisher["a"].tolist() == [5.0, 2.0] and method.fisher["b"].tolist() == [[5.0]]
    assert method.anchor["a"].tolist() == [1.0, -2.0]

    ctx = _ctx(model, stage=2)
    method.before_task(ctx)
    _step(method, ctx, [[2.0, 2.0], [[0.0]]])  # at the anchor: the penalty adds nothing, F_task reads g
    method.after_task(ctx)
    assert method.fisher["a"].tolist() == [0.5 * 5 + 4, 0.5 * 2 + 4] and method.fisher["b"].tolist() == [[2.5]]


def test_ewc_penalty_and_its_gradient_by_hand():
    model, method = Two(), build_method("ewc", {"lam": 10.0})
    ctx = _ctx(model)
    method.before_task(ctx)
    _step(method, ctx, [[1.0, 2.0], [[3.0]]])
    method.after_task(ctx)  # F = g^2, anchor = (1, -2), 0.5
    with torch.no_grad():
        model.a += torch.tensor([0.1, 0.2])
        model.b -= 0.3
    ctx = _ctx(model, stage=2)
    method.before_task(ctx)
    _step(method, ctx, [[0.5, 0.5], [[0.5]]])
    expected = 0.5 * 10 * (1 * 0.1**2 + 4 * 0.2**2 + 9 * 0.3**2)
    assert ctx.log["ewc_penalty"] == pytest.approx(expected)
    assert model.a.grad.tolist() == pytest.approx([0.5 + 10 * 1 * 0.1, 0.5 + 10 * 4 * 0.2])
    assert model.b.grad.item() == pytest.approx(0.5 - 10 * 9 * 0.3)
    # the Fisher of this task read the task gradient, before the penalty was added
    assert method.task_fisher["a"].tolist() == [0.25, 0.25]


def _train(make_or_parts, method, stage, steps=6, lr=1e-2, on_step=None):
    tok, model, task, features = make_or_parts
    stats = train(
        model,
        tok,
        method,
        [task],
        features,
        stage=stage,
        steps=steps,
        cfg=TrainingConfig(batch_size=4, lr=lr, checkpoint_every=0),
        seed=0,
        on_step=on_step,
    )
    return stats


def _second_task(tok):
    from lcia.data.prompts import encode_for_training

    examples = [Example("Repeat the word.", f"w{i}", f"w{i}") for i in range(16)]
    return Task("echo", examples, examples[:2]), [encode_for_training(tok, ex, 64) for ex in examples]


def _drift(tiny_lora, name, params):
    """sum F (theta - theta*)^2 after task 2, with F and theta* of task 1: the drift that EWC penalises."""
    tok, model, task, features = tiny_lora()
    method = build_method(name, params)
    _train((tok, model, task, features), method, stage=1)
    fisher, anchor = dict(method.fisher), dict(method.anchor)
    echo, echo_features = _second_task(tok)
    stats = _train((tok, model, echo, echo_features), method, stage=2)
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    return sum(float((fisher[n] * (params[n] - anchor[n]) ** 2).sum()) for n in fisher), stats, method


# --- l2 (the guide's example, docs/methods.md) -----------------------------------------------------


def test_l2_pull_and_penalty_by_hand():
    model, method = Two(), build_method("l2", {"lam": 3.0})
    ctx = _ctx(model)
    _step(method, ctx, [[1.0, 1.0], [[1.0]]])  # the first task trains freely
    assert model.a.grad.tolist() == [1.0, 1.0] and "l2_penalty" not in ctx.log
    method.after_task(ctx)
    with torch.no_grad():
        model.a += torch.tensor([0.5, -1.0])  # a drifts by (0.5, -1) during the second task, b stays
    ctx = _ctx(model, stage=2)
    _step(method, ctx, [[1.0, 1.0], [[1.0]]])
    assert model.a.grad.tolist() == [1.0 + 3.0 * 0.5, 1.0 + 3.0 * -1.0] and model.b.grad.tolist() == [[1.0]]
    assert ctx.log["l2_penalty"] == pytest.approx(0.5 * 3.0 * (0.25 + 1.0))
    method.after_task(ctx)
    assert method.summary() == {"lam": 3.0, "per_stage": [{"stage": 2, "mean_penalty": pytest.approx(1.875)}]}


def test_ewc_in_the_loop_holds_the_weights_that_mattered(tiny_lora):
    free, _, _ = _drift(tiny_lora, "ewc", {"lam": 0.0})
    held, stats, method = _drift(tiny_lora, "ewc", {"lam": 1e4})
    assert held < 0.5 * free
    assert stats["method"]["ewc_fisher_mean"] > 0
    assert set(method.fisher) == set(method.anchor) and all(f.min() >= 0 for f in method.fisher.values())


# --- lwf ---------------------------------------------------------------------------------------------


def test_lwf_target_by_hand():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
    teacher = torch.tensor([[0.0, 1.0, 0.0], [0.0, 2.0, 0.0]])
    t = 2.0
    expected = 0.0
    for s_row, t_row in zip(student, teacher):
        p_t = torch.softmax(t_row / t, -1)
        expected += float((p_t * (torch.log(p_t) - torch.log_softmax(s_row / t, -1))).sum())
    assert float(distillation_loss(student, teacher, t)) == pytest.approx(t**2 * expected / 2)
    assert float(distillation_loss(teacher, teacher, t)) == pytest.approx(0.0, abs=1e-7)


def test_lwf_distils_toward_the_previous_task_weights(tiny_lora):
    tok, model, task, features = tiny_lora()
    method = build_method("lwf", {"lam": 2.0})
    _train((tok, model, task, features), method, stage=1)
    echo, echo_features = _second_task(tok)
    batch = collate(echo_features[:4], tok.pad_token_id)
    ctx = _ctx(model, stage=2)
    model.train()
    assert method.loss(ctx, batch, answer_forward(model, batch)).item() == pytest.approx(0.0, abs=1e-6)

    teacher_logits = answer_forward(model, batch).logits.detach()
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    outputs = answer_forward(model, batch)
    extra = method.loss(ctx, batch, outputs)
    expected = 2.0 * distillation_loss(outputs.logits.detach(), teacher_logits, 2.0).item()
    assert extra.item() == pytest.approx(expected, rel=1e-5) and extra.item() > 0
    (outputs.loss + extra).backward()  # the teacher pass left the student's graph intact
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in trained:
                p.copy_(trained[n])
                p.grad = None

    steps = []
    _train((tok, model, echo, echo_features), method, stage=2, on_step=steps.append)
    kl = [record["lwf_kl"] for record in steps]
    assert len(kl) == 6 and kl[0] == pytest.approx(0.0, abs=1e-6) and max(kl[1:]) > 0  # step 1: still the teacher


# --- replay ------------------------------------------------------------------------------------------


def _task(name, n):
    return Task(name, [Example(f"Task {name}.", f"{name}-{i}", "x") for i in range(n)], [])


def _fill(method, tasks):
    for stage, task in enumerate(tasks, start=1):
        torch.manual_seed(stage)  # as the loop seeds each stage
        method.after_task(_ctx(None, stage, [task]))


def test_replay_balanced_buffer_is_bounded_and_shared_equally():
    method = build_method("replay", {"buffer_size": 20})
    a, b, c = _task("a", 30), _task("b", 50), _task("c", 7)
    _fill(method, [a])
    assert len(method.buffer["a"]) == 20 and len(set(method.buffer["a"])) == 20
    first = list(method.buffer["a"])
    _fill(method, [a, b])
    _fill(method, [a, b, c])
    assert {t: len(kept) for t, kept in method.buffer.items()} == {"a": 6, "b": 6, "c": 6}
    assert method.buffer["a"] == first[:6]  # an earlier task gives up the end of its random order
    assert set(method.buffer["b"]) <= set(b.train)
    assert method.train_examples([c]) == c.train + [ex for kept in method.buffer.values() for ex in kept]


def test_replay_reservoir_keeps_every_example_with_equal_probability():
    method = build_method("replay", {"buffer_size": 100, "sampling": "reservoir"})
    _fill(method, [_task("a", 1000), _task("b", 3000)])
    kept = {t: len(v) for t, v in method.buffer.items()}
    assert sum(kept.values()) == 100 and method.seen == 4000
    assert 15 <= kept["a"] <= 35  # expected 25: 1000 of the 4000 examples seen
    assert all(len(set(v)) == len(v) for v in method.buffer.values())


def test_replay_buffer_survives_a_checkpoint(tmp_path):
    method = build_method("replay", {"buffer_size": 5})
    messages = ({"role": "user", "content": "hi"},)
    task = Task("m", [Example("Say.", str(i), "y", ("y", "yes"), id=f"e{i}", messages=messages) for i in range(9)], [])
    _fill(method, [task])
    save_state(tmp_path, "method", method.state_dict())
    restored = build_method("replay", {"buffer_size": 5})
    restored.load_state_dict(load_state(tmp_path, "method"))
    assert restored.buffer == method.buffer and restored.seen == method.seen
    assert restored.buffer["m"][0].messages == messages


def test_replay_rejects_bad_parameters():
    with pytest.raises(ValueError, match="sampling"):
        build_method("replay", {"sampling": "fifo"})


# --- in a run, stopped mid-stage and resumed ---------------------------------------------------------


@pytest.mark.parametrize("name", ["ewc", "lwf", "replay"])
def test_resumed_inside_stage_2_ends_as_an_uninterrupted_run(tiny_config, tmp_path, stop_and_resume, name):
    tiny_config.method.name = name
    tiny_config.training.checkpoint_every = 1
    if name == "replay":
        tiny_config.method.params = {"buffer_size": 4}
    reference_cfg = tiny_config.model_copy(update={"output_dir": str(tmp_path / "ref")})
    reference = runner.run(reference_cfg, progress=False, log=lambda *_: None)
    cfg = tiny_config.model_copy(update={"output_dir": str(tmp_path / "run")})
    resumed = stop_and_resume(cfg, 4 + 2, "stopped at stage 2, step 2")
    out, ref = RunDir(resumed.run_dir), RunDir(reference.run_dir)
    manifest = out.read_json("manifest.json")
    assert [s["resumed_at_step"] for s in manifest["timings"]["stages"]] == [0, 2]
    (where,) = manifest["resumed"]  # where the resumed part ran, beside where the run started
    assert where["rows_done"] == 2 and where["checkpoint"] == {"stage": 2, "step": 2}
    assert where["hardware"] == manifest["hardware"] and "resumed" not in ref.read_json("manifest.json")
    assert resumed.matrix == reference.matrix
    assert out.read_jsonl("train_log.jsonl") == ref.read_jsonl("train_log.jsonl")
    assert out.read_json("results.json")["method"] == ref.read_json("results.json")["method"]
    if name == "replay":
        assert out.read_json("replay_buffer.json") == ref.read_json("replay_buffer.json")
        assert sum(map(len, out.read_json("replay_buffer.json")["buffer"].values())) == 4
    assert not math.isnan(resumed.metrics["Avg.ACC"])
