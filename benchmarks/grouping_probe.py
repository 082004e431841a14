"""Grouping and routing on a stream's instructions alone (no training): which groups each similarity
backend forms at each threshold, whether they match the stream's designed families, and how well the
test instances route (overall and on paraphrases never seen in training).

    python benchmarks/grouping_probe.py [--streams ni-cit,ni-cit-diverse] [--out benchmarks/results/grouping_probe.json]

Grouping and routing depend only on the instructions, so this reproduces exactly the decisions an
``lcia``/``grouping`` run makes on the same stream (the run itself records them in codebook.json).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lcia.data.streams import load_stream
from lcia.mechanisms.codebook import Codebook
from lcia.mechanisms.similarity import THRESHOLDS, build_similarity


def simulate(tasks, similarity, threshold: float) -> dict:
    codebook = Codebook(similarity, threshold)
    for task in tasks:
        instructions = list(dict.fromkeys(ex.instruction for ex in task.train))
        decision = codebook.assign(instructions)
        adapter = decision.best if decision.reused else f"group-{len(codebook.groups)}"
        codebook.add(adapter, instructions, task.name)
    expected = codebook.task_adapters()
    seen = {i for task in tasks for ex in task.train for i in [ex.instruction]}
    hits = {"all": [0, 0], "unseen": [0, 0]}
    for task in tasks:
        for ex in task.test:
            correct = codebook.route(ex.instruction)[0] == expected[task.name]
            for key in ("all", "unseen") if ex.instruction not in seen else ("all",):
                hits[key][0] += correct
                hits[key][1] += 1
    groups = [sorted(g.tasks) for g in codebook.groups]
    families: dict[str, list[str]] = {}
    for task in tasks:
        families.setdefault(task.family, []).append(task.name)
    return {
        "groups": groups,
        "matches_families": sorted(groups) == sorted(sorted(f) for f in families.values()),
        "routing_accuracy": round(hits["all"][0] / hits["all"][1], 4),
        "routing_accuracy_unseen": round(hits["unseen"][0] / hits["unseen"][1], 4) if hits["unseen"][1] else None,
        "n_test": hits["all"][1],
        "n_unseen": hits["unseen"][1],
    }


def family_similarities(tasks, similarity) -> dict:
    """Mean pairwise similarity of two tasks' training instructions: within families and across them."""
    within, across = [], []
    for i, a in enumerate(tasks):
        for b in tasks[i + 1 :]:
            mean = float(
                similarity.matrix(
                    list(dict.fromkeys(e.instruction for e in a.train)),
                    list(dict.fromkeys(e.instruction for e in b.train)),
                ).mean()
            )
            (within if a.family == b.family else across).append(mean)
    return {
        "within_family_min": round(min(within), 3) if within else None,
        "across_family_max": round(max(across), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="ni-cit,ni-cit-diverse")
    parser.add_argument("--test-size", type=int, default=40)
    parser.add_argument("--out", default="benchmarks/results/grouping_probe.json")
    args = parser.parse_args()
    results = {}
    for stream in args.streams.split(","):
        tasks = load_stream(stream, args.test_size, None, 0)
        for backend in ("tfidf", "embedding"):
            similarity = build_similarity(backend)
            key = f"{stream}/{backend}"
            results[key] = {"similarities": family_similarities(tasks, similarity), "thresholds": {}}
            for threshold in sorted({*THRESHOLDS[backend].values(), 0.3, 0.4, 0.5, 0.6, 0.7, 0.9}):
                results[key]["thresholds"][str(threshold)] = simulate(tasks, similarity, threshold)
            print(key, json.dumps(results[key]["similarities"]))
            for threshold, r in results[key]["thresholds"].items():
                print(
                    f"  threshold {threshold}: {len(r['groups'])} groups, families {r['matches_families']}, "
                    f"routing {r['routing_accuracy']} (unseen {r['routing_accuracy_unseen']})"
                )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
