"""Evaluation cells: every task's test set scored with the current model (one row of the grid)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lcia.core import distributed
from lcia.data.tasks import Task
from lcia.evaluation.generate import generate_answers
from lcia.scorers import get_scorer


@dataclass
class Cell:
    """Task ``task`` scored after ``row`` training stages: one prediction and score per test example."""

    row: int
    task: str
    predictions: list[str]
    scores: list[float]
    adapters: list[str | None]
    metrics: dict[str, float] = field(default_factory=dict)  # the scorer's task-level metrics (BLEU-4, ...)

    @property
    def score(self) -> float:
        return sum(self.scores) / len(self.scores)


def evaluate_task(
    model,
    tokenizer,
    task: Task,
    row: int,
    *,
    route=None,
    batch_size: int,
    max_length: int,
    progress: bool = True,
    images=None,
    precision: str = "fp32",
) -> Cell:
    """Answer and score ``task``'s test set in ``precision``. With several processes each rank answers its
    share of the examples (every world-size-th) and every rank scores the whole test set (a scorer may weigh
    each example against the others, as CIDEr's document frequencies do) and returns the whole cell."""
    test = distributed.my_share(task.test)
    adapters = route(test) if route else [None] * len(test)  # routed once, recorded and used
    predictions = generate_answers(
        model,
        tokenizer,
        test,
        max_new_tokens=task.max_new_tokens,
        batch_size=batch_size,
        max_length=max_length,
        adapters=adapters,
        desc=f"eval row {row} {task.name}",
        progress=progress,
        images=images,
        precision=precision,
    )
    if distributed.world_size() > 1:
        answers = distributed.gather_in_order(list(zip(predictions, adapters)), len(task.test))
        predictions, adapters = (list(column) for column in zip(*answers))
    scored = get_scorer(task.scorer)(predictions, task.test)
    return Cell(row, task.name, predictions, scored.per_example, adapters, scored.metrics)
