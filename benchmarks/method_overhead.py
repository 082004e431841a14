"""The cost of each method per optimizer step, as a ratio to plain LoRA training (``seq-lora``), and what it stores.

Every method trains a fresh rank-8 LoRA on SmolLM2-135M-Instruct: a first task for a few untimed steps
(so that methods which act from the second task on, such as ewc, lwf, olora and replay, have a previous
task), then the timed task, in alternating blocks over ``--rounds`` (one process, same batches). Measured:
* the time inside the method's per-step hooks (``loss``, ``after_backward``, ``after_optimizer_step``)
  as a share of each step, timed around the hooks themselves: precise;
* the median step time over that of ``seq-lora``: everything the method changes (extra adapters in the
  forward pass, a teacher pass), noisier;
* the time of the stage hooks (``before_task``, ``after_task``) around the timed task, in seconds and in
  ``seq-lora`` steps: what a method does once per task (a router trained, layer inputs collected, a fusion);
* the memory the method keeps: the tensors of its state_dict and the model's trainable-or-adapter
  parameters, in MB (fp32), after the second task.

A method is ``name`` or ``name:key=value,...`` with its parameters, e.g. ``dema:preset=scaled``. Training
runs in ``--precision`` (``auto``: what ``lcia run`` picks here, with its attention).

    python benchmarks/method_overhead.py --methods seq-lora,ewc,lwf,replay,olora,moelora,dema,lcia
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from harness import encoded, peak_rss_mb, task_of, write_results

from lcia.compare import parse_method, split_methods
from lcia.config import TrainingConfig
from lcia.core.params import adapter_weights
from lcia.core.precision import accelerator_for, resolve_precision, set_attention
from lcia.data.prompts import encode_for_training
from lcia.methods import build_method
from lcia.models.loading import SMOLLM2, load_base_model, load_tokenizer
from lcia.models.lora import lora_config
from lcia.training.loop import Learner, Stage, StageEvents, train_stage

HOOKS = ("loss", "after_backward", "after_optimizer_step")
STAGE_HOOKS = ("before_task", "after_task")


def tensor_mb(obj) -> float:
    """MB held by the tensors anywhere inside ``obj`` (dicts, lists, tuples)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size() / 2**20
    if isinstance(obj, dict):
        return sum(tensor_mb(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_mb(v) for v in obj)
    return 0.0


def time_hooks(method, hooks: tuple[str, ...], record) -> None:
    """Wrap the named hooks of ``method`` with a timer that calls ``record(hook, seconds)`` after each call."""
    for hook in hooks:
        inner = getattr(method, hook)

        def wrapped(*args, inner=inner, hook=hook):
            start = time.perf_counter()
            try:
                return inner(*args)
            finally:
                record(hook, time.perf_counter() - start)

        setattr(method, hook, wrapped)


def step_hook_timer(method) -> list[float]:
    """Time the per-step hooks; returns the list that each step's hook time is added to."""
    per_step = [0.0]

    def add(hook: str, seconds: float) -> None:
        per_step[-1] += seconds
        if hook == "after_optimizer_step":
            per_step.append(0.0)

    time_hooks(method, HOOKS, add)
    return per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=SMOLLM2)
    parser.add_argument("--first-task", default="add2", help="trained first, untimed")
    parser.add_argument("--first-steps", type=int, default=3)
    parser.add_argument("--task", default="plural", help="trained second, timed")
    parser.add_argument("--methods", default="seq-lora,ewc,lwf,replay,olora,moelora,ema,dema,grouping,lcia")
    parser.add_argument("--steps", type=int, default=12, help="steps per block (the first is not timed)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16")
    parser.add_argument("--out", default="benchmarks/results/method_overhead.json")
    args = parser.parse_args()

    tokenizer = load_tokenizer(args.model)
    first, task = task_of(args.first_task), task_of(args.task)
    first_features, features = encoded(tokenizer, first), encoded(tokenizer, task)
    lora = lora_config(args.rank, 2 * args.rank, 0.0, ["q_proj", "v_proj"])
    specs = split_methods(args.methods)
    if specs[0] != "seq-lora":
        specs = ["seq-lora"] + [s for s in specs if s != "seq-lora"]
    step_times = {spec: [] for spec in specs}
    hook_times = {spec: [] for spec in specs}
    stage_times = {spec: {hook: [] for hook in STAGE_HOOKS} for spec in specs}
    memory = {}
    precision = resolve_precision(args.precision)
    for round_ in range(args.rounds):
        for spec in specs:
            method = build_method(*parse_method(spec))
            model = method.setup(load_base_model(args.model), lora)
            set_attention(model, precision, torch.device("cpu"))
            for stage, (stage_task, stage_features, steps) in enumerate(
                [(first, first_features, args.first_steps), (task, features, args.steps)], start=1
            ):
                if stage == 2:
                    hooks, ticks, stage_hooks = step_hook_timer(method), [], {}
                    time_hooks(method, STAGE_HOOKS, stage_hooks.__setitem__)
                    added = method.train_examples([task])[len(task.train) :]  # replay's buffer
                    stage_features = features + [encode_for_training(tokenizer, ex, 256) for ex in added]
                learner = Learner(model, tokenizer, method, accelerator_for(precision))
                on_step = (lambda record: ticks.append(time.perf_counter())) if stage == 2 else None
                cfg = TrainingConfig(steps=steps, checkpoint_every=0, precision=precision)
                stage_inputs = Stage(stage, [stage_task], stage_features, steps)
                train_stage(learner, stage_inputs, cfg, 0, events=StageEvents(on_step=on_step, progress=False))
            step_times[spec] += [b - a for a, b in zip(ticks, ticks[1:])]
            hook_times[spec] += hooks[1 : args.steps]
            for hook in STAGE_HOOKS:
                stage_times[spec][hook].append(stage_hooks[hook])
            memory[spec] = {
                "method_state_mb": round(tensor_mb(method.state_dict()), 2),
                "adapter_mb": round(tensor_mb(adapter_weights(model)), 2),
            }
            print(f"round {round_}: {spec} {statistics.median(step_times[spec]):.3f} s/step, {memory[spec]}")
    base = statistics.median(step_times["seq-lora"])
    write_results(
        args.out,
        {
            "args": vars(args),
            "precision": precision,
            "median_step_seconds": {k: round(statistics.median(v), 4) for k, v in step_times.items()},
            "step_time_ratio_to_seq_lora": {k: round(statistics.median(v) / base, 4) for k, v in step_times.items()},
            "hook_share_of_step": {
                k: round(statistics.median(hook_times[k]) / statistics.median(step_times[k]), 5) for k in specs
            },
            "median_hook_seconds": {k: round(statistics.median(v), 5) for k, v in hook_times.items()},
            "stage_hook_seconds": {
                k: {hook: round(statistics.median(t), 4) for hook, t in v.items()} for k, v in stage_times.items()
            },
            "stage_hooks_in_seq_lora_steps": {
                k: round(sum(statistics.median(t) for t in v.values()) / base, 2) for k, v in stage_times.items()
            },
            "memory_mb": memory,
            "peak_rss_mb": peak_rss_mb(),
        },
    )


if __name__ == "__main__":
    main()
