"""What a scorer is, and the registry that finds one by name.

A scorer scores a task's whole test set at once, ``scorer(predictions, examples) -> Scored``: one score per
example in [0, 1], whose mean is the task's cell of the results matrix (so the paired bootstrap over test
examples stays valid), and any task-level metrics its benchmark also reports (BLEU-4, METEOR, ...). Most
scorers compare one prediction with one example's references; :func:`per_example` registers such a function.
A scorer that needs more of the example than its references reads ``example.meta`` (a box's image size, a
simplification's source sentence), which the benchmark's reader fills.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lcia.data.schema import Example


@dataclass(frozen=True)
class Scored:
    """A task's test set scored: ``per_example[i]`` is example i's score; ``metrics`` the task-level ones."""

    per_example: list[float]
    metrics: dict[str, float] = field(default_factory=dict)


TaskScorer = Callable[[Sequence[str], Sequence[Example]], Scored]

SCORERS: dict[str, TaskScorer] = {}
"""Scorer name (as a task or a benchmark names it) -> scorer."""


def register_scorer(name: str) -> Callable[[TaskScorer], TaskScorer]:
    """Register a whole-test-set scorer under ``name``."""

    def add(scorer: TaskScorer) -> TaskScorer:
        if name in SCORERS:
            raise ValueError(f"scorer {name!r} is registered twice")
        SCORERS[name] = scorer
        return scorer

    return add


def per_example(name: str) -> Callable[[Callable[[str, Sequence[str]], float]], Callable[[str, Sequence[str]], float]]:
    """Register ``score(prediction, references) -> float`` under ``name``, scored example by example; the
    function itself is returned unchanged."""

    def add(score: Callable[[str, Sequence[str]], float]) -> Callable[[str, Sequence[str]], float]:
        def whole(predictions: Sequence[str], examples: Sequence[Example]) -> Scored:
            return Scored([score(p, ex.references) for p, ex in zip(predictions, examples, strict=True)])

        register_scorer(name)(whole)
        return score

    return add


def get_scorer(name: str) -> TaskScorer:
    """The scorer called ``name``; ValueError naming the known scorers if there is none."""
    try:
        return SCORERS[name]
    except KeyError:
        raise ValueError(f"unknown scorer {name!r}; known scorers: {', '.join(sorted(SCORERS))}") from None
