"""The share of the device's measured matrix-multiply peak that lcia's training loop reaches on a larger model.

SmolLM2-135M cannot fill a GPU; this trains a randomly initialised Llama of a given size (no download, no
tokenizer) with lcia's loop (``seq-lora``, LoRA on q and v, answer-only logits) on random token sequences of
one length, and divides the FLOPs that LoRA training must do (``harness.training_flops``) per second of the
timed steps by the peak measured here, in the same run, for square products in the training precision (bf16
on a GPU: 8192 x 8192 x 8192). Sizes:

* ``1b``: hidden 2048, 16 layers, MLP 8192, 32 heads (8 key-value heads), SmolLM2's vocabulary of 49152,
  tied embeddings: 1.07B parameters, the shape of Llama-3.2-1B with a smaller vocabulary;
* ``tiny``: hidden 128, 2 layers: a smoke test of this script on a CPU.

    python benchmarks/training_mfu.py --size 1b --batch 16 --length 1024 --out benchmarks/results/training_mfu.json
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from harness import NoTokenizer, device, matmul_peak, random_features, synchronize, training_flops, write_results
from transformers import LlamaConfig, LlamaForCausalLM

from lcia.config import TrainingConfig
from lcia.core.precision import accelerator_for, resolve_precision, set_attention
from lcia.data.tasks import Task
from lcia.methods import build_method
from lcia.models.lora import add_lora, lora_config
from lcia.training.loop import Learner, Stage, StageEvents, batch_indices, train_stage

SIZES = {
    "1b": dict(
        hidden_size=2048,
        num_hidden_layers=16,
        intermediate_size=8192,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=49152,
    ),
    "tiny": dict(
        hidden_size=128,
        num_hidden_layers=2,
        intermediate_size=512,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=1000,
    ),
}


def random_llama(size: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**SIZES[size], tie_word_embeddings=True, pad_token_id=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="1b")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=1024, help="tokens per sequence")
    parser.add_argument("--answer", type=int, default=64, help="labelled tokens at the end of each sequence")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps at the start")
    parser.add_argument("--precision", default="auto", help="auto (bf16 on a GPU), bf16 or fp32")
    parser.add_argument("--out", default="benchmarks/results/training_mfu.json")
    args = parser.parse_args()

    precision = resolve_precision(args.precision)
    on = device()
    peak = matmul_peak(torch.bfloat16 if precision == "bf16" else torch.float32)
    model = add_lora(random_llama(args.size), lora_config(args.rank, 2 * args.rank, 0.0, ["q_proj", "v_proj"]))
    set_attention(model, precision, on)
    model.to(on)
    vocab = model.config.vocab_size
    features = random_features(args.batch * args.steps, args.length, args.answer, vocab, seed=1)
    task = Task("random", [], [])
    ticks: list[float] = []
    if on.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    events = StageEvents(on_step=lambda record: (synchronize(), ticks.append(time.perf_counter())), progress=False)
    cfg = TrainingConfig(steps=args.steps, batch_size=args.batch, lr=1e-4, checkpoint_every=0, precision=precision)
    learner = Learner(model, NoTokenizer(), build_method("seq-lora"), accelerator_for(precision))
    train_stage(learner, Stage(1, [task], features, args.steps), cfg, 0, events=events)
    order = batch_indices([args.length] * len(features), args.batch, torch.Generator().manual_seed(1))
    batches = [next(order) for _ in range(args.steps)][args.warmup :]  # every batch has the same FLOPs
    seconds = ticks[-1] - ticks[args.warmup - 1]
    achieved = training_flops(model, features, batches) / seconds / 1e9
    step_seconds = [b - a for a, b in zip(ticks[args.warmup - 1 :], ticks[args.warmup :])]
    write_results(
        args.out,
        {
            "args": vars(args),
            "device": torch.cuda.get_device_name() if on.type == "cuda" else "cpu",
            "precision": precision,
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "matmul_peak_gflops": round(peak, 1),
            "training_gflops": round(achieved, 1),
            "fraction_of_matmul_peak": round(achieved / peak, 3),
            "tokens_per_second": round(args.batch * args.length * len(batches) / seconds, 1),
            "median_step_seconds": round(statistics.median(step_seconds), 4),
            "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if on.type == "cuda" else None,
        },
    )


if __name__ == "__main__":
    main()
