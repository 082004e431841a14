"""Evaluation cells: every task's test set scored with the current model (one row of the grid)."""

from __future__ import annotations

from dataclasses import dataclass

from lcia.data.tasks import Task
from lcia.evaluation.generate import generate_answers
from lcia.evaluation.scorers import get_scorer


@dataclass
class Cell:
    """Task ``task`` scored after ``row`` training stages: one prediction and score per test example."""

    row: int
    task: str
    predictions: list[str]
    scores: list[float]
    adapters: list[str | None]

    @property
    def score(self) -> float:
        return sum(self.scores) / len(self.scores)


def evaluate_task(
    model, tokenizer, task: Task, row: int, *, route=None, batch_size: int, max_length: int, progress: bool = True
) -> Cell:
    adapters = [route(ex) if route else None for ex in task.test]  # routed once, recorded and used
    predictions = generate_answers(
        model,
        tokenizer,
        task.test,
        max_new_tokens=task.max_new_tokens,
        batch_size=batch_size,
        max_length=max_length,
        adapters=adapters,
        desc=f"eval row {row} {task.name}",
        progress=progress,
    )
    scorer = get_scorer(task.scorer)
    scores = [scorer(p, ex.references) for p, ex in zip(predictions, task.test)]
    return Cell(row, task.name, predictions, scores, adapters)
