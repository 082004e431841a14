"""ilora: the interpolation coefficient and the consistency loss by hand, the replay loss in the loop, the slow
copy's updates and reset, and its state through a checkpoint."""

from __future__ import annotations

import pytest
import torch
from conftest import train

from lcia.config import TrainingConfig
from lcia.data.prompts import encode_for_training
from lcia.data.schema import Example
from lcia.data.tasks import Task
from lcia.methods import TrainContext, build_method
from lcia.methods.ilora import consistency_loss, ema_coefficient
from lcia.models.forward import answer_forward, batch_inputs
from lcia.pipeline.checkpoints import load_state, save_state


def test_the_slow_weight_is_capped_by_one_minus_one_over_step_plus_one():
    assert [ema_coefficient(step, 0.9) for step in (1, 3, 9, 50)] == [0.5, 0.75, 0.9, 0.9]
    assert ema_coefficient(1, 0.25) == 0.25  # the official default: 0.25 from the first step (1 - 1/2 > 0.25)


def test_consistency_loss_by_hand():
    # two "layers", one row of two tokens (the second is padding), two features
    fast = (torch.tensor([[[1.0, 2.0], [9.0, 9.0]]], requires_grad=True), torch.tensor([[[0.0, 0.0], [5.0, 5.0]]]))
    slow = (torch.tensor([[[3.0, 1.0], [0.0, 0.0]]]), torch.tensor([[[-1.0, 0.5], [0.0, 0.0]]]))
    mask = torch.tensor([[1, 0]])
    # layer 0, token 0: target max(fast, slow) = (3, 2): squares (1-3)^2 = 4 and 0, mean over 2 features 2.0
    # layer 1, token 0: target (0, 0.5): squares 0 and 0.25, mean 0.125; the padded token does not count
    loss = consistency_loss(fast, slow, mask)
    assert loss.item() == pytest.approx((2.0 + 0.125) / 2)
    loss.backward()
    # d/d fast[0][0,0,0] of (f - 3)^2 / (2 layers * 1 token * 2 features) = 2 (1 - 3) / 4 = -1: pulled up to slow;
    # where fast is already above slow (feature 1) or on padding, no gradient
    assert fast[0].grad.tolist() == [[[-1.0, 0.0], [0.0, 0.0]]]


def _ctx(model, stage, tasks, tok, step=0):
    inputs = lambda examples: batch_inputs(  # noqa: E731
        [encode_for_training(tok, ex, 64) for ex in examples], tok.pad_token_id, "cpu"
    )
    return TrainContext(model, None, None, stage, list(tasks), step=step, inputs=inputs)


def _echo(tok):
    examples = [Example("Repeat the word.", f"w{i}", f"w{i}") for i in range(16)]
    return Task("echo", examples, examples[:2]), [encode_for_training(tok, ex, 64) for ex in examples]


def _train(parts, method, stage, steps=4, on_step=None):
    tok, model, task, features = parts
    cfg = TrainingConfig(batch_size=4, lr=1e-2, checkpoint_every=0)
    return train(model, tok, method, [task], features, stage=stage, steps=steps, cfg=cfg, on_step=on_step)


def test_the_slow_copy_moves_toward_the_fast_one_and_resets_at_a_stage_start(tiny_lora):
    tok, model, task, _ = tiny_lora()
    method = build_method("ilora", {"ema_alpha": 0.9})
    method.before_task(_ctx(model, 1, [task], tok))
    name, p = next((n, p) for n, p in model.named_parameters() if p.requires_grad)
    start = p.detach().clone()
    with torch.no_grad():
        p.add_(1.0)
    method.after_optimizer_step(_ctx(model, 1, [task], tok, step=1))  # a = min(0.5, 0.9) = 0.5
    assert torch.allclose(method.slow[name], start + 0.5)
    with torch.no_grad():
        p.add_(1.0)
    method.after_optimizer_step(_ctx(model, 1, [task], tok, step=3))  # a = 0.75: 0.75 (s + 0.5) + 0.25 (s + 2)
    assert torch.allclose(method.slow[name], start + 0.875)
    method.before_task(_ctx(model, 2, [task], tok))
    assert torch.equal(method.slow[name], p.detach())


def test_replay_loss_and_consistency_by_hand_on_the_tiny_model(tiny_lora):
    tok, model, task, features = tiny_lora()
    method = build_method("ilora", {"reg_weight": 3.0, "buffer_size": 4})
    steps = []
    _train((tok, model, task, features), method, stage=1, on_step=steps.append)
    assert not any("ilora_consistency" in s for s in steps)  # nothing to replay in the first stage
    assert sum(map(len, method.memory.buffer.values())) == 4

    echo, echo_features = _echo(tok)
    ctx = _ctx(model, 2, [echo], tok)
    method.before_task(ctx)  # slow = fast: the consistency loss is zero (no dropout in tiny_lora)
    batch = batch_inputs(echo_features[:2], tok.pad_token_id, "cpu")
    model.train()
    outputs = answer_forward(model, batch)
    torch.manual_seed(7)
    extra = method.loss(ctx, batch, outputs)
    assert ctx.log["ilora_consistency"] == pytest.approx(0.0, abs=1e-12)
    replayed = method._replayed(2, 7 * 1_000_003 + ctx.step * 1_000)  # the same draw: two of the four kept
    replay_loss = answer_forward(model, ctx.inputs(replayed)).loss
    assert ctx.log["ilora_replay_loss"] == pytest.approx(replay_loss.item(), rel=1e-5)
    assert (outputs.loss + extra).item() == pytest.approx((outputs.loss + replay_loss).item() / 2, rel=1e-5)

    with torch.no_grad():  # the fast copy moves away from the slow one: the hidden states now differ
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    outputs = answer_forward(model, batch)
    torch.manual_seed(7)
    extra = method.loss(ctx, batch, outputs)
    consistency = ctx.log["ilora_consistency"]
    assert consistency > 0
    expected = (outputs.loss.item() + ctx.log["ilora_replay_loss"]) / 2 + 3.0 * consistency
    assert (outputs.loss + extra).item() == pytest.approx(expected, rel=1e-5)
    (outputs.loss + extra).backward()  # the slow pass left the fast graph intact
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_in_the_loop_stage_2_replays_stage_1_and_the_slow_copy_trails_the_fast_one(tiny_lora):
    tok, model, task, features = tiny_lora()
    method = build_method("ilora", {"buffer_size": 6})
    _train((tok, model, task, features), method, stage=1)
    echo, echo_features = _echo(tok)
    steps = []
    stats = _train((tok, model, echo, echo_features), method, stage=2, on_step=steps.append)
    assert len(steps) == 4 and all(s["ilora_consistency"] >= 0 and s["ilora_replay_loss"] > 0 for s in steps)
    assert stats["method"] == {"replay_buffer": 6}
    assert set(method.memory.buffer) == {"colors", "echo"}
    fast = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    assert any(not torch.equal(method.slow[n], fast[n]) for n in fast)  # a = 0.25: close to the fast, not equal
    assert all(torch.allclose(method.slow[n], fast[n], atol=0.05) for n in fast)
    per_stage = method.summary()["per_stage"]
    assert [s["replay_batches"] for s in per_stage] == [0, 4] and per_stage[0]["consistency"] is None


def test_rejects_bad_parameters():
    with pytest.raises(ValueError, match="ema_alpha"):
        build_method("ilora", {"ema_alpha": 1.5})
    with pytest.raises(ValueError, match="sampling"):
        build_method("ilora", {"sampling": "ring"})


def test_the_state_survives_a_checkpoint(tiny_lora, tmp_path):
    # the whole stop-and-resume of a run inside stage 2 is tests/test_method_contract.py -k ilora
    tok, model, task, features = tiny_lora()
    method = build_method("ilora", {"buffer_size": 3})
    _train((tok, model, task, features), method, stage=1, steps=1)
    method.before_task(_ctx(model, 2, [task], tok))
    save_state(tmp_path, "method", method.state_dict())
    restored = build_method("ilora", {"buffer_size": 3})
    restored.load_state_dict(load_state(tmp_path, "method"))
    assert restored.memory.buffer == method.memory.buffer and restored.per_stage == method.per_stage
    assert restored.slow.keys() == method.slow.keys() and all(
        torch.equal(restored.slow[n], t) for n, t in method.slow.items()
    )
