"""The cost of the dynamic EMA per optimizer step, as a ratio to plain LoRA training (``seq-lora``).

Two measurements in one process on the same model and batches:
* the time spent inside the EMA update, as a share of each step (timed around the hook itself: precise);
* the median step time of ``dema`` over that of ``seq-lora``, in alternating blocks of steps (noisier:
  it includes everything else the machine does).

    python benchmarks/ema_overhead.py --steps 20 --rounds 3 --out benchmarks/results/ema_overhead.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from lcia.config import TrainingConfig
from lcia.data.prompts import encode_for_training
from lcia.data.streams import load_stream
from lcia.methods import build_method
from lcia.models.loading import SMOLLM2, load_base_model, load_tokenizer
from lcia.models.lora import add_lora, lora_config
from lcia.training.loop import train_stage


def timed(method):
    """Wrap a method's after_optimizer_step with a timer; returns the list the durations go to."""
    durations, hook = [], method.after_optimizer_step

    def after_optimizer_step(ctx):
        start = time.perf_counter()
        hook(ctx)
        durations.append(time.perf_counter() - start)

    method.after_optimizer_step = after_optimizer_step
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=SMOLLM2)
    parser.add_argument("--task", default="plural")
    parser.add_argument("--steps", type=int, default=20, help="steps per block")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--presets", default="official,scaled")
    parser.add_argument("--out", default="benchmarks/results/ema_overhead.json")
    args = parser.parse_args()

    tokenizer = load_tokenizer(args.model)
    task = next(t for t in load_stream("ni-cit", 10, None, 0) if t.name == args.task)
    features = [encode_for_training(tokenizer, ex, 256) for ex in task.train]
    model = add_lora(load_base_model(args.model), lora_config(args.rank, 2 * args.rank, 0.0, ["q_proj", "v_proj"]))
    cfg = TrainingConfig(steps=args.steps, checkpoint_every=0)
    step_times = {"seq-lora": []} | {f"dema-{p}": [] for p in args.presets.split(",")}
    hook_times = {name: [] for name in step_times}
    for round_ in range(args.rounds):
        for name in step_times:
            method = build_method("seq-lora") if name == "seq-lora" else build_method("dema", {"preset": name[5:]})
            durations, ticks = timed(method), []
            train_stage(
                model,
                tokenizer,
                method,
                [task],
                features,
                stage=round_ + 1,
                steps=args.steps,
                cfg=cfg,
                seed=0,
                accelerator=Accelerator(),
                on_step=lambda record: ticks.append(time.perf_counter()),
                progress=False,
            )
            step_times[name] += [b - a for a, b in zip(ticks, ticks[1:])]
            hook_times[name] += durations[1:]
    base = statistics.median(step_times["seq-lora"])
    results = {
        "args": vars(args),
        "threads": torch.get_num_threads(),
        "trainable_tensors": sum(p.requires_grad for p in model.parameters()),
        "median_step_seconds": {k: round(statistics.median(v), 4) for k, v in step_times.items()},
        "step_time_ratio_to_seq_lora": {k: round(statistics.median(v) / base, 4) for k, v in step_times.items()},
        "hook_share_of_step": {
            k: round(statistics.median(hook_times[k]) / statistics.median(step_times[k]), 5) for k in step_times
        },
        "median_hook_seconds": {k: round(statistics.median(v), 5) for k, v in hook_times.items()},
    }
    print(json.dumps(results, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
