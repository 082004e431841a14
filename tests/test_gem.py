"""gem: GEM's QP projection and A-GEM's formula against answers worked by hand, the memory, and in the loop."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import train

from lcia.config import TrainingConfig
from lcia.data.prompts import encode_for_training
from lcia.data.schema import Example
from lcia.data.tasks import Task
from lcia.methods import TrainContext, build_method
from lcia.methods.gem import agem_projection, gem_dual, gem_projection
from lcia.pipeline.checkpoints import load_state, save_state

# --- the projection, worked by hand ---------------------------------------------------------------------

CASES = [
    # g, memory gradients g_k, margin, eps, expected g~, expected dual v
    # one constraint, g1 = e1: the half-plane x1 >= 0; the nearest point drops g's x1; v = -<g,g1>/|g1|^2 = 1
    ([-1.0, 1.0], [[1.0, 0.0]], 0.0, 0.0, [0.0, 1.0], [1.0]),
    # two orthogonal constraints in 3-D: both coordinates cut to 0, v = (1, 1)
    ([-1.0, -1.0, 1.0], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], 0.0, 0.0, [0.0, 0.0, 1.0], [1.0, 1.0]),
    # the cone x1 >= |x2|: (-1, 0) projects to its apex 0 = g + 0.5 g1 + 0.5 g2 (projecting on one constraint
    # after the other would give (-0.5, 0.5), then (0, 0.5)... not the QP's answer)
    ([-1.0, 0.0], [[1.0, 1.0], [1.0, -1.0]], 0.0, 0.0, [0.0, 0.0], [0.5, 0.5]),
    # both violated (<g,g1> = -2, <g,g2> = -1) but only g1 binds: (0, 1) has <., g2> = 1 >= 0, so v = (2, 0)
    ([-2.0, 1.0], [[1.0, 0.0], [1.0, 1.0]], 0.0, 0.0, [0.0, 1.0], [2.0, 0.0]),
    # margin 2 (a lower bound on v): v = max(2, 1) = 2, g~ = (-1, 1) + 2 (1, 0) = (1, 1)
    ([-1.0, 1.0], [[1.0, 0.0]], 2.0, 0.0, [1.0, 1.0], [2.0]),
    # eps 1: v = -<g,g1> / (|g1|^2 + eps) = 1 / 2, g~ = (-0.5, 1): eps shortens the step
    ([-1.0, 1.0], [[1.0, 0.0]], 0.0, 1.0, [-0.5, 1.0], [0.5]),
    # two equal memory gradients (a singular Gram matrix, eps 0): v1 + v2 = 1, g~ = (0, 1) either way
    ([-1.0, 1.0], [[1.0, 0.0], [1.0, 0.0]], 0.0, 0.0, [0.0, 1.0], None),
]


@pytest.mark.parametrize("g, memories, margin, eps, expected, dual", CASES)
def test_gem_projection_solves_the_qp_worked_by_hand(g, memories, margin, eps, expected, dual):
    g_t, G = torch.tensor(g, dtype=torch.float64), torch.tensor(memories, dtype=torch.float64)
    assert gem_projection(g_t, G, margin, eps).tolist() == pytest.approx(expected, abs=1e-9)
    v = gem_dual((G @ G.T).numpy(), (G @ g_t).numpy(), margin, eps)
    if dual is not None:
        assert v.tolist() == pytest.approx(dual, abs=1e-9)
    else:
        assert v.sum() == pytest.approx(1.0) and (v >= 0).all()


def test_gem_projection_keeps_the_kkt_conditions_on_random_gradients():
    rng = np.random.default_rng(0)
    G, g = torch.from_numpy(rng.normal(size=(6, 40))), torch.from_numpy(rng.normal(size=40) - 0.5)
    G[5] = G[0] + G[1]  # a dependent memory gradient
    projected = gem_projection(g, G)
    v = gem_dual((G @ G.T).numpy(), (G @ g).numpy())
    dots = (G @ projected).numpy()
    assert (dots >= -1e-9).all() and (v >= 0).all()  # feasible, dual feasible
    assert np.abs(v * dots).max() < 1e-9  # complementary slackness: a constraint with v_k > 0 binds
    assert torch.allclose(projected, g + torch.from_numpy(v) @ G)  # stationarity
    # eps > 0 and a margin: v >= margin, and each constraint may miss by eps v_k at most
    v = gem_dual((G @ G.T).numpy(), (G @ g).numpy(), margin=0.5, eps=0.1)
    dots = (G @ gem_projection(g, G, margin=0.5, eps=0.1)).numpy()
    assert (v >= 0.5 - 1e-12).all() and (dots >= -0.1 * v - 1e-9).all()


def test_agem_projection_by_hand():
    g, ref = torch.tensor([-2.0, 1.0]), torch.tensor([1.0, 1.0])
    # <g, ref> = -1, |ref|^2 = 2: g - (-1 / 2) ref = (-1.5, 1.5), orthogonal to ref
    assert agem_projection(g, ref).tolist() == [-1.5, 1.5]
    assert agem_projection(torch.tensor([2.0, 1.0]), ref).tolist() == [2.0, 1.0]  # no conflict: unchanged


# --- the memory ---------------------------------------------------------------------------------------


def _task(name, n, output="x"):
    examples = [Example(f"Task {name}.", f"{name}-{i}", output, id=f"{name}{i}") for i in range(n)]
    return Task(name, examples, [])


def _fill(method, tasks):
    for stage, task in enumerate(tasks, start=1):
        torch.manual_seed(stage)  # as the loop seeds each stage
        ctx = TrainContext(None, None, None, stage, [task])
        method.before_task(ctx)
        method.after_task(ctx)


def test_memory_keeps_a_seeded_choice_per_task_and_draws_seeded_batches():
    method = build_method("gem", {"memory_size": 5, "memory_batch": 3})
    a, b = _task("a", 30), _task("b", 4)
    _fill(method, [a, b])
    assert {t: len(kept) for t, kept in method.memory.items()} == {"a": 5, "b": 4}
    assert len(set(method.memory["a"])) == 5 and set(method.memory["a"]) <= set(a.train)
    again = build_method("gem", {"memory_size": 5, "memory_batch": 3})
    _fill(again, [a, b])
    assert again.memory == method.memory
    batches = method._memory_batches(step=7)
    assert [len(batch) for batch in batches] == [3, 3] and batches == method._memory_batches(step=7)
    assert set(batches[0]) <= set(method.memory["a"]) and len(set(batches[0])) == 3
    assert batches != method._memory_batches(step=8)
    pooled = build_method("gem", {"variant": "agem", "memory_size": 5, "memory_batch": 6})
    _fill(pooled, [a, b])
    (batch,) = pooled._memory_batches(step=1)  # one reference batch from both tasks' memories
    assert len(batch) == 6 and set(batch) <= set(pooled.memory["a"] + pooled.memory["b"])


def test_memory_survives_a_checkpoint(tmp_path):
    method = build_method("gem", {"memory_size": 3})
    messages = ({"role": "user", "content": "hi"},)
    task = Task("m", [Example("Say.", str(i), "y", ("y", "yes"), id=f"e{i}", messages=messages) for i in range(9)], [])
    _fill(method, [task])
    method.per_stage = [{"stage": 2, "steps": 4, "projected": 3, "violated": 3}]
    save_state(tmp_path, "method", method.state_dict())
    restored = build_method("gem", {"memory_size": 3})
    restored.load_state_dict(load_state(tmp_path, "method"))
    assert restored.memory == method.memory and restored.memory["m"][0].messages == messages
    assert restored.seed == method.seed and restored.summary() == method.summary()
    assert method.artifacts()["gem_memory.json"]["memory"]["m"][0]["references"] == ("y", "yes")
    run = SimpleNamespace(results={"method": restored.summary()})
    assert type(restored).report_lines(run) == [
        "GEM (3 examples kept per task, 8 per memory batch): projected steps: stage 2 3/4."
    ]


# --- in the loop ----------------------------------------------------------------------------------------


def _trainable_grads(model):
    return [p.grad.detach().clone().flatten() for p in model.parameters() if p.requires_grad]


def _watch(method, model, steps):
    """Wraps the hook: each step's gradient before and after it and the memory gradients it compared with."""
    memory_gradients, after_backward = method._memory_gradients, method.after_backward

    def spy(ctx, params):
        steps[-1]["memories"] = memory_gradients(ctx, params)
        return steps[-1]["memories"]

    def watched(ctx):
        steps.append({"before": torch.cat(_trainable_grads(model))})
        after_backward(ctx)
        steps[-1] |= {"after": torch.cat(_trainable_grads(model)), "projected": ctx.log["gem_projected"]}
        steps[-1]["training"] = model.training

    method._memory_gradients, method.after_backward = spy, watched


@pytest.mark.parametrize("variant", ["gem", "agem"])
def test_projected_steps_keep_every_memory_constraint(tiny_lora, variant):
    tok, model, colors, features = tiny_lora()  # colors: every answer "red"
    method = build_method("gem", {"variant": variant, "memory_size": 8, "memory_batch": 2, "eps": 0.0})
    cfg = TrainingConfig(batch_size=4, lr=1e-2, checkpoint_every=0)
    first = []
    train(model, tok, method, [colors], features, steps=4, cfg=cfg, on_step=first.append)
    assert "gem_projected" not in first[0] and len(method.memory["colors"]) == 8  # the first task trains freely

    blue = [Example(ex.instruction, ex.input, "blue") for ex in colors.train]  # the same prompts, another answer
    steps, log = [], []
    _watch(method, model, steps)
    blue_task = Task("blue", blue, blue[:2])
    stats = train(model, tok, method, [blue_task], [encode_for_training(tok, ex, 64) for ex in blue],
                  steps=4, cfg=cfg, stage=2, on_step=log.append)  # fmt: skip
    projected = [s for s in steps if s["projected"]]
    assert projected and all(s["training"] for s in steps)
    for s in steps:
        if not s["projected"]:
            assert torch.equal(s["after"], s["before"]) and (s["memories"] @ s["before"] >= 0).all()
            continue
        assert (s["memories"] @ s["before"] < 0).any()
        scale = s["after"].norm() * s["memories"].norm(dim=1)
        assert (s["memories"] @ s["after"] >= -1e-5 * scale).all()  # <g~, g_k> >= -tol
    assert stats["method"]["gem_projected_steps"] == len(projected) == sum(r["gem_projected"] for r in log)
    assert method.summary()["per_stage"] == [
        {"stage": 2, "steps": 4, "projected": len(projected), "violated": sum(r["gem_violated"] for r in log)}
    ]
