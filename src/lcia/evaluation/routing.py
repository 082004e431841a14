"""Routing accuracy: how often a test instance is answered by the adapter that trained on its task."""

from __future__ import annotations


def routing_accuracy(records: list[dict], task_adapters: dict[str, str], stages: list[list[str]]) -> dict:
    """From predictions.jsonl records (row, task, adapter): the share routed to their task's adapter.

    ``rows[r-1]`` covers row r's instances of the tasks trained in stages 1..r (a task not yet trained
    has no adapter of its own); ``final`` and ``per_task`` are those of the last row.
    """
    last = max((r["row"] for r in records), default=0)
    rows, per_task = [], {}
    for row in range(1, last + 1):
        trained = {task for stage in stages[:row] for task in stage}
        hits = [
            r["adapter"] == task_adapters.get(r["task"]) for r in records if r["row"] == row and r["task"] in trained
        ]
        rows.append(round(sum(hits) / len(hits), 4) if hits else None)
    for task in task_adapters:
        hits = [r["adapter"] == task_adapters[task] for r in records if r["row"] == last and r["task"] == task]
        if hits:
            per_task[task] = round(sum(hits) / len(hits), 4)
    return {"final": rows[-1] if rows else None, "per_task": per_task, "rows": rows}
