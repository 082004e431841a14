"""Every training method on a GPU: two stages under bf16 autocast, a checkpoint round trip, and step times.

A check of the device path, for a machine with CUDA (none is needed anywhere else in lcia; without one it
runs in fp32 on the CPU, a smoke test of the script): each method
trains a randomly initialised Llama (no download, no tokenizer) for two stages with Accelerate's bf16
autocast, so state kept on the host, a tensor on the wrong device or a dtype mismatch fails here. Halfway
through stage 2 the method's state, the trainable tensors, the optimizer and the random state go into a
checkpoint (safetensors); a fresh model and method restored from it on the device finish stage 2, which must
give the uninterrupted model's loss on a batch (a method state left on the CPU by the checkpoint fails here).
Prints and writes each method's median step time, its ratio to ``seq-lora``, and its peak GPU memory.

    python benchmarks/gpu_methods.py --out benchmarks/results/gpu_methods.json
    python benchmarks/gpu_methods.py --quantization nf4 --out benchmarks/results/gpu_methods_nf4.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import torch
from accelerate import Accelerator
from harness import NoTokenizer, random_features, write_results
from transformers import LlamaConfig, LlamaForCausalLM

from lcia.compare import parse_method, split_methods
from lcia.config import TrainingConfig
from lcia.data.prompts import Encoded
from lcia.data.schema import Example
from lcia.data.tasks import Task
from lcia.methods import METHODS, build_method
from lcia.models.forward import answer_forward, collate
from lcia.models.loading import load_base_model
from lcia.models.lora import lora_config
from lcia.pipeline.checkpoints import Checkpoints
from lcia.training.loop import Learner, Stage, StageEvents, train_stage

# every method that trains, and dema with per-element-mean norms (the scaled preset's other code path)
TRAINING_METHODS = [name for name, method in METHODS.items() if method.capabilities.trains] + ["dema:preset=scaled"]


def model_of(args, device) -> LlamaForCausalLM:
    """The random Llama; with ``--quantization`` saved and reloaded through lcia's 4-bit loader onto ``device``."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=args.hidden // 64,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config)
    if args.quantization == "none":
        return model
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, safe_serialization=True)
        return load_base_model(folder, "float32", args.quantization, device)


def batch_loss(model, accelerator, features: list[Encoded]) -> float:
    batch = {k: v.to(accelerator.device) for k, v in collate(features, 0).items()}
    model.eval()
    with torch.no_grad(), accelerator.autocast():
        return float(answer_forward(model, batch).loss)


def task_data(name: str, stage: int, n: int, length: int, vocab: int) -> tuple[Task, list[Encoded]]:
    examples = [Example(f"Task {name}.", str(i), "x") for i in range(n)]  # replay keeps these
    return Task(name, examples, []), random_features(n, length, 4, vocab, seed=stage)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(TRAINING_METHODS), help="default: every method that trains")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16", help="on CUDA (the CPU: fp32)")
    parser.add_argument("--quantization", choices=["none", "nf4", "fp4"], default="none", help="4-bit base weights")
    parser.add_argument("--out", default="benchmarks/results/gpu_methods.json")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()  # without one, the same in fp32 on the CPU (a smoke test of this script)
    sync = torch.cuda.synchronize if cuda else lambda: None
    accelerator = Accelerator(mixed_precision="bf16" if cuda and args.precision == "bf16" else "no")
    lora = lora_config(16, 32, 0.0, ["q_proj", "v_proj"])
    cfg = TrainingConfig(batch_size=args.batch, lr=1e-3, checkpoint_every=args.steps // 2)
    stages = [task_data(name, k, 256, args.length, args.vocab) for k, name in enumerate(("a", "b"), start=1)]
    # what a method encodes itself (gem's memory, mrlora's router set): a task example's random features; an
    # example the method wrote (mrlora's router prompts) gets random ids seeded by its text
    by_example = {(ex.instruction, ex.input): f for task, features in stages for ex, f in zip(task.train, features)}

    def encoded(example: Example) -> Encoded:
        seed = zlib.crc32(f"{example.instruction}{example.input}{example.output}".encode())
        return (
            by_example.get((example.instruction, example.input))
            or random_features(1, args.length, 4, args.vocab, seed)[0]
        )

    results = {}
    for spec in split_methods(args.methods):
        method = build_method(*parse_method(spec))
        model = method.setup(model_of(args, accelerator.device), lora).to(accelerator.device)
        ticks: list[float] = []
        with tempfile.TemporaryDirectory() as folder:
            checkpoints = Checkpoints(Path(folder))
            for stage, (task, features) in enumerate(stages, start=1):
                added = method.train_examples([task])[len(task.train) :]  # replay: its buffer, as more random rows
                stage_features = features + [features[i % len(features)] for i in range(len(added))]
                sync()
                events = StageEvents(on_step=lambda record: (sync(), ticks.append(time.perf_counter())), progress=False)
                if stage == 2:  # a checkpoint halfway
                    events.save = lambda progress, opt, sched, model=model: checkpoints.save(
                        progress, model, method, opt, sched
                    )
                learner = Learner(model, NoTokenizer(), method, accelerator, encode=encoded)
                train_stage(learner, Stage(stage, [task], stage_features, args.steps), cfg, 0, events=events)
            loss = batch_loss(model, accelerator, stages[1][1][:8])
            # a fresh model and method resume stage 2 from its checkpoint on this device and finish it
            fresh_method = build_method(*parse_method(spec))
            fresh = fresh_method.setup(model_of(args, accelerator.device), lora).to(accelerator.device)
            resume = checkpoints.restore(checkpoints.latest(), fresh, fresh_method)
            learner = Learner(fresh, NoTokenizer(), fresh_method, accelerator, encode=encoded)
            stage2 = Stage(2, [stages[1][0]], stage_features, args.steps)
            train_stage(learner, stage2, cfg, 0, resume=resume, events=StageEvents(progress=False))
            resumed = batch_loss(fresh, accelerator, stages[1][1][:8])
        steps = [b - a for a, b in zip(ticks[args.steps + 1 :], ticks[args.steps + 2 :])]  # stage 2, first dropped
        results[spec] = {
            "stage2_median_step_seconds": round(statistics.median(steps), 5),
            "loss": round(loss, 5),
            "loss_after_resuming_stage2": round(resumed, 5),
            "resume_difference": abs(loss - resumed),
            "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
        }
        print(spec, results[spec], flush=True)
        del model, fresh
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.empty_cache()
    base = results["seq-lora"]["stage2_median_step_seconds"] if "seq-lora" in results else None
    for value in results.values():
        value["step_ratio_to_seq_lora"] = round(value["stage2_median_step_seconds"] / base, 3) if base else None
    device = torch.cuda.get_device_name() if cuda else "cpu"
    write_results(args.out, {"args": vars(args), "device": device, "methods": results})


if __name__ == "__main__":
    main()
