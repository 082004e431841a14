"""The cost of each method per optimizer step, as a ratio to plain LoRA training (``seq-lora``).

Every method trains a fresh rank-8 LoRA on SmolLM2-135M-Instruct from the same examples of one task, in
alternating blocks of steps over ``--rounds`` (one process, same batches). Two measurements:
* the time inside the method's per-step hooks (``loss``, ``after_backward``, ``after_optimizer_step``)
  as a share of each step, timed around the hooks themselves: precise;
* the median step time over that of ``seq-lora``: everything the method changes, noisier.

A method is ``name`` or ``name:key=value,...`` with its parameters, e.g. ``dema:preset=scaled``.

    python benchmarks/method_overhead.py --methods seq-lora,ema,dema,dema:preset=scaled,grouping,lcia
"""

from __future__ import annotations

import argparse
import statistics
import time

import yaml
from accelerate import Accelerator
from harness import encoded, peak_rss_mb, task_of, write_results

from lcia.config import TrainingConfig
from lcia.methods import build_method
from lcia.models.loading import SMOLLM2, load_base_model, load_tokenizer
from lcia.models.lora import lora_config
from lcia.training.loop import train_stage

HOOKS = ("loss", "after_backward", "after_optimizer_step")


def parse(spec: str) -> tuple[str, dict]:
    name, _, params = spec.partition(":")
    return name, {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in params.split(",") if p)}


def timed_hooks(method) -> list[float]:
    """Wrap the per-step hooks with a timer; returns the list that each step's hook time is added to."""
    per_step = [0.0]
    for hook in HOOKS:
        inner = getattr(method, hook)

        def wrapped(*args, inner=inner, hook=hook):
            start = time.perf_counter()
            try:
                return inner(*args)
            finally:
                per_step[-1] += time.perf_counter() - start
                if hook == "after_optimizer_step":
                    per_step.append(0.0)

        setattr(method, hook, wrapped)
    return per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=SMOLLM2)
    parser.add_argument("--task", default="plural")
    parser.add_argument("--methods", default="seq-lora,ema,dema,dema:preset=scaled,grouping,lcia")
    parser.add_argument("--steps", type=int, default=12, help="steps per block (the first is not timed)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--out", default="benchmarks/results/method_overhead.json")
    args = parser.parse_args()

    tokenizer = load_tokenizer(args.model)
    task = task_of(args.task)
    features = encoded(tokenizer, task)
    lora = lora_config(args.rank, 2 * args.rank, 0.0, ["q_proj", "v_proj"])
    specs = args.methods.split(",")
    if specs[0] != "seq-lora":
        specs = ["seq-lora"] + [s for s in specs if s != "seq-lora"]
    step_times = {spec: [] for spec in specs}
    hook_times = {spec: [] for spec in specs}
    for round_ in range(args.rounds):
        for spec in specs:
            method = build_method(*parse(spec))
            model = method.setup(load_base_model(args.model), lora)
            hooks, ticks = timed_hooks(method), []
            train_stage(
                model,
                tokenizer,
                method,
                [task],
                features,
                stage=1,
                steps=args.steps,
                cfg=TrainingConfig(steps=args.steps, checkpoint_every=0),
                seed=0,
                accelerator=Accelerator(),
                on_step=lambda record: ticks.append(time.perf_counter()),
                progress=False,
            )
            step_times[spec] += [b - a for a, b in zip(ticks, ticks[1:])]
            hook_times[spec] += hooks[1 : args.steps]
            print(f"round {round_}: {spec} {statistics.median(step_times[spec]):.3f} s/step")
    base = statistics.median(step_times["seq-lora"])
    write_results(
        args.out,
        {
            "args": vars(args),
            "median_step_seconds": {k: round(statistics.median(v), 4) for k, v in step_times.items()},
            "step_time_ratio_to_seq_lora": {k: round(statistics.median(v) / base, 4) for k, v in step_times.items()},
            "hook_share_of_step": {
                k: round(statistics.median(hook_times[k]) / statistics.median(step_times[k]), 5) for k in specs
            },
            "median_hook_seconds": {k: round(statistics.median(v), 5) for k, v in hook_times.items()},
            "peak_rss_mb": peak_rss_mb(),
        },
    )


if __name__ == "__main__":
    main()
