import pytest
import torch
from conftest import train

from lcia.config import TrainingConfig
from lcia.methods.base import Method
from lcia.training.loop import length_grouped_batches


class Recorder(Method):
    """Counts hook calls and checks the gradient is there when after_backward runs."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def before_task(self, ctx):
        self.calls.append("before_task")

    def after_backward(self, ctx):
        assert all(p.grad is not None for p in ctx.model.parameters() if p.requires_grad)
        self.calls.append("after_backward")

    def after_optimizer_step(self, ctx):
        self.calls.append("after_optimizer_step")

    def after_task(self, ctx):
        self.calls.append("after_task")


def test_hooks_run_once_per_optimizer_step_with_accumulation(tiny_lora):
    tok, model, task, examples = tiny_lora()
    method = Recorder()
    logged = []
    stats = train(
        model,
        tok,
        method,
        [task],
        examples,
        stage=1,
        steps=3,
        cfg=TrainingConfig(batch_size=4, grad_accum=2, lr=1e-2),
        seed=0,
        on_step=logged.append,
    )
    assert method.calls == ["before_task"] + ["after_backward", "after_optimizer_step"] * 3 + ["after_task"]
    assert [r["step"] for r in logged] == [1, 2, 3] and stats["steps"] == 3
    assert stats["tokens"] > 0 and stats["examples"] == 16


def test_training_learns_and_touches_only_lora(tiny_lora):
    tok, model, task, examples = tiny_lora()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    logged = []
    train(
        model,
        tok,
        Method(),
        [task],
        examples,
        stage=1,
        steps=30,
        cfg=TrainingConfig(batch_size=8, lr=3e-2),
        seed=0,
        on_step=logged.append,
    )
    assert logged[-1]["loss"] < 0.5 * logged[0]["loss"]
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if not p.requires_grad)
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)


def test_length_grouped_batches_cover_every_example_once():
    lengths = [5, 50, 7, 49, 6, 51, 8, 48, 3]
    batches = length_grouped_batches(lengths, 2, torch.Generator().manual_seed(0))
    assert sorted(i for b in batches for i in b) == list(range(9))
    assert all(len(b) <= 2 for b in batches)
    again = length_grouped_batches(lengths, 2, torch.Generator().manual_seed(0))
    assert batches == again


def test_answer_only_logits_give_the_loss_and_gradients_of_the_full_forward(tiny_lora):
    """Logits at the answer positions only = Hugging Face's own loss and gradients over full logits."""
    from lcia.data.prompts import Encoded
    from lcia.models.forward import answer_forward, collate

    tok, model, _, _ = tiny_lora()
    rows = [
        Encoded([5, 6, 7, 8, 9, 10], [-100, -100, -100, -100, 9, 10], False),
        Encoded([11, 12, 13], [-100, 12, 13], False),
    ]
    batch = collate(rows, tok.pad_token_id)
    model.train()
    ours = answer_forward(model, batch)
    assert ours.logits.shape == (4, len(tok))  # one row per answer token: 9, 10, 12, 13
    ours.loss.backward()
    ours_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()

    reference = model(**batch)  # the stock forward: logits everywhere, HF's causal-LM loss
    assert reference.logits.shape[:2] == (2, 6)
    torch.testing.assert_close(ours.logits, reference.logits[:, :-1][batch["labels"][:, 1:] != -100])
    reference.loss.backward()
    assert ours.loss.item() == pytest.approx(reference.loss.item(), rel=1e-6)
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(ours_grads[name], p.grad, rtol=1e-4, atol=1e-6)
