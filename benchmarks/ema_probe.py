"""Where the EMA coefficient falls on this project's models, and when the EMA stops starving plasticity.

One LoRA training run per rank on one task; within it, every EMA preset follows the same weights in
shadow (within a task the EMA does not feed back into training), so the presets are compared on the
same trajectory. Per preset it records each tensor's coefficient at every step, and at the listed
steps the task's test score of the weights the preset would hand on (its EMA) beside the raw weights.

    python benchmarks/ema_probe.py --ranks 4,8,32 --steps 160 --eval-at 20,40,80,160 \
        --out benchmarks/results/ema_probe.json

Writes per rank and preset: the share of coefficients inside (0, 1), their quantiles, the same per
module kind (q/v, lora_A/lora_B) and per layer, and the score of the EMA weights at each listed step.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from lcia.config import TrainingConfig
from lcia.core.params import trainable
from lcia.data.prompts import encode_for_training
from lcia.data.streams import load_stream
from lcia.evaluation.grid import evaluate_task
from lcia.mechanisms.weight_ema import PRESETS, DynamicEma, settings_for
from lcia.methods.base import Method
from lcia.models.loading import SMOLLM2, load_base_model, load_tokenizer
from lcia.models.lora import add_lora, lora_config
from lcia.training.loop import Learner, Stage, StageEvents, train_stage


class Shadow(Method):
    """Trains like seq-lora; after every step updates one EMA per preset and records coefficients."""

    def __init__(self, presets, evaluate, eval_at):
        super().__init__()
        self.engines = {name: DynamicEma(parse_preset(name)) for name in presets}
        self.coefficients = {name: {} for name in presets}  # preset -> tensor -> [raw coefficient per step]
        self.evaluate, self.eval_at, self.scores = evaluate, set(eval_at), {}

    def before_task(self, ctx):
        for engine in self.engines.values():
            engine.start_task(trainable(ctx.model))

    def after_optimizer_step(self, ctx):
        params = trainable(ctx.model)
        for name, engine in self.engines.items():
            engine.update(params)
            raw = engine.last.get("norms", {}).get("raw") or engine.last.get("coefficient", {})
            for tensor, value in raw.items():
                self.coefficients[name].setdefault(tensor, []).append(value)
        if ctx.step in self.eval_at:
            ctx.model.eval()
            self.scores[ctx.step] = {"raw": self.evaluate()}
            saved = {n: p.detach().clone() for n, p in params.items()}
            for name, engine in self.engines.items():
                engine.finish_task(params)  # the EMA in place of the weights, as at a task's end
                self.scores[ctx.step][name] = self.evaluate()
                with torch.no_grad():
                    for n, p in params.items():
                        p.copy_(saved[n])
            ctx.model.train()


def parse_preset(spec: str):
    """``scaled`` or ``scaled@30`` (the preset with another multiplier)."""
    name, _, multiplier = spec.partition("@")
    return settings_for(name, multiplier=float(multiplier)) if multiplier else PRESETS[name]


def describe(values: list[float]) -> dict:
    inside = [v for v in values if 0 < v < 1]
    quantiles = statistics.quantiles(values, n=10) if len(values) > 1 else values
    return {
        "n": len(values),
        "inside": round(len(inside) / len(values), 4) if values else None,
        "median": statistics.median(values) if values else None,
        "median_inside": statistics.median(inside) if inside else None,
        "p10": quantiles[0],
        "p90": quantiles[-1],
    }


def tensor_kind(name: str) -> tuple[str, int]:
    layer = int(re.search(r"layers\.(\d+)\.", name).group(1))
    module = re.search(r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)", name).group(1)
    part = "lora_A" if "lora_A" in name else "lora_B"
    return f"{module}.{part}", layer


def probe_rank(rank, args, tokenizer, task, features):
    torch.manual_seed(args.seed)
    model = add_lora(load_base_model(args.model), lora_config(rank, 2 * rank, 0.0, ["q_proj", "v_proj"]))

    def evaluate():
        cell = evaluate_task(model, tokenizer, task, 0, batch_size=32, max_length=512, progress=False)
        return round(cell.score, 4)

    method = Shadow(args.presets, evaluate, args.eval_at)
    cfg = TrainingConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, checkpoint_every=0)
    started = time.perf_counter()
    learner = Learner(model, tokenizer, method, Accelerator())
    train_stage(learner, Stage(1, [task], features, args.steps), cfg, args.seed, events=StageEvents(progress=False))
    result = {"seconds": round(time.perf_counter() - started, 1), "scores": method.scores, "presets": {}}
    for preset, per_tensor in method.coefficients.items():
        if not per_tensor:
            continue
        everything = [v for values in per_tensor.values() for v in values]
        by_kind, by_layer = {}, {}
        for tensor, values in per_tensor.items():
            kind, layer = tensor_kind(tensor)
            by_kind.setdefault(kind, []).extend(values)
            by_layer.setdefault(layer, []).extend(values)
        result["presets"][preset] = {
            "all": describe(everything),
            "by_kind": {k: describe(v) for k, v in sorted(by_kind.items())},
            "by_layer": {k: describe(v) for k, v in sorted(by_layer.items())},
            "numel": {k: p.numel() for k, p in list(trainable(model).items())[:2]},
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=SMOLLM2)
    parser.add_argument("--task", default="add2")
    parser.add_argument("--ranks", default="4,8,32")
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--eval-at", default="20,40,80,160")
    parser.add_argument("--presets", default="official,paper,scaled,fixed", help="names, or name@multiplier")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--test-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/ema_probe.json")
    args = parser.parse_args()
    args.presets = args.presets.split(",")
    args.eval_at = [int(s) for s in args.eval_at.split(",")]

    tokenizer = load_tokenizer(args.model)
    task = next(t for t in load_stream("ni-cit", args.test_size, None, 0) if t.name == args.task)
    features = [encode_for_training(tokenizer, ex, 256) for ex in task.train]
    results = {"args": vars(args), "ranks": {}}
    for rank in [int(r) for r in args.ranks.split(",")]:
        results["ranks"][rank] = probe_rank(rank, args, tokenizer, task, features)
        summary = {p: r["all"]["inside"] for p, r in results["ranks"][rank]["presets"].items()}
        print(f"rank {rank}: inside (0,1) {summary}; scores {results['ranks'][rank]['scores']}", flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
