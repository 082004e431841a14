"""The per-stage training loop: one explicit loop that reads top to bottom.

Features and their trade-offs:
* Tokenised once per stage; batches grouped by length (shuffled chunks of 64 batches sorted by length),
  so little compute goes to padding while the order stays random across chunks.
* A fixed budget of optimizer steps per stage (``training.steps`` per task), cycling over the data:
  every task gets the same number of updates whatever its size, so methods compare at equal cost.
* Gradient accumulation: method hooks after the backward pass and after the optimizer step run once
  per optimizer step, on the accumulated gradient.
* A fresh AdamW and scheduler per stage, as when each task is its own fine-tuning run.
* bf16 autocast through Accelerate when asked (master weights stay fp32).
* Seeded: the batch order and LoRA dropout depend only on (seed, stage), so runs repeat exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, get_scheduler

from lcia.data.prompts import IGNORE_INDEX, encode_for_training
from lcia.data.schema import Example
from lcia.data.tasks import Task
from lcia.methods.base import Method, TrainContext

CHUNK_BATCHES = 64  # batches per length-sorted chunk


def length_grouped_batches(lengths: list[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch of batches: random order, each chunk of 64 batches sorted by length, batches shuffled."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    chunk = batch_size * CHUNK_BATCHES
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def collate(features: list, pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(f.input_ids) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for row, f in enumerate(features):
        n = len(f.input_ids)
        ids[row, :n] = torch.tensor(f.input_ids)
        labels[row, :n] = torch.tensor(f.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def batch_stream(features: list, batch_size: int, pad_id: int, generator: torch.Generator):
    """Endless length-grouped batches, epoch after epoch."""
    lengths = [len(f.input_ids) for f in features]
    while True:
        for indices in length_grouped_batches(lengths, batch_size, generator):
            yield collate([features[i] for i in indices], pad_id)


def train_stage(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    method: Method,
    tasks: list[Task],
    examples: list[Example],
    *,
    stage: int,
    steps: int,
    cfg,  # lcia.config.TrainingConfig
    seed: int,
    accelerator: Accelerator,
    on_step: Callable[[dict], None] | None = None,
    progress: bool = True,
) -> dict:
    """Train ``model`` for ``steps`` optimizer steps on ``examples``; returns the stage's statistics."""
    if not examples:
        raise ValueError(f"stage {stage} has no training examples")
    torch.manual_seed(seed * 1000 + stage)
    generator = torch.Generator().manual_seed(seed * 1000 + stage)

    features = [encode_for_training(tokenizer, ex, cfg.max_length) for ex in examples]
    batches = batch_stream(features, cfg.batch_size, tokenizer.pad_token_id, generator)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=steps)
    optimizer, scheduler = accelerator.prepare(optimizer, scheduler)
    ctx = TrainContext(model=model, optimizer=optimizer, accelerator=accelerator, stage=stage, tasks=tasks)

    model.train()
    method.before_task(ctx)
    tokens, started, loss_value = 0, time.perf_counter(), math.nan
    bar = tqdm(range(steps), desc=f"train stage {stage} ({'+'.join(t.name for t in tasks)})", disable=not progress, leave=False)
    for step in bar:
        ctx.step, ctx.log = step + 1, {}
        loss_sum = 0.0
        for micro in range(cfg.grad_accum):
            batch = {k: v.to(accelerator.device) for k, v in next(batches).items()}
            last = micro == cfg.grad_accum - 1
            with nullcontext() if last else accelerator.no_sync(model):
                with accelerator.autocast():
                    outputs = model(**batch)
                    loss = outputs.loss
                    extra = method.loss(ctx, batch, outputs)
                    if extra is not None:
                        loss = loss + extra
                accelerator.backward(loss / cfg.grad_accum)
            loss_sum += loss.item() / cfg.grad_accum
            tokens += int(batch["attention_mask"].sum())
        method.after_backward(ctx)
        if cfg.max_grad_norm is not None:
            accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        method.after_optimizer_step(ctx)
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss_sum
        bar.set_postfix(loss=f"{loss_value:.3f}")
        if on_step is not None:
            on_step({"stage": stage, "step": step + 1, "loss": loss_value, "lr": scheduler.get_last_lr()[0], **ctx.log})
    method.after_task(ctx)
    model.eval()
    seconds = time.perf_counter() - started
    return {
        "steps": steps,
        "examples": len(examples),
        "truncated": sum(f.truncated for f in features),
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_second": round(tokens / seconds, 1),
        "final_loss": loss_value,
    }
