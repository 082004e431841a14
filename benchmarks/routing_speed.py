"""MR-LoRA's routing cost: each instance's prompt encoded once for all its experts against once per expert.

``mrlora`` routes a test instance by scoring every expert's letter as the router's answer to a prompt that lists
all the experts. The contenders route the same test instances of a trained run's saved stage, in the run's
precision (as ``lcia eval`` answers), blocks alternating over ``--rounds``:
* ``shared``: ``mrlora.shared_prompt_log_likelihoods``, lcia's: one prompt pass per instance, its KV cache copied
  to the experts' answers;
* ``plain``: one full routing request per expert (prompt and answer), as the method did before; its cost grows
  with the experts squared, since the prompt also lists them all.
Reports instances per second, the ratio, how many routes agree and the largest difference between the scores.

    python benchmarks/routing_speed.py benchmarks/studies/seeds-ni-cit/mrlora-seed0 --stage 7 --per-task 4
"""

from __future__ import annotations

import argparse
import time

import torch
from harness import peak_rss_mb, synchronize, write_results

from lcia.core.precision import inference_autocast
from lcia.methods import mrlora
from lcia.models.forward import answer_forward
from lcia.pipeline.session import open_saved, run_tasks

SHARED = mrlora.shared_prompt_log_likelihoods


def plain(model, batch, group):
    return mrlora.sequence_log_likelihoods(answer_forward(model, batch).logits, batch["labels"])


def route(session, examples, scorer) -> tuple[list[dict[str, float]], float]:
    mrlora.shared_prompt_log_likelihoods = scorer  # what the method's _scores calls
    try:
        synchronize()
        start = time.perf_counter()
        with inference_autocast(session.model, session.precision, session.device):
            scores = session.method._scores(examples)
        synchronize()
        return scores, time.perf_counter() - start
    finally:
        mrlora.shared_prompt_log_likelihoods = SHARED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a finished or stopped mrlora run with saved stages")
    parser.add_argument("--stage", type=int, default=None, help="the saved stage to route with (default: the last)")
    parser.add_argument("--per-task", type=int, default=4, help="test instances of each of the stage's tasks")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/routing_speed.json")
    args = parser.parse_args()

    session, stage = open_saved(args.run_dir, args.stage)
    if session.cfg.method.name != "mrlora":
        raise SystemExit(f"{args.run_dir}: a {session.cfg.method.name} run, not mrlora")
    tasks = run_tasks(session.cfg)[:stage]
    examples = [ex for task in tasks for ex in task.test[: args.per_task]]
    seconds = {"shared": [], "plain": []}
    scores = {}
    for _ in range(args.rounds):
        for name, scorer in (("shared", SHARED), ("plain", plain)):
            scores[name], took = route(session, examples, scorer)
            seconds[name].append(took)
    best = {name: min(times) for name, times in seconds.items()}
    chosen = {name: [max(s, key=s.get) for s in rows] for name, rows in scores.items()}
    gap = max(abs(a[e] - b[e]) for a, b in zip(scores["shared"], scores["plain"]) for e in a)
    write_results(
        args.out,
        {
            "run_dir": args.run_dir,
            "stage": stage,
            "experts": len(session.method.experts),
            "instances": len(examples),
            "precision": session.precision,
            "rounds": args.rounds,
            "seconds": seconds,
            "instances_per_second": {name: round(len(examples) / t, 2) for name, t in best.items()},
            "speedup_shared_over_plain": round(best["plain"] / best["shared"], 2),
            "same_routes": sum(a == b for a, b in zip(chosen["shared"], chosen["plain"])),
            "largest_score_difference": round(gap, 5),
            "threads": torch.get_num_threads(),
            "peak_rss_mb": peak_rss_mb(),
        },
    )


if __name__ == "__main__":
    main()
