"""The per-stage training loop: one explicit loop that reads top to bottom.

Features and their trade-offs:
* Tokenised once, before the stream starts (by the runner); batches grouped by length (shuffled
  chunks of 64 batches sorted by length), so little compute goes to padding while the order stays
  random across chunks.
* Logits only at the answer positions (``answer_forward``): the vocabulary projection and softmax
  over every prompt token are skipped, which makes a SmolLM2 LoRA step about 1.4 times faster on
  the CPU (``benchmarks/train_speed.py``). The loss is the usual causal-LM mean over answer tokens.
* A fixed budget of optimizer steps per stage, cycling over the data: ``training.steps`` per task (every task
  gets the same number of updates whatever its size, so methods compare at equal cost), or ``training.epochs``
  passes over the stage's own examples (the field's "one epoch per task" on benchmarks of unequal tasks).
* Gradient accumulation: method hooks after the backward pass and after the optimizer step run once
  per optimizer step, on the accumulated gradient.
* A fresh AdamW and scheduler per stage, as when each task is its own fine-tuning run.
* bf16 autocast through Accelerate when asked (master weights stay fp32).
* Vision-language models: ``images`` adds each batch's image inputs (the frozen encoder's features,
  computed once per image, or a processor's pixels) to the forward arguments.
* Several processes (``lcia.core.distributed``): every rank draws the same global batch of
  ``training.batch_size`` and trains on its share in a DDP wrapper built for the stage, its loss
  weighed by its share of the batch's answer tokens, so the averaged gradient is the one-process
  gradient of the whole batch. One scalar all-reduce per micro-batch gives every rank the batch's loss
  (and the same NaN decision); one per step agrees on a stop. On an FSDP2-sharded base the trainable tensors
  are whole on each rank and their gradients are averaged by one all-reduce per step instead of DDP.
* Seeded: the batch order and LoRA dropout depend only on (seed, stage), so runs repeat exactly.
* Checkpoints every ``training.checkpoint_every`` steps and on SIGINT/SIGTERM (``StageEvents.save``); a
  resumed stage (``Resume``: its caller restored the weights and method state) skips the batches already
  seen and takes the optimizer, scheduler and RNG state, so it ends with the same weights as an
  uninterrupted one.
* The method's capabilities hold: a method that does not declare ``needs_old_data`` trains only on the
  stage's own tasks' examples.
* A NaN or infinite loss skips its step (counted); past ``training.max_bad_steps`` the run stops with
  a checkpoint and a message.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, get_scheduler

from lcia.config import TrainingConfig
from lcia.core import distributed
from lcia.data.prompts import Encoded, encode_for_training
from lcia.data.schema import Example
from lcia.data.tasks import Task
from lcia.errors import Interrupted, LciaError
from lcia.methods.base import Method, TrainContext
from lcia.models.forward import answer_forward, answer_tokens, batch_inputs

CHUNK_BATCHES = 64  # batches per length-sorted chunk


@dataclass
class Learner:
    """What trains: the model and its tokenizer, the method around the loop, where it runs, and the image
    inputs of a vision-language model (``lcia.models.vision.VisionInputs``; None for a text model)."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    method: Method
    accelerator: Accelerator
    images: object | None = None
    encode: Callable[[Example], Encoded] | None = None  # None: a text prompt, as encode_for_training

    def batch(self, features: list[Encoded]) -> dict:
        return batch_inputs(features, self.tokenizer.pad_token_id, self.accelerator.device, self.images)

    def inputs(self, cfg: TrainingConfig) -> Callable[[list[Example]], dict]:
        """``TrainContext.inputs``: examples encoded as the stage's own were, as one batch."""
        encode = self.encode or (lambda example: encode_for_training(self.tokenizer, example, cfg.max_length))
        return lambda examples: self.batch([encode(example) for example in examples])


@dataclass
class Stage:
    """One stage to train: its 1-based number, its tasks, the encoded examples it trains on, its steps."""

    number: int
    tasks: list[Task]
    features: list[Encoded]
    steps: int


@dataclass
class Resume:
    """Where a stopped stage continues: its caller restored weights and method state; the rest is here."""

    step: int
    skipped: int
    optimizer: dict
    scheduler: dict
    rng: dict[str, torch.Tensor]  # this process's generator states ("cpu", and "cuda" on a GPU)


@dataclass
class StageEvents:
    """What the loop tells its caller, and asks it."""

    should_stop: Callable[[], bool] = lambda: False  # a stop asked (SIGINT/SIGTERM): checkpoint and stop
    on_step: Callable[[dict], None] | None = None  # each optimizer step's record (loss, lr, method scalars)
    emit: Callable[[str, dict], None] | None = None  # a method's record for the run's <name>.jsonl
    save: Callable[[dict, torch.optim.Optimizer, object], None] | None = None  # write a mid-stage checkpoint
    progress: bool = True


def length_grouped_batches(lengths: list[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch of batches: random order, each chunk of 64 batches sorted by length, batches shuffled."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    chunk = batch_size * CHUNK_BATCHES
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def batch_indices(lengths: list[int], batch_size: int, generator: torch.Generator):
    """Endless length-grouped batches of example indices, epoch after epoch."""
    while True:
        yield from length_grouped_batches(lengths, batch_size, generator)


def check_examples(method: Method, tasks: list[Task], examples: list) -> None:
    """Refuse examples of other tasks than the stage's from a method that does not declare ``needs_old_data``."""
    if method.capabilities.needs_old_data:
        return
    own = {example for task in tasks for example in task.train}
    if any(example not in own for example in examples):
        raise LciaError(
            f"method {method.name!r} trains on examples of earlier tasks but does not declare needs_old_data"
        )


def train_stage(
    learner: Learner,
    stage: Stage,
    cfg: TrainingConfig,
    seed: int,
    *,
    resume: Resume | None = None,
    events: StageEvents | None = None,
) -> dict:
    """Train ``learner.model`` for ``stage.steps`` optimizer steps; returns the stage's statistics."""
    events = events or StageEvents()
    if not stage.features:
        raise ValueError(f"stage {stage.number} has no training examples")
    model, method, accelerator = learner.model, learner.method, learner.accelerator
    batches = _batches(stage, cfg, seed, resume)
    ctx = TrainContext(model, None, accelerator, stage.number, stage.tasks, inputs=learner.inputs(cfg))
    if events.emit is not None:
        ctx.emit = events.emit
    if resume is None:
        method.before_task(ctx)  # may add or switch adapters: the optimizer takes what it leaves trainable
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = _optimizer(params, cfg, stage.steps, accelerator, resume)
    ctx.optimizer = optimizer
    micro = _MicroBatches(learner, stage, cfg, params, distributed.ddp_wrapper(model, accelerator))  # after before_task
    start, skipped = (resume.step, resume.skipped) if resume else (0, 0)

    def save(step: int) -> None:
        if events.save is not None:
            progress = {"stage": stage.number, "step": step, "steps": stage.steps, "skipped_steps": skipped}
            events.save(progress, optimizer, scheduler)

    model.train()
    started, loss_value = time.perf_counter(), math.nan
    names = "+".join(t.name for t in stage.tasks)
    bar = tqdm(range(start, stage.steps), desc=f"train stage {stage.number} ({names})", disable=not events.progress)
    for step in bar:
        ctx.step, ctx.log = step + 1, {}
        loss_sum, finite = micro.accumulate(ctx, batches)
        if finite:
            method.after_backward(ctx)
            if cfg.max_grad_norm is not None:
                accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            method.after_optimizer_step(ctx)
            loss_value = loss_sum
        else:  # a NaN or infinite loss: no update from this step
            skipped += 1
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss_sum:.3f}")
        if events.on_step is not None:
            lr = scheduler.get_last_lr()[0]
            events.on_step(
                {"stage": stage.number, "step": step + 1, "loss": loss_sum, "lr": lr, "skipped": not finite} | ctx.log
            )
        _stop_or_checkpoint(step + 1, stage, cfg, skipped, events, save)
    ctx.log = {}
    method.after_task(ctx)  # what it puts in ctx.log goes to the stage's statistics
    model.eval()
    return _statistics(stage, start, skipped, micro.tokens, time.perf_counter() - started, loss_value, ctx.log)


def _batches(stage: Stage, cfg: TrainingConfig, seed: int, resume: Resume | None) -> Iterator[list[int]]:
    """The stage's endless batches, seeded by (seed, stage); a resumed stage skips those already trained on and
    takes the random state it stopped with (LoRA dropout draws from it)."""
    generator = torch.Generator().manual_seed(seed * 1000 + stage.number)
    batches = batch_indices([len(f.input_ids) for f in stage.features], cfg.batch_size, generator)
    if resume is None:
        torch.manual_seed(seed * 1000 + stage.number)
        return batches
    for _ in range(resume.step * cfg.grad_accum):
        next(batches)
    torch.set_rng_state(resume.rng["cpu"])
    if "cuda" in resume.rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(resume.rng["cuda"])
    return batches


def _optimizer(params, cfg: TrainingConfig, steps: int, accelerator: Accelerator, resume: Resume | None):
    """A fresh AdamW and scheduler for the stage (a resumed stage's state loaded into them)."""
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=cfg.warmup(steps), num_training_steps=steps)
    # The scheduler is not prepared: Accelerate would step it once per process, for a sharded data loader.
    optimizer = accelerator.prepare(optimizer)
    if resume is not None:
        optimizer.load_state_dict(resume.optimizer)
        scheduler.load_state_dict(resume.scheduler)
    return optimizer, scheduler


class _MicroBatches:
    """The forward and backward passes of one optimizer step: ``grad_accum`` micro-batches, each the global
    batch's share of this process, its loss weighed so that the averaged gradient is the whole batch's."""

    def __init__(self, learner: Learner, stage: Stage, cfg: TrainingConfig, params: list, ddp):
        self.learner, self.features, self.cfg, self.params, self.ddp = learner, stage.features, cfg, params, ddp
        self.sharded = distributed.is_sharded(learner.model)  # whole trainable tensors: averaged by the loop
        self.world = distributed.world_size()
        self.answers = [answer_tokens(f) for f in self.features] if self.world > 1 else []  # counted once
        self.tokens = 0

    def accumulate(self, ctx: TrainContext, batches: Iterator[list[int]]) -> tuple[float, bool]:
        """Backward passes of the step's micro-batches; (the step's loss, whether every loss was finite)."""
        learner, cfg = self.learner, self.cfg
        loss_sum, finite = 0.0, True
        for micro in range(cfg.grad_accum):
            indices = next(batches)  # the global batch, the same on every rank
            batch, share = self._batch(indices)
            ctx.micro, ctx.batch_rows, ctx.share = micro, len(indices), share
            last = micro == cfg.grad_accum - 1
            with nullcontext() if last or self.ddp is None else self.ddp.no_sync():
                with learner.accelerator.autocast():
                    outputs = answer_forward(learner.model, batch, ddp=self.ddp)
                    extra = learner.method.loss(ctx, batch, outputs)
                    loss = outputs.loss if extra is None else outputs.loss + extra
                    if share != 1.0:
                        loss = loss * share
                batch_loss = distributed.mean_over_ranks(loss.detach())  # the whole batch's loss, on every rank
                finite = finite and bool(torch.isfinite(batch_loss))
                if finite:
                    learner.accelerator.backward(loss / cfg.grad_accum)
            loss_sum += batch_loss.item() / cfg.grad_accum
            self.tokens += sum(len(self.features[i].input_ids) for i in indices)
        if self.sharded and finite:
            distributed.average_gradients(self.params)
        return loss_sum, finite

    def _batch(self, indices: list[int]) -> tuple[dict, float]:
        """This rank's tensors of the global batch and its loss weight: its share of the answer tokens, times the
        ranks DDP averages over. A rank left without an example trains on one with weight 0 (every rank takes part)."""
        mine = distributed.my_share(indices)
        share = 1.0
        if self.world > 1:
            share = sum(self.answers[i] for i in mine) * self.world / sum(self.answers[i] for i in indices)
        chosen = [self.features[i] for i in mine or indices[:1]]
        return self.learner.batch(chosen), share


def _stop_or_checkpoint(step: int, stage: Stage, cfg: TrainingConfig, skipped: int, events: StageEvents, save) -> None:
    """After a step: stop on too many bad steps or a stop request (with a checkpoint), or checkpoint when due.
    On the last step the caller saves the stage. Every rank stops at the same step."""
    if skipped > cfg.max_bad_steps:
        save(step)
        raise LciaError(
            f"stage {stage.number}: {skipped} steps had a NaN or infinite loss (training.max_bad_steps = "
            f"{cfg.max_bad_steps}); stopped with a checkpoint at step {step}: lower training.lr or check the data"
        )
    if distributed.any_rank(events.should_stop()) and step < stage.steps:
        save(step)
        raise Interrupted(f"stopped at stage {stage.number}, step {step}; checkpoint saved")
    if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < stage.steps:
        save(step)


def _statistics(stage: Stage, start: int, skipped: int, tokens: int, seconds: float, loss: float, log: dict) -> dict:
    return {
        "steps": stage.steps,
        "resumed_at_step": start,
        "skipped_steps": skipped,
        "examples": len(stage.features),
        "truncated": sum(f.truncated for f in stage.features),
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_second": round(tokens / seconds, 1) if seconds else 0.0,
        "final_loss": loss,
        **({"method": log} if log else {}),
    }
