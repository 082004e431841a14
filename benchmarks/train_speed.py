"""Training speed of lcia's loop against a plain Hugging Face ``Trainer`` + PEFT, side by side in one run.

Every contender trains a fresh LoRA (same seed, rank, targets) on SmolLM2-135M-Instruct (on the GPU when there
is one) with the same encoded examples of one task, batch size, learning rate, clipping and sequence lengths,
for the same number of optimizer steps; blocks alternate over ``--rounds`` so drifts of the machine hit all alike:

* ``lcia``: ``lcia.training.loop.train_stage`` (length-grouped, left-padded, answer-only logits, and
  under bf16 on a CPU the eager attention, as ``lcia run`` sets it);
* ``trainer``: ``transformers.Trainer`` on the PEFT model as its documentation sets it up (random
  batches padded by ``DataCollatorForSeq2Seq``, the model's own loss over full logits), in the
  precision of the first of ``--precisions`` (``bf16=True`` for bf16);
* ``trainer-grouped``: the same with ``train_sampling_strategy="group_by_length"``.

Tokens per second count non-padding tokens of the timed steps (the first ``--warmup`` steps of each
block are not timed). The script also measures the machine's matrix-multiply peak (fp32 and bf16) and
the fraction of it that lcia's training reaches (FLOPs counted by ``harness.training_flops``), and
times lcia in each of ``--precisions`` (``auto``: what ``lcia run`` picks on this machine).

    python benchmarks/train_speed.py --task qasc-overlap --steps 12 --rounds 3 --precisions auto,fp32
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from accelerate.state import AcceleratorState
from harness import (
    device,
    encoded,
    lora_model,
    machine_peaks,
    peak_rss_mb,
    synchronize,
    task_of,
    training_flops,
    write_results,
)
from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

from lcia.config import TrainingConfig
from lcia.core.precision import accelerator_for, resolve_precision, set_attention
from lcia.methods import build_method
from lcia.models.loading import SMOLLM2, load_tokenizer
from lcia.training.loop import Learner, Stage, StageEvents, batch_indices, train_stage


def time_lcia(args, tokenizer, task, features, precision: str) -> dict:
    model = lora_model(args.model, args.rank).to(device())
    set_attention(model, precision, device())
    ticks = []
    cfg = TrainingConfig(steps=args.steps, batch_size=args.batch_size, lr=1e-3, checkpoint_every=0, precision=precision)
    ticks.append(time.perf_counter())
    learner = Learner(model, tokenizer, build_method("seq-lora"), accelerator_for(precision))
    events = StageEvents(on_step=lambda record: (synchronize(), ticks.append(time.perf_counter())), progress=False)
    train_stage(learner, Stage(1, [task], features, args.steps), cfg, 0, events=events)
    order = batch_indices([len(f.input_ids) for f in features], args.batch_size, torch.Generator().manual_seed(1))
    batches = [next(order) for _ in range(args.steps)][args.warmup :]  # the loop's own order (seed 0, stage 1)
    seconds = ticks[-1] - ticks[args.warmup]
    tokens = sum(len(features[i].input_ids) for b in batches for i in b)
    return {"seconds": seconds, "tokens": tokens, "flops": training_flops(model, features, batches)}


class StepClock(TrainerCallback):
    def __init__(self):
        self.ticks = []

    def on_step_begin(self, args, state, control, **kwargs):
        if not self.ticks:
            synchronize()
            self.ticks.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        synchronize()
        self.ticks.append(time.perf_counter())


def time_trainer(args, tokenizer, features, strategy: str, out_dir: str, precision: str) -> dict:
    model = lora_model(args.model, args.rank)
    pad = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    tokens = []

    def collate(rows):
        batch = pad(rows)
        tokens.append(int(batch["attention_mask"].sum()))
        return batch

    clock = StepClock()
    AcceleratorState._reset_state(reset_partial_state=True)  # the Trainer builds its own Accelerator
    training_args = TrainingArguments(
        output_dir=out_dir,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
        train_sampling_strategy=strategy,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        use_cpu=device().type == "cpu",
        disable_tqdm=True,
        seed=0,
        bf16=precision == "bf16",
    )
    data = [{"input_ids": f.input_ids, "labels": f.labels} for f in features]
    Trainer(model=model, args=training_args, train_dataset=data, data_collator=collate, callbacks=[clock]).train()
    # ticks[k] ends step k; the data loader fetches one batch ahead, so tokens[k] is step k's batch
    seconds = clock.ticks[-1] - clock.ticks[args.warmup]
    return {"seconds": seconds, "tokens": sum(tokens[args.warmup : args.steps])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=SMOLLM2)
    parser.add_argument("--task", default="qasc-overlap")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per block")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps at the start of each block")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--precisions", default="auto,fp32", help="lcia's precisions (the first also the Trainer's)")
    parser.add_argument("--out", default="benchmarks/results/train_speed.json")
    args = parser.parse_args()

    peaks = machine_peaks()
    tokenizer = load_tokenizer(args.model)
    task = task_of(args.task)
    features = encoded(tokenizer, task)
    precisions = list(dict.fromkeys(resolve_precision(p) for p in args.precisions.split(",")))
    contenders = [f"lcia-{p}" for p in precisions] + ["trainer", "trainer-grouped"]
    blocks = {name: [] for name in contenders}
    for round_ in range(args.rounds):
        for name in contenders:
            if name.startswith("lcia-"):
                blocks[name].append(time_lcia(args, tokenizer, task, features, name.removeprefix("lcia-")))
            else:
                strategy = "group_by_length" if name == "trainer-grouped" else "random"
                out_dir = f"/tmp/lcia-bench-{name}"
                blocks[name].append(time_trainer(args, tokenizer, features, strategy, out_dir, precisions[0]))
            print(f"round {round_}: {name} {blocks[name][-1]['tokens'] / blocks[name][-1]['seconds']:.1f} tokens/s")

    rate = {name: statistics.median(b["tokens"] / b["seconds"] for b in runs) for name, runs in blocks.items()}
    lcia = f"lcia-{precisions[0]}"
    achieved = statistics.median(b["flops"] / b["seconds"] / 1e9 for b in blocks[lcia])
    write_results(
        args.out,
        {
            "args": vars(args),
            "trainer_precision": precisions[0],
            "matmul_peak_gflops": peaks,
            "tokens_per_second": {k: round(v, 1) for k, v in rate.items()},
            "ratio_lcia_to_trainer": round(rate[lcia] / rate["trainer"], 3),
            "ratio_lcia_to_trainer_grouped": round(rate[lcia] / rate["trainer-grouped"], 3),
            "lcia_training_gflops": round(achieved, 1),
            "fraction_of_best_matmul_peak": round(achieved / max(peaks.values()), 3),
            "fraction_of_bf16_matmul_peak": round(achieved / peaks["bfloat16"], 3),
            "median_step_seconds": {
                k: round(statistics.median(b["seconds"] / (args.steps - args.warmup) for b in v), 3)
                for k, v in blocks.items()
            },
            "peak_rss_mb": peak_rss_mb(),
        },
    )


if __name__ == "__main__":
    main()
