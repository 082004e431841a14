"""Evaluation speed: lcia's batched greedy generation against one example at a time, in one run.

The contenders answer the same test examples of ``--tasks`` with the same model (SmolLM2-135M-Instruct, with the
adapter of ``--adapter`` when given, else a fresh LoRA, i.e. the base model as in row 0 of a run) and
each task's own ``max_new_tokens``; blocks alternate over ``--rounds``:
* ``batched``: ``lcia.evaluation.generate.generate_answers`` at ``--batch-size``, in ``--precision``
  (``auto``: what ``lcia run`` picks here; bf16 autocast with the eager attention on a CPU);
* ``batched_fp32``: the same in fp32, when ``--precision`` is bf16 (what batching alone gains);
* ``one_at_a_time``: the loop peers write, ``model.generate(do_sample=False)`` on one prompt at a time,
  in fp32 (the model as loaded);
* ``padded_generate``: ``model.generate(do_sample=False)`` on left-padded batches of ``--batch-size`` prompts
  in file order, in ``--precision`` with the same autocast as lcia's: what batching alone gives a peer;
* ``lcia_batch_1``: lcia's decoder at batch size 1, in fp32 (what the decoder alone gains).
Reports examples per second, the ratios, each contender's score per task, and how many answers agree
with the one-at-a-time loop (a padded batch can differ from an unpadded prompt in the last bits of the
logits; bf16 differs more).

Everything runs on the GPU when there is one (else the CPU).

    python benchmarks/eval_speed.py --tasks add2,plural,intent,qasc-answer --test-size 64 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from harness import device, lora_model, peak_rss_mb, synchronize, task_of, write_results

from lcia.core.precision import inference_autocast, resolve_precision, set_attention
from lcia.data.prompts import encode_prompt, fit
from lcia.evaluation.generate import generate_answers
from lcia.models.loading import SMOLLM2, load_base_model, load_tokenizer
from lcia.models.lora import load_adapters
from lcia.scorers import get_scorer


@torch.inference_mode()
def generate_padded(model, tokenizer, examples, max_new_tokens: int, batch_size: int) -> list[str]:
    """``model.generate`` on left-padded batches of ``batch_size`` prompts in order (1: one at a time)."""
    answers = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start : start + batch_size]
        prompts = [fit(encode_prompt(tokenizer, ex), 512 - max_new_tokens) for ex in batch]
        width = max(map(len, prompts))
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts], device=device())
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device())
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        answers += [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]
    return answers


def answer_all(model, tokenizer, tasks, batch_size: int | None, precision: str = "fp32", padded: bool = False):
    """Seconds to answer every task's test set, and the answers (batch_size None: model.generate per example;
    ``padded``: model.generate on padded batches of ``batch_size``)."""
    model.set_attn_implementation("sdpa")
    set_attention(model, precision, device())
    synchronize()
    start, answers = time.perf_counter(), []
    for task in tasks:
        if batch_size is None or padded:
            with inference_autocast(model, precision, device()):
                answers += generate_padded(model, tokenizer, task.test, task.max_new_tokens, batch_size or 1)
            continue
        answers += generate_answers(
            model,
            tokenizer,
            task.test,
            max_new_tokens=task.max_new_tokens,
            batch_size=batch_size,
            max_length=512,
            progress=False,
            precision=precision,
        )
    synchronize()
    return time.perf_counter() - start, answers


def scores(tasks, answers: list[str]) -> dict[str, float]:
    out, at = {}, 0
    for task in tasks:
        got = answers[at : at + len(task.test)]
        per_example = get_scorer(task.scorer)(got, task.test).per_example
        out[task.name] = round(sum(per_example) / len(got), 4)
        at += len(task.test)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=SMOLLM2)
    parser.add_argument("--adapter", default=None, help="a saved stage, e.g. runs/RUN/adapters/stage-3")
    parser.add_argument("--tasks", default="add2,plural,intent,qasc-answer")
    parser.add_argument("--test-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default="auto", help="of the batched contender: auto, fp32 or bf16")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/eval_speed.json")
    args = parser.parse_args()

    tokenizer = load_tokenizer(args.model)
    model = load_adapters(load_base_model(args.model), Path(args.adapter)) if args.adapter else lora_model(args.model)
    model.to(device()).eval()
    tasks = [task_of(name, test_size=args.test_size) for name in args.tasks.split(",")]
    n = sum(len(t.test) for t in tasks)
    precision = resolve_precision(args.precision)
    contenders = {
        "batched": (args.batch_size, precision, False),
        "padded_generate": (args.batch_size, precision, True),
        "one_at_a_time": (None, "fp32", False),
        "lcia_batch_1": (1, "fp32", False),
    }
    if precision != "fp32":
        contenders["batched_fp32"] = (args.batch_size, "fp32", False)
    seconds = {name: [] for name in contenders}
    answers = {}
    for round_ in range(args.rounds):
        for name, (batch_size, precision_of, padded) in contenders.items():
            took, answers[name] = answer_all(model, tokenizer, tasks, batch_size, precision_of, padded)
            seconds[name].append(took)
            print(f"round {round_}: {name} {n / took:.2f} examples/s")
    rate = {k: n / statistics.median(v) for k, v in seconds.items()}
    agree = {
        name: f"{sum(a == b for a, b in zip(answers[name], answers['one_at_a_time']))}/{n}"
        for name in contenders
        if name != "one_at_a_time"
    }
    write_results(
        args.out,
        {
            "args": vars(args),
            "precision": precision,
            "examples": n,
            "examples_per_second": {k: round(v, 2) for k, v in rate.items()},
            "ratio_batched_to_one_at_a_time": round(rate["batched"] / rate["one_at_a_time"], 2),
            "ratio_batched_to_padded_generate": round(rate["batched"] / rate["padded_generate"], 2),
            "ratio_lcia_batch_1_to_one_at_a_time": round(rate["lcia_batch_1"] / rate["one_at_a_time"], 2),
            **(
                {"ratio_batched_fp32_to_one_at_a_time": round(rate["batched_fp32"] / rate["one_at_a_time"], 2)}
                if "batched_fp32" in rate
                else {}
            ),
            "answers_equal_to_one_at_a_time": agree,
            "scores": {name: scores(tasks, answers[name]) for name in contenders},
            "peak_rss_mb": peak_rss_mb(),
        },
    )


if __name__ == "__main__":
    main()
